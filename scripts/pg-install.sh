#!/usr/bin/env bash
# Installs Debian's PostgreSQL server when this machine has no server binaries, and the
# unprivileged "postgres" user the test harness runs servers as when tests run as root.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && [ -z "${SKIFF_PG_BINDIRS:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "No PostgreSQL server found: install Debian's postgresql package or set SKIFF_PG_BINDIRS." >&2
    exit 1
  fi
  echo "Installing Debian's PostgreSQL server (postgresql)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  # The package starts a cluster; the tests start their own servers.
  if command -v pg_ctlcluster >/dev/null; then
    for c in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do pg_ctlcluster ${c%/*} ${c#*/} stop || true; done
  fi
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
