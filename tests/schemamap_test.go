package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestSchemaMap: subscribe --schema-map legacy=app sends every table of provider schema
// legacy to target schema app, copy (under writes) and worker alike, with the sequence a table
// draws from; compare says equal. The map is recorded with the subscription: tables added to
// the queue later and subscribed by a second subscribe without the flag land in app too,
// unless their --table names a destination of their own.
func TestSchemaMap(t *testing.T) {
	t.Parallel()
	forEachPair(t, testSchemaMap)
}

func testSchemaMap(t *testing.T, provVersion, tgtVersion string) {
	n := copyRows(t) / 20
	p := newPair(t, provVersion, tgtVersion, `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE SCHEMA legacy`)
	exec1(t, prov, `CREATE TABLE legacy.orders (id serial PRIMARY KEY, v text, n int)`)
	exec1(t, prov, `CREATE TABLE legacy.items (id int PRIMARY KEY, order_id int, qty int)`)
	exec1(t, prov, `CREATE TABLE legacy.notes (id int PRIMARY KEY, note text)`)
	exec1(t, prov, `CREATE TABLE legacy.other (id int PRIMARY KEY, note text)`)
	exec1(t, prov, fmt.Sprintf(`INSERT INTO legacy.orders (v, n) SELECT 'v' || g, g FROM generate_series(1, %d) g`, n))
	exec1(t, prov, fmt.Sprintf(`INSERT INTO legacy.items SELECT g, g, g %% 7 FROM generate_series(1, %d) g`, n))
	exec1(t, prov, `INSERT INTO legacy.notes SELECT g, 'n' || g FROM generate_series(1, 500) g`)
	exec1(t, prov, `INSERT INTO legacy.other SELECT g, 'o' || g FROM generate_series(1, 500) g`)
	exec1(t, tgt, `CREATE SCHEMA app`)
	exec1(t, tgt, `CREATE SCHEMA archive`)
	exec1(t, tgt, `CREATE TABLE app.orders (id serial PRIMARY KEY, v text, n int)`)
	exec1(t, tgt, `CREATE TABLE app.items (id int PRIMARY KEY, order_id int, qty int)`)
	exec1(t, tgt, `CREATE TABLE app.notes (id int PRIMARY KEY, note text)`)
	exec1(t, tgt, `CREATE TABLE archive.other (id int PRIMARY KEY, note text)`)
	p.capture(t, "qm", "legacy.orders", "legacy.items")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qm")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	for i := range 2 {
		stmtWriter(t, wctx, &wwg, p.prov, uint64(i), &txs, func(rng *rand.Rand) (string, []any) {
			switch r := rng.IntN(10); {
			case r < 3:
				return `UPDATE legacy.orders SET v = $2, n = n + 1 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			case r < 5:
				return `UPDATE legacy.items SET qty = qty + 1 WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 6:
				return `DELETE FROM legacy.items WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 8:
				return `INSERT INTO legacy.orders (v, n) VALUES ($1, 0)`, []any{randText(rng)}
			case r < 9:
				return `UPDATE legacy.notes SET note = $2 WHERE id = $1`, []any{1 + rng.IntN(500), randText(rng)}
			default:
				return `UPDATE legacy.other SET note = $2 WHERE id = $1`, []any{1 + rng.IntN(500), randText(rng)}
			}
		})
	}
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qm", "--consumer", "c1",
		"--schema-map", "legacy=app")
	require.NoError(t, err, out)
	require.Contains(t, out, `"legacy"."orders" -> "app"."orders"`)
	require.Contains(t, out, `"legacy"."items" -> "app"."items"`)
	p.runWorker(t, ctx, &wg, "qm")
	p.inSync(t, 2*time.Minute, "qm")

	// Tables added later follow the recorded map, or their own --table DEST.
	p.capture(t, "qm", "legacy.notes", "legacy.other")
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qm", "--consumer", "c1",
		"--table", "legacy.notes", "--table", "legacy.other:archive.other")
	require.NoError(t, err, out)
	require.Contains(t, out, `"legacy"."notes" -> "app"."notes"`)
	require.Contains(t, out, `"legacy"."other" -> "archive"."other"`)
	p.inSync(t, 2*time.Minute, "qm")

	wstop()
	wwg.Wait()
	require.Positive(t, txs.Load())
	p.caughtUp(t, 2*time.Minute, "qm")
	var provLast int64
	require.NoError(t, prov.QueryRow(ctx, `SELECT last_value FROM legacy.orders_id_seq`).Scan(&provLast))
	pgtest.Eventually(t, time.Minute, "app.orders_id_seq follows legacy.orders_id_seq", func() bool {
		var last int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT last_value FROM app.orders_id_seq`).Scan(&last))
		return last >= provLast
	})

	code, out := compareExit(t, p, "qm")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `"legacy"."orders" → "app"."orders"`)
	for _, tbl := range []string{"orders", "items", "notes"} {
		requireSameRows(t, prov, tgt, `SELECT * FROM legacy.`+tbl, `SELECT * FROM app.`+tbl)
	}
	requireSameRows(t, prov, tgt, `SELECT * FROM legacy.other`, `SELECT * FROM archive.other`)
	var stray int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'legacy'`).Scan(&stray))
	require.Zero(t, stray, "nothing lands in schema legacy on the target")
	cancel()
	wg.Wait()
}
