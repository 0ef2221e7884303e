#!/usr/bin/env bash
# make demo: not complete yet; it shows what exists.
set -euo pipefail
bin=${1:-bin/skiff}
"$bin" --help
