#!/usr/bin/env bash
# Install the peers `make bench` measures skiff against, from Debian's packages:
# Londiste3 + PgQ (python3-londiste, postgresql-15-pgq3, postgresql-15-londiste-sql, pgqd),
# pglogical and wal2json for PostgreSQL 15. Does nothing when they are all installed.
# Needs root (apt-get); otherwise it prints the command to run and exits 0 so that the
# benchmark still runs and skips the peers it cannot find.
set -euo pipefail

pkgs=(python3-londiste postgresql-15-pgq3 postgresql-15-londiste-sql pgqd
      postgresql-15-pglogical postgresql-15-wal2json)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "bench-peers: missing ${missing[*]}; install them as root with:" >&2
	echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
	echo "bench-peers: the benchmark skips the peers it cannot run." >&2
	exit 0
fi

echo "bench-peers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
