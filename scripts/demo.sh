#!/usr/bin/env bash
# make demo: start a throwaway provider and target, replicate a live workload with skiff,
# show status and compare, then clean everything up.
# Usage: scripts/demo.sh [path/to/skiff]      (DEMO_SECONDS=20 sets the workload's length)
set -euo pipefail
skiff=$(realpath "${1:-bin/skiff}")
seconds=${DEMO_SECONDS:-15}

bindir=${SKIFF_DEMO_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$bindir/postgres" ] || { echo "demo: no PostgreSQL server binaries found (make pg)" >&2; exit 1; }

work=$(mktemp -d /tmp/skiff-demo-XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$work"
  as_pg=(runuser -u postgres --)
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in provider target; do
    [ -f "$work/$d/postmaster.pid" ] && "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/$d" -m fast stop >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting a throwaway provider and target ($("$bindir/postgres" --version))"
declare -A port
for d in provider target; do
  port[$d]=$(free_port)
  "${as_pg[@]}" "$bindir/initdb" -D "$work/$d" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/$d" -l "$work/$d.log" -w -o "-p ${port[$d]} -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c fsync=off" start >/dev/null
  echo "$d: postgres://postgres@127.0.0.1:${port[$d]}/demo"
  "$bindir/psql" -qX -h 127.0.0.1 -p "${port[$d]}" -U postgres -c "CREATE DATABASE demo" postgres
done
P="postgres://postgres@127.0.0.1:${port[provider]}/demo?sslmode=disable"
T="postgres://postgres@127.0.0.1:${port[target]}/demo?sslmode=disable"
psqlp() { "$bindir/psql" -qX -v ON_ERROR_STOP=1 "$P" "$@"; }

step "An application schema on the provider, with data"
psqlp <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, created timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, amount numeric(12,2), note text, placed timestamptz DEFAULT now());
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 1000) g;
INSERT INTO orders (customer_id, amount, note) SELECT 1 + g % 1000, g * 1.25, 'initial order ' || g FROM generate_series(1, 20000) g;
SQL

step "skiff init provider / init target"
"$skiff" init provider --db "$P"
"$skiff" init target --db "$T"

step "skiff table add: capture both tables (their sequences come with them) into queue 'main'"
"$skiff" table add --db "$P" --queue main public.customers public.orders

step "skiff subscribe --create-tables: create the tables on the empty target, register it, copy the tables"
"$skiff" subscribe --provider "$P" --target "$T" --queue main --create-tables

step "skiff ticker and skiff worker in the background"
"$skiff" ticker --db "$P" --log-format text --log-level warn & pids+=($!)
"$skiff" worker --provider "$P" --target "$T" --queue main --log-format text --log-level warn & pids+=($!)

step "A live workload for ${seconds}s: inserts, updates (some change the key), deletes"
cat > "$work/workload.sql" <<'SQL'
\set c random(1, 1000)
\set o random(1, 20000)
BEGIN;
INSERT INTO orders (customer_id, amount, note) VALUES (:c, random() * 100, 'live order');
UPDATE customers SET email = 'changed-' || :c || '@example.com' WHERE id = :c;
UPDATE orders SET amount = amount + 1 WHERE id = :o;
DELETE FROM orders WHERE id = :o + 1;
END;
SQL
"$bindir/pgbench" -n -c 4 -T "$seconds" -f "$work/workload.sql" "$P" 2>&1 | grep -E "number of transactions actually processed|tps|error" || true

step "skiff status"
"$skiff" status --provider "$P" --target "$T" || true # exits 1 while it lists a problem

step "Waiting for the worker to catch up"
for i in $(seq 1 120); do
  if "$skiff" compare --provider "$P" --target "$T" --queue main --log-level error >/dev/null 2>&1; then break; fi
  sleep 1
done

step "skiff compare (exit 0 = equal)"
"$skiff" compare --provider "$P" --target "$T" --queue main
echo "compare: provider and target are equal"

step "skiff status after catch-up"
"$skiff" status --provider "$P" --target "$T" || true # exits 1 while it lists a problem
