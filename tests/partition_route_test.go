package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// partitionTargetDDL makes the target tables the partition handler routes into: declarative
// partitioned tables on 11+ (one month's partition made beforehand, the others on demand), and
// plain tables before (each child made on demand LIKE its table).
func partitionTargetDDL(partitioned bool) string {
	if !partitioned {
		return `CREATE SCHEMA app;
CREATE TABLE app.orders (id int, created timestamptz, v text, PRIMARY KEY (id, created));
CREATE TABLE app.metrics (id int PRIMARY KEY, v int);
CREATE TABLE app.accounts (id int PRIMARY KEY, region text, v text)`
	}
	return `CREATE SCHEMA app;
CREATE TABLE app.orders (id int, created timestamptz, v text, PRIMARY KEY (id, created)) PARTITION BY RANGE (created);
CREATE TABLE app.orders_2024_01 PARTITION OF app.orders FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
CREATE TABLE app.metrics (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
CREATE TABLE app.accounts (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`
}

// TestPartitionRouting: the partition handler routes one provider table's rows to children
// by month of a timestamptz (a bucket), one by ranges of its key, one by lists of a column
// with a default, all in the schema --schema-map gives. The initial copy runs under writes
// and creates the children it needs; the worker creates those of months written later; an
// update that changes a row's month (part of its key) moves it from one child to the other.
// The children hold each row where it belongs, and compare (which runs the rows through the
// handler) finds the target equal.
func TestPartitionRouting(t *testing.T) {
	t.Parallel()
	forEachPair(t, testPartitionRouting)
}

func testPartitionRouting(t *testing.T, provVersion, tgtVersion string) {
	n := copyRows(t) / 50
	p := newPair(t, provVersion, tgtVersion, `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	partitioned := pg.ServerVersion(tgt) >= 110000
	exec1(t, prov, `CREATE TABLE orders (id int, created timestamptz, v text, PRIMARY KEY (id, created))`)
	exec1(t, prov, `CREATE TABLE metrics (id int PRIMARY KEY, v int)`)
	exec1(t, prov, `CREATE TABLE accounts (id int PRIMARY KEY, region text, v text)`)
	// Months 1 to 6 before the copy; the writers add rows of months 1 to 12.
	exec1(t, prov, fmt.Sprintf(`INSERT INTO orders SELECT g, timestamptz '2024-01-01 00:00:00+00' + (g %% 180) * interval '1 day' + interval '7 hours', 'v' || g
		FROM generate_series(1, %d) g`, n))
	exec1(t, prov, fmt.Sprintf(`INSERT INTO metrics SELECT g, g FROM generate_series(1, %d) g`, n))
	exec1(t, prov, fmt.Sprintf(`INSERT INTO accounts SELECT g, (ARRAY['eu','uk','us','br'])[1 + g %% 4], 'a' || g FROM generate_series(1, %d) g`, n))
	for _, stmt := range strings.Split(partitionTargetDDL(partitioned), ";\n") {
		exec1(t, tgt, stmt)
	}
	p.capture(t, "qp", "public.orders", "public.metrics", "public.accounts")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qp")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs, moves atomic.Int64
	var next atomic.Int64
	next.Store(int64(n))
	day := func(rng *rand.Rand) string {
		return time.Date(2024, 1, 1+rng.IntN(366), rng.IntN(24), 0, 0, 0, time.UTC).Format("2006-01-02 15:04:05+00")
	}
	for i := range 2 {
		stmtWriter(t, wctx, &wwg, p.prov, uint64(i), &txs, func(rng *rand.Rand) (string, []any) {
			switch r := rng.IntN(12); {
			case r < 2:
				return `INSERT INTO orders VALUES ($1, $2, 'new')`, []any{next.Add(1), day(rng)}
			case r < 4:
				return `UPDATE orders SET v = $2 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			case r < 5:
				// A new month: the row moves to another child.
				moves.Add(1)
				return `UPDATE orders SET created = created + interval '40 days' WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 6:
				return `DELETE FROM orders WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 8:
				return `INSERT INTO metrics VALUES ($1, 0)`, []any{n + 1 + rng.IntN(2_000_000)}
			case r < 9:
				return `UPDATE metrics SET v = v + 1 WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 10:
				return `INSERT INTO accounts VALUES ($1, $2, 'new')`, []any{next.Add(1), []string{"eu", "uk", "us", "br", "jp"}[rng.IntN(5)]}
			case r < 11:
				return `UPDATE accounts SET v = $2 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			default:
				return `DELETE FROM accounts WHERE id = $1`, []any{1 + rng.IntN(n)}
			}
		})
	}
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qp", "--consumer", "c1",
		"--schema-map", "public=app",
		"--handler", "orders=partition", "--handler-config", `orders={"column": "created", "by": "month", "create": true}`,
		"--handler", "metrics=partition", "--handler-config",
		`metrics={"column": "id", "ranges": [{"to": 1000, "table": "metrics_low"}, {"from": 1000, "table": "metrics_high"}], "create": true}`,
		"--handler", "accounts=partition", "--handler-config",
		`accounts={"column": "region", "lists": [{"in": ["eu", "uk"], "table": "accounts_eu"}, {"in": ["us"], "table": "accounts_us"}], "default": "accounts_other", "create": true}`)
	require.NoError(t, err, out)
	p.runWorker(t, ctx, &wg, "qp")
	p.inSync(t, 2*time.Minute, "qp")
	// More writes after the copy: months the copy did not see are made by the worker.
	pgtest.Eventually(t, time.Minute, "writes after the copy", func() bool { return moves.Load() > 20 })
	wstop()
	wwg.Wait()
	require.Positive(t, txs.Load())
	p.caughtUp(t, 2*time.Minute, "qp")

	code, out := compareExit(t, p, "qp")
	require.Equal(t, 0, code, out)

	// Every row in its child, and nowhere else.
	children := func(prefix string) []string {
		rows, err := tgt.Query(ctx, `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'app' AND c.relkind = 'r' AND c.relname LIKE $1 ORDER BY 1`, prefix+"%")
		require.NoError(t, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return names
	}
	months := children("orders_20")
	require.GreaterOrEqual(t, len(months), 12, "a child per month of 2024, and of 2025 where a row moved 40 days on: %v", months)
	union := func(names []string, cols string) string {
		parts := make([]string, len(names))
		for i, c := range names {
			parts[i] = "SELECT " + cols + " FROM app." + c
		}
		return strings.Join(parts, " UNION ALL ")
	}
	requireSameRows(t, prov, tgt, `SELECT id, created, v FROM orders`, union(months, "id, created, v"))
	for _, m := range months {
		var stray int
		require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM app.`+m+` WHERE to_char(created AT TIME ZONE 'UTC', '"orders_"YYYY"_"MM') <> $1`, m).Scan(&stray))
		require.Zero(t, stray, "rows of another month in %s", m)
	}
	requireSameRows(t, prov, tgt, `SELECT * FROM metrics WHERE id < 1000`, `SELECT * FROM app.metrics_low`)
	requireSameRows(t, prov, tgt, `SELECT * FROM metrics WHERE id >= 1000`, `SELECT * FROM app.metrics_high`)
	requireSameRows(t, prov, tgt, `SELECT * FROM accounts WHERE region IN ('eu', 'uk')`, `SELECT * FROM app.accounts_eu`)
	requireSameRows(t, prov, tgt, `SELECT * FROM accounts WHERE region = 'us'`, `SELECT * FROM app.accounts_us`)
	requireSameRows(t, prov, tgt, `SELECT * FROM accounts WHERE region NOT IN ('eu', 'uk', 'us')`, `SELECT * FROM app.accounts_other`)
	if partitioned {
		var parts int
		require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_inherits WHERE inhparent = 'app.orders'::regclass`).Scan(&parts))
		require.Equal(t, len(months), parts, "children made on demand are partitions")
	} else {
		var n int
		require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM app.orders`).Scan(&n))
		require.Zero(t, n, "nothing in the table the children are made like")
	}

	// A row on the target in a child where it does not belong makes compare say DIFFERENT.
	exec1(t, tgt, `INSERT INTO app.metrics_high VALUES (3000000, 1)`)
	code, out = compareExit(t, p, "qp")
	require.Equal(t, 1, code, out)
	cancel()
	wg.Wait()
}

// TestPartitionMissingChild: without create, a row whose child the target lacks fails the
// copy and the worker's batch with an error naming the row's key and the child; once the
// child is made, the worker goes on and the target is equal.
func TestPartitionMissingChild(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE TABLE orders (id int PRIMARY KEY, created date, v text)`)
	exec1(t, prov, `INSERT INTO orders VALUES (1, '2024-03-05', 'a')`)
	exec1(t, tgt, `CREATE TABLE orders (id int PRIMARY KEY, created date, v text)`)
	exec1(t, tgt, `CREATE TABLE orders_2024 (LIKE orders)`)
	p.capture(t, "qx", "public.orders")
	cfg := `orders={"column": "created", "by": "year"}`
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qx", "--consumer", "c1",
		"--handler", "orders=partition", "--handler-config", cfg)
	require.NoError(t, err, out)

	exec1(t, prov, `INSERT INTO orders VALUES (2, '2025-06-01', 'b')`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qx")
	p.runWorker(t, ctx, &wg, "qx")
	var last string
	pgtest.Eventually(t, time.Minute, "the worker's batch fails on the missing child", func() bool {
		var msg *string
		require.NoError(t, tgt.QueryRow(ctx, `SELECT last_error FROM skiff.subscription`).Scan(&msg))
		if msg != nil {
			last = *msg
		}
		return strings.Contains(last, "orders_2025")
	})
	require.Contains(t, last, `row (id=2)`)
	require.Contains(t, last, `"public"."orders_2025" does not exist`)
	exec1(t, tgt, `CREATE TABLE orders_2025 (LIKE orders)`)
	p.caughtUp(t, time.Minute, "qx")
	code, out := compareExit(t, p, "qx")
	require.Equal(t, 0, code, out)
	requireSameRows(t, prov, tgt, `SELECT * FROM orders`, `SELECT * FROM orders_2024 UNION ALL SELECT * FROM orders_2025`)

	// The copy fails alike (resync), naming the row and the child.
	exec1(t, prov, `INSERT INTO orders VALUES (3, '2026-01-01', 'c')`)
	_, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qx", "public.orders")
	require.NoError(t, err)
	pgtest.Eventually(t, time.Minute, "the copy fails on the missing child", func() bool {
		var msg *string
		require.NoError(t, tgt.QueryRow(ctx, `SELECT copy_error FROM skiff.table_state`).Scan(&msg))
		if msg != nil {
			last = *msg
		}
		return strings.Contains(last, "orders_2026")
	})
	require.Contains(t, last, `row (id=3)`)
	cancel()
	wg.Wait()
}
