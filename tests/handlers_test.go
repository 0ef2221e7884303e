package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// stmtWriter runs transactions of one to three statements from next on the provider until
// ctx ends.
func stmtWriter(t testing.TB, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, txs *atomic.Int64,
	next func(rng *rand.Rand) (string, []any)) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 11))
		for ctx.Err() == nil {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				for range 1 + rng.IntN(3) {
					sql, args := next(rng)
					if _, err := tx.Exec(ctx, sql, args...); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				var pgErr *pgconn.PgError
				if ctx.Err() != nil || errors.Is(err, context.Canceled) {
					return
				}
				if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "23505") {
					continue
				}
				t.Errorf("writer: %v", err)
				return
			}
			txs.Add(1)
		}
	}()
}

// dumpQuery returns the rows of a query as text, in order.
func dumpQuery(t testing.TB, c *pgx.Conn, sql string) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT r::text FROM (`+sql+`) r ORDER BY 1`)
	require.NoError(t, err, sql)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err, sql)
	return out
}

// requireSameRows asserts that two queries return the same rows.
func requireSameRows(t testing.TB, prov, tgt *pgx.Conn, provSQL, tgtSQL string) {
	t.Helper()
	a, b := dumpQuery(t, prov, provSQL), dumpQuery(t, tgt, tgtSQL)
	require.Equal(t, len(a), len(b), "rows: provider %q, target %q", provSQL, tgtSQL)
	for i := range a {
		require.Equal(t, a[i], b[i], "row %d", i)
	}
	t.Logf("%d rows compared: %s", len(a), tgtSQL)
}

// compareExit runs skiff compare and returns its exit code and output.
func compareExit(t testing.TB, p *pair, q string, extra ...string) (int, string) {
	t.Helper()
	out, err := skiff(t, append([]string{"compare", "--provider", p.prov, "--target", p.tgt, "--queue", q}, extra...)...)
	if err == nil {
		return 0, out
	}
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, out)
	return ee.ExitCode(), out
}

// TestCopyThroughColumnsHandler is issue 11's reproduction: a table renamed into another
// schema, with one column excluded and one renamed by the columns handler. The initial copy
// (under concurrent writes) must fill the renamed column, the worker catches up, skiff compare
// says equal; a renamed column's wrong value on the target makes compare say DIFFERENT.
func TestCopyThroughColumnsHandler(t *testing.T) {
	t.Parallel()
	forEachPair(t, testCopyThroughColumnsHandler)
}

func testCopyThroughColumnsHandler(t *testing.T, provVersion, tgtVersion string) {
	n := copyRows(t) / 10
	p := newPair(t, provVersion, tgtVersion, `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE TABLE audit (id int PRIMARY KEY, secret text, v text, n int)`)
	exec1(t, prov, fmt.Sprintf(`INSERT INTO audit SELECT g, 'pw' || g, 'v' || g, g FROM generate_series(1, %d) g`, n))
	exec1(t, tgt, `CREATE SCHEMA archive; CREATE TABLE archive.audit (id int PRIMARY KEY, value text, n int)`)
	p.capture(t, "qh", "public.audit")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qh")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	var next atomic.Int64
	next.Store(int64(n) + 1)
	for i := range 2 {
		stmtWriter(t, wctx, &wwg, p.prov, uint64(i), &txs, func(rng *rand.Rand) (string, []any) {
			switch r := rng.IntN(10); {
			case r < 5:
				return `UPDATE audit SET v = $2, secret = 'new', n = n + 1 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			case r < 7:
				return `DELETE FROM audit WHERE id = $1`, []any{1 + rng.IntN(n)}
			default:
				return `INSERT INTO audit VALUES ($1, 'pw', $2, 0)`, []any{next.Add(1), randText(rng)}
			}
		})
	}
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qh", "--consumer", "c1",
		"--table", "public.audit:archive.audit", "--handler", "public.audit=columns",
		"--handler-config", `public.audit={"exclude":["secret"],"rename":{"v":"value"}}`)
	require.NoError(t, err, out)
	var nulls int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM archive.audit WHERE value IS NULL`).Scan(&nulls))
	require.Zero(t, nulls, "the copy fills the renamed column")

	w := p.startWorkerProc(t, "qh")
	defer func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", w.out.String())
		}
	}()
	p.inSync(t, 2*time.Minute, "qh")
	wstop()
	wwg.Wait()
	p.caughtUp(t, 2*time.Minute, "qh")
	require.Positive(t, txs.Load())

	code, out := compareExit(t, p, "qh")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `"public"."audit" → "archive"."audit"`)
	requireSameRows(t, prov, tgt, `SELECT id, v, n FROM audit`, `SELECT id, value, n FROM archive.audit`)

	// A renamed column's value wrong on the target.
	exec1(t, tgt, `UPDATE archive.audit SET value = 'wrong' WHERE id = (SELECT min(id) FROM archive.audit)`)
	code, out = compareExit(t, p, "qh", "--rows")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "DIFFERENT")
	require.Contains(t, out, ": different")
	cancel()
	wg.Wait()
}

// TestCopyThroughFilterHandler is issue 11's second reproduction: a consumer-side row filter
// (filter handler, region in a list). The initial copy under writes holds only the rows the
// filter keeps, the worker catches up (updates move rows into and out of the filter, some
// changing their key), skiff compare says equal; a row the filter excludes
// present on the target makes it say DIFFERENT; skiff table resync copies the table again
// through the filter, and compare says equal again.
func TestCopyThroughFilterHandler(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		testCopyThroughFilter(t, provVersion, tgtVersion, false)
	})
}

// TestCopyThroughWhereFilter is TestCopyThroughFilterHandler with the filter on the provider
// (table add --where): the capture trigger turns an update that moves a row into the filter
// into an insert, one that moves it out into a delete (with a key change too).
func TestCopyThroughWhereFilter(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		testCopyThroughFilter(t, provVersion, tgtVersion, true)
	})
}

// testCopyThroughFilter replicates customer rows of region 'eu' only: filtered on the
// provider by --where (where) or on the consumer by the filter handler.
func testCopyThroughFilter(t *testing.T, provVersion, tgtVersion string, where bool) {
	n := copyRows(t) / 10
	ddl := `CREATE TABLE customer (id int PRIMARY KEY, region text, v text)`
	p := newPair(t, provVersion, tgtVersion, ddl)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, fmt.Sprintf(`INSERT INTO customer SELECT g, (ARRAY['eu', 'us', NULL, 'EU', 'eu '])[1 + g %% 5], 'v' || g FROM generate_series(1, %d) g`, n))
	spec := queue.TableSpec{Name: "public.customer"}
	var handler []string
	if where {
		spec.Where = `region = 'eu'`
	} else {
		handler = []string{"--handler", "public.customer=filter", "--handler-config", `public.customer={"column":"region","in":["eu"]}`}
	}
	_, err := queue.AddTable(context.Background(), prov, "qf", spec)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qf")
	var txs atomic.Int64
	var next atomic.Int64
	next.Store(int64(n) + 1)
	regions := []any{"eu", "us", nil, "EU"}
	// writers runs two writers until the returned function is called. Their updates move rows
	// across the filter (into it, out of it), with and without a key change: a consumer-side
	// filter sees only an update's new row, so it cannot know whether the target holds it.
	writers := func() func() {
		wctx, wstop := context.WithCancel(ctx)
		var wwg sync.WaitGroup
		for i := range 2 {
			stmtWriter(t, wctx, &wwg, p.prov, uint64(i)+uint64(txs.Load()), &txs, func(rng *rand.Rand) (string, []any) {
				switch r := rng.IntN(14); {
				case r < 3:
					return `UPDATE customer SET v = $2 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
				case r < 5:
					return `UPDATE customer SET region = $2 WHERE id = $1`, []any{1 + rng.IntN(n), regions[rng.IntN(len(regions))]}
				case r < 6:
					return `UPDATE customer SET id = $2, region = $3 WHERE id = $1`, []any{1 + rng.IntN(n), next.Add(1), regions[rng.IntN(len(regions))]}
				case r < 7:
					// The region toggled: into the filter or out of it.
					return `UPDATE customer SET region = CASE WHEN region = 'eu' THEN 'us' ELSE 'eu' END WHERE id = $1`, []any{1 + rng.IntN(n)}
				case r < 9:
					return `DELETE FROM customer WHERE id = $1`, []any{1 + rng.IntN(n)}
				default:
					return `INSERT INTO customer VALUES ($1, $2, $3)`, []any{next.Add(1), regions[rng.IntN(len(regions))], randText(rng)}
				}
			})
		}
		return func() { wstop(); wwg.Wait() }
	}
	stop := writers()
	defer stop()
	out, err := skiff(t, append([]string{"subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qf", "--consumer", "c1"},
		handler...)...)
	require.NoError(t, err, out)
	var others int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM customer WHERE region IS DISTINCT FROM 'eu'`).Scan(&others))
	require.Zero(t, others, "the copy holds only the rows the filter keeps")

	w := p.startWorkerProc(t, "qf")
	defer func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", w.out.String())
		}
	}()
	p.inSync(t, 2*time.Minute, "qf")
	stop()
	p.caughtUp(t, 2*time.Minute, "qf")
	code, out := compareExit(t, p, "qf")
	require.Equal(t, 0, code, out)
	requireSameRows(t, prov, tgt, `SELECT * FROM customer WHERE region = 'eu'`, `SELECT * FROM customer`)

	// A row the filter excludes, present on the target: DIFFERENT.
	exec1(t, tgt, `INSERT INTO customer VALUES (-1, 'us', 'not replicated')`)
	code, out = compareExit(t, p, "qf", "--rows")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "DIFFERENT")
	require.Contains(t, out, "key (-1): missing on provider")

	// Resync through the handler while writers go on.
	stop = writers()
	defer stop()
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qf", "--consumer", "c1", "public.customer")
	require.NoError(t, err, out)
	pgtest.Eventually(t, 2*time.Minute, "customer copied again", func() bool {
		return tableStates(t, tgt)["customer"] == "in-sync+snap"
	})
	stop()
	p.caughtUp(t, 2*time.Minute, "qf")
	require.Positive(t, txs.Load())
	code, out = compareExit(t, p, "qf")
	require.Equal(t, 0, code, out)
	requireSameRows(t, prov, tgt, `SELECT * FROM customer WHERE region = 'eu'`, `SELECT * FROM customer`)
	cancel()
	wg.Wait()
}

// legacyApp is a custom handler without an SQL form (the README's kind): it sends the rows of
// schema legacy to schema app, drops the rows of customer 'internal' and prefixes the note.
func legacyApp(change.Table, json.RawMessage) (handlers.Handler, error) {
	return handlers.Func(func(ev *change.Event) (bool, error) {
		if ev.Table.Schema == "legacy" {
			ev.Table.Schema = "app"
		}
		if c, ok := ev.Value("customer"); ok && c.Valid && c.Text == "internal" {
			return false, nil
		}
		for i, c := range ev.Columns {
			if c == "note" && ev.Values[i].Valid {
				ev.Values[i] = change.Text("x:" + ev.Values[i].Text)
			}
		}
		return true, nil
	}), nil
}

// cents is a custom handler with an SQL form: it replaces numeric(10,2) column amount by
// bigint amount_cents.
type cents struct{}

var _ handlers.SQLHandler = cents{}

func (cents) Handle(ev *change.Event) (bool, error) {
	i := slices.Index(ev.Columns, "amount")
	if i < 0 {
		return true, nil
	}
	cols := slices.Clone(ev.Columns) // shared by the layout: never modified in place
	cols[i] = "amount_cents"
	ev.Columns = cols
	if v := ev.Values[i]; v.Valid {
		n, err := strconv.ParseInt(strings.Replace(v.Text, ".", "", 1), 10, 64)
		if err != nil {
			return false, fmt.Errorf("amount %q: %w", v.Text, err)
		}
		ev.Values[i] = change.Text(strconv.FormatInt(n, 10))
	}
	return true, nil
}

func (cents) SelectSQL(s *handlers.Select) error {
	for i, c := range s.Columns {
		if c.Name == "amount" {
			expr := "(" + c.Expr + " * 100)::bigint"
			s.Columns[i] = handlers.SelectColumn{Name: "amount_cents", Expr: expr, Text: "(" + expr + ")::text"}
		}
	}
	return nil
}

// TestCustomHandlersCopyAndCompare: custom handlers registered by name on a registry, one
// without an SQL form (rows through Go: another schema, rows dropped, a value changed) and one
// with (a computed column), go through the initial copy (the table manager, under concurrent
// writes), the worker's catch-up and compare, which says equal; a row the handler drops and a
// wrong computed value on the target are DIFFERENT.
func TestCustomHandlersCopyAndCompare(t *testing.T) {
	t.Parallel()
	n := copyRows(t) / 20
	p := newPair(t, "", "", `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE SCHEMA legacy; CREATE TABLE legacy.orders (id int PRIMARY KEY, customer text, amount numeric(10,2), note text);
		CREATE TABLE payments (id int PRIMARY KEY, amount numeric(10,2))`)
	exec1(t, prov, fmt.Sprintf(`INSERT INTO legacy.orders SELECT g, CASE WHEN g %% 4 = 0 THEN 'internal' ELSE 'c' || g %% 50 END, g / 3.0 - 100, CASE WHEN g %% 9 <> 0 THEN 'n' || g END FROM generate_series(1, %[1]d) g;
		INSERT INTO payments SELECT g, CASE WHEN g %% 11 <> 0 THEN g / 7.0 - 50 END FROM generate_series(1, %[1]d) g`, n))
	exec1(t, tgt, `CREATE SCHEMA app; CREATE TABLE app.orders (id int PRIMARY KEY, customer text, amount numeric(10,2), note text);
		CREATE TABLE payments (id int PRIMARY KEY, amount_cents bigint)`)
	p.capture(t, "qx", "legacy.orders", "public.payments")
	reg := handlers.NewRegistry()
	require.NoError(t, reg.Register("legacy_app", legacyApp))
	require.NoError(t, reg.Register("cents", func(change.Table, json.RawMessage) (handlers.Handler, error) { return cents{}, nil }))

	// Subscribe as skiff subscribe does, the tables in state copying, with their handlers.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := queue.RegisterConsumer(ctx, prov, "qx", "c1")
	require.NoError(t, err)
	infos, err := queue.GetConsumerInfo(ctx, prov)
	require.NoError(t, err)
	var tick int64
	for _, in := range infos {
		if in.Queue == "qx" && in.Consumer == "c1" {
			tick = in.LastTick
		}
	}
	orders := change.Table{Schema: "legacy", Name: "orders"}
	payments := change.Table{Schema: "public", Name: "payments"}
	routes := []change.Route{
		{Source: orders, Dest: orders, State: change.StateCopying, Handler: "legacy_app"},
		{Source: payments, Dest: payments, State: change.StateCopying, Handler: "cents"},
	}
	_, err = apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "qx", Consumer: "c1", Provider: "test", Tick: tick}, routes)
	require.NoError(t, err)

	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qx")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	var next atomic.Int64
	next.Store(int64(n) + 1)
	customers := []any{"internal", "c1", "c2", nil}
	for i := range 2 {
		stmtWriter(t, wctx, &wwg, p.prov, uint64(i), &txs, func(rng *rand.Rand) (string, []any) {
			switch r := rng.IntN(10); {
			case r < 3:
				return `UPDATE legacy.orders SET amount = amount + 1, note = $2 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			case r < 4:
				return `DELETE FROM legacy.orders WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 6:
				return `INSERT INTO legacy.orders VALUES ($1, $2, $3, $4)`, []any{next.Add(1), customers[rng.IntN(len(customers))], rng.IntN(100000) - 50000, randText(rng)}
			case r < 8:
				return `UPDATE payments SET amount = $2::numeric / 100 WHERE id = $1`, []any{1 + rng.IntN(n), rng.IntN(100000) - 50000}
			case r < 9:
				return `DELETE FROM payments WHERE id = $1`, []any{1 + rng.IntN(n)}
			default:
				return `INSERT INTO payments VALUES ($1, $2::numeric / 100)`, []any{next.Add(1), rng.IntN(100000)}
			}
		})
	}
	p.runWorkerWith(t, ctx, &wg, "qx", reg)
	pc, err := pg.ParseConfig(p.prov, "handlers-test")
	require.NoError(t, err)
	tc, err := pg.ParseConfig(p.tgt, "handlers-test")
	require.NoError(t, err)
	snaps := connect(t, p.prov)
	mgr := &copier.Manager{
		Sub: copier.Subscription{Queue: "qx", Consumer: "c1"},
		Copy: copier.Config{Provider: pc, Target: tc, Registry: reg,
			Capture: func(ctx context.Context, prov *pgx.Conn, tb copier.Table) (copier.Captured, error) {
				tables, err := queue.Tables(ctx, prov, "qx")
				for _, ct := range tables {
					if ct.Table == tb.Source {
						return copier.Captured{Where: ct.Where, Key: ct.Key}, err
					}
				}
				return copier.Captured{}, err
			},
			CopyPoint: trigger.CopyPoint},
		Passed: func(ctx context.Context, point string, applied change.Position) (bool, error) {
			return trigger.Passed(ctx, snaps, "qx", point, applied)
		},
		Interval: 200 * time.Millisecond,
	}
	require.NoError(t, mgr.Start(ctx))
	defer mgr.Stop()
	p.inSync(t, 2*time.Minute, "qx")
	wstop()
	wwg.Wait()
	p.caughtUp(t, 2*time.Minute, "qx")
	require.Positive(t, txs.Load())

	compareAll := func(rows bool) []compare.Result {
		pairs := make([]compare.Pair, len(routes))
		for i, r := range routes {
			h, err := reg.ForRoute(r)
			require.NoError(t, err)
			pairs[i] = compare.Pair{Source: r.Source, Dest: r.Dest, Handler: h}
		}
		res, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: pairs, Rows: rows})
		require.NoError(t, err)
		for _, r := range res {
			require.NoError(t, r.Err, r.Pair.String())
		}
		return res
	}
	res := compareAll(false)
	for _, r := range res {
		require.True(t, r.Equal, "%+v", r)
	}
	require.Equal(t, change.Table{Schema: "app", Name: "orders"}, res[0].Pair.Dest)
	requireSameRows(t, prov, tgt, `SELECT id, customer, amount, 'x:' || note FROM legacy.orders WHERE customer IS DISTINCT FROM 'internal'`,
		`SELECT * FROM app.orders`)
	requireSameRows(t, prov, tgt, `SELECT id, (amount * 100)::bigint FROM payments`, `SELECT * FROM payments`)

	// A row the handler drops, and a wrong computed value.
	exec1(t, tgt, `INSERT INTO app.orders VALUES (-1, 'internal', 1, 'x:n')`)
	exec1(t, tgt, `UPDATE payments SET amount_cents = coalesce(amount_cents, 0) + 1 WHERE id = (SELECT min(id) FROM payments)`)
	res = compareAll(true)
	for _, r := range res {
		require.False(t, r.Equal, "%+v", r)
	}
	require.Equal(t, []compare.RowDiff{{Key: "(-1)", Kind: "missing on provider"}}, res[0].Diffs)
	require.Len(t, res[1].Diffs, 1)
	require.Equal(t, "different", res[1].Diffs[0].Kind)
	cancel()
	wg.Wait()
}
