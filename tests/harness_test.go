// Package tests holds skiff's end-to-end tests: real provider and target servers, the queue,
// the worker (in process or as the built binary), concurrent writers, and a row-by-row
// comparison of provider and target at the end.
package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
	"github.com/skiffdb/skiff/queue"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var binary struct {
	once sync.Once
	path string
	err  error
}

// skiffBinary builds cmd/skiff once per test binary.
func skiffBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "skiff-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "skiff")
		out, err := exec.Command("go", "build", "-o", binary.path, "../cmd/skiff").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, binary.err)
	return binary.path
}

// skiff runs the binary to completion and returns its combined output.
func skiff(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, skiffBinary(t), append([]string{"--log-format", "json"}, args...)...).CombinedOutput()
	return string(out), err
}

// mustSkiff runs the binary to completion, requires success and returns its output.
func mustSkiff(t testing.TB, args ...string) string {
	t.Helper()
	out, err := skiff(t, args...)
	require.NoError(t, err, out)
	return out
}

// pair is a provider and a target database with skiff's schemas and the same user tables.
type pair struct {
	prov, tgt string // URLs
	// src is how the pair's queues capture: the trigger source (zero) or a logical one
	// (queues created by capture stream from slots; see forEachSource).
	src source
	// workerArgs are added to the flags of `skiff worker` processes (startWorkerProc).
	workerArgs []string
}

func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pg.Connect(ctx, url, "skiff-e2e")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func exec1(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	_, err := c.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
}

// newPair makes the databases on shared servers of the given versions, installs the schemas
// and runs ddl on both sides.
func newPair(t testing.TB, provVersion, tgtVersion, ddl string) *pair {
	t.Helper()
	return newPairOn(t, pgtest.Shared(t, provVersion), pgtest.Shared(t, tgtVersion), ddl)
}

func newPairOn(t testing.TB, provSrv, tgtSrv *pgtest.Server, ddl string) *pair {
	t.Helper()
	p := &pair{prov: provSrv.NewDB(t), tgt: tgtSrv.NewDB(t)}
	for url, role := range map[string]migrate.Role{p.prov: migrate.Provider, p.tgt: migrate.Target} {
		migratetest.Install(t, url, role)
		c := connect(t, url)
		exec1(t, c, ddl)
	}
	return p
}

// capture adds tables to a queue on the provider.
func (p *pair) capture(t testing.TB, q string, tables ...string) {
	t.Helper()
	c := connect(t, p.prov)
	for _, tbl := range tables {
		_, err := queue.AddTable(context.Background(), c, q, queue.TableSpec{Name: tbl, Source: p.src.kind(), Plugin: p.src.plugin})
		require.NoError(t, err, tbl)
	}
}

// subscribe runs skiff subscribe --no-copy for a queue.
func (p *pair) subscribe(t testing.TB, q string, extra ...string) string {
	t.Helper()
	out, err := skiff(t, append([]string{"subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", q, "--no-copy", "--consumer", "c1"}, extra...)...)
	require.NoError(t, err, out)
	return out
}

// subscribeDirect subscribes consumer c1 to a queue with --no-copy semantics through the
// packages (as skiff subscribe does), every captured table under its own name.
func (p *pair) subscribeDirect(t testing.TB, q string) {
	t.Helper()
	ctx := context.Background()
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	_, err := queue.RegisterConsumer(ctx, prov, q, "c1")
	require.NoError(t, err)
	infos, err := queue.GetConsumerInfo(ctx, prov)
	require.NoError(t, err)
	var tick int64
	for _, in := range infos {
		if in.Queue == q && in.Consumer == "c1" {
			tick = in.LastTick
		}
	}
	tables, err := queue.Tables(ctx, prov, q)
	require.NoError(t, err)
	var routes []change.Route
	for _, tb := range tables {
		routes = append(routes, change.Route{Source: tb.Table, Dest: tb.Table, State: change.StateInSync})
	}
	if p.src.logical() {
		_, _, err = queue.EnsureSlot(ctx, prov, q, "c1")
		require.NoError(t, err)
		tick = 0
	}
	_, err = apply.Subscribe(ctx, tgt, apply.Subscription{Queue: q, Consumer: "c1", Provider: "test", Tick: tick}, routes)
	require.NoError(t, err)
}

// ticker force-ticks the queues every interval until ctx ends.
func ticker(t testing.TB, ctx context.Context, wg *sync.WaitGroup, url string, interval time.Duration, queues ...string) {
	c := connect(t, url)
	logical, err := queue.LogicalQueues(ctx, c)
	require.NoError(t, err)
	queues = slices.DeleteFunc(slices.Clone(queues), func(q string) bool { return logical[q] }) // no ticks: slots
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			for _, q := range queues {
				if _, err := queue.ForceTick(ctx, c, q); err != nil && ctx.Err() == nil {
					t.Errorf("tick %s: %v", q, err)
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
}

// runWorker runs an in-process worker service for a queue (consumer c1) until ctx ends: the
// type `skiff worker` runs (internal/worker: reconnection, lock retry, table manager), with
// short retry backoffs. It returns the server pids of the worker's provider and target
// connections.
func (p *pair) runWorker(t testing.TB, ctx context.Context, wg *sync.WaitGroup, q string) (provPID, tgtPID uint32) {
	t.Helper()
	return p.runWorkerWith(t, ctx, wg, q, nil)
}

// runWorkerWith is runWorker with a handler registry (nil: the built-in handlers).
func (p *pair) runWorkerWith(t testing.TB, ctx context.Context, wg *sync.WaitGroup, q string, reg *handlers.Registry) (provPID, tgtPID uint32) {
	t.Helper()
	return p.runWorkerConfig(t, ctx, wg, q, func(c *worker.Config) { c.Registry = reg })
}

// runWorkerConfig is runWorker with the service's configuration adjusted by set.
func (p *pair) runWorkerConfig(t testing.TB, ctx context.Context, wg *sync.WaitGroup, q string, set func(*worker.Config)) (provPID, tgtPID uint32) {
	t.Helper()
	pending, _ := strconv.Atoi(os.Getenv("SKIFF_MAX_PENDING_ROWS"))         // 0: the default
	maxEvents, _ := strconv.ParseInt(os.Getenv("SKIFF_MAX_EVENTS"), 10, 64) // 0: the default
	cfg := worker.Config{
		Provider: p.prov, Target: p.tgt,
		Queues:         []worker.Queue{{Name: q, Consumer: "c1"}},
		MaxEvents:      maxEvents,
		MaxPendingRows: pending,
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     time.Second,
	}
	if set != nil {
		set(&cfg)
	}
	svc, err := worker.New(cfg)
	require.NoError(t, err)
	require.NoError(t, svc.Start(ctx))
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-svc.Stopped()
		if err := svc.Err(); err != nil {
			t.Errorf("worker %s: %v", q, err)
		}
	}()
	return svc.Backends(q)
}

// caughtUp ticks the queue once more and waits until the target has applied that tick.
func (p *pair) caughtUp(t testing.TB, timeout time.Duration, queues ...string) {
	t.Helper()
	ctx := context.Background()
	prov := connect(t, p.prov)
	tgt := connect(t, p.tgt)
	if p.src.logical() {
		p.slotsCaughtUp(t, timeout, queues...)
		return
	}
	for _, q := range queues {
		tick, err := queue.ForceTick(ctx, prov, q)
		require.NoError(t, err)
		pgtest.Eventually(t, timeout, "target catches up with queue "+q, func() bool {
			var at *int64
			err := tgt.QueryRow(ctx, `SELECT tick FROM skiff.subscription WHERE queue = $1`, q).Scan(&at)
			return err == nil && at != nil && *at >= tick
		})
	}
}

// sequencesSynced waits until every sequence queue q captures that the target has is at
// least at the provider's value: a running `skiff worker`'s table manager moves them forward
// every 2 s, after the batches, so a compare right after caughtUp may still see one BEHIND.
// (The provider's writers must have stopped.)
func (p *pair) sequencesSynced(t testing.TB, timeout time.Duration, q string) {
	t.Helper()
	ctx := context.Background()
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	seqs, err := queue.GetSequences(ctx, prov, q)
	require.NoError(t, err)
	for _, s := range seqs {
		name := pgx.Identifier{s.Schema, s.Name}.Sanitize()
		var exists bool
		require.NoError(t, tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'S')`, s.Schema, s.Name).Scan(&exists))
		if !exists || !s.Called {
			continue
		}
		pgtest.Eventually(t, timeout, "target sequence "+name+" reaches the provider's value", func() bool {
			var last int64
			require.NoError(t, tgt.QueryRow(ctx, `SELECT last_value FROM `+name).Scan(&last))
			return last >= s.LastValue
		})
	}
}

// inSync waits until every subscribed table is in sync. Promotion needs an applied tick whose
// snapshot shows every transaction the copy could hold as finished; on an idle queue the next
// tick may be ticker_idle_period (60 s) away, so it forces one now and then while it waits.
func (p *pair) inSync(t testing.TB, timeout time.Duration, q string) {
	t.Helper()
	ctx := context.Background()
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	var last time.Time
	pgtest.Eventually(t, timeout, "every table of queue "+q+" in sync", func() bool {
		if allInSync(t, tgt) {
			return true
		}
		if p.src.logical() {
			return false // no ticks: the table manager promotes once the slot has passed the copy
		}
		if time.Since(last) > 250*time.Millisecond {
			_, err := queue.ForceTick(ctx, prov, q)
			require.NoError(t, err)
			last = time.Now()
		}
		return false
	})
}

// compare asserts that every table holds the same rows on both sides, as text, ordered by
// the table's first column (the key columns come first in every test table).
func (p *pair) compare(t testing.TB, tables ...string) {
	t.Helper()
	prov := connect(t, p.prov)
	tgt := connect(t, p.tgt)
	for _, tbl := range tables {
		a, b := dumpTable(t, prov, tbl), dumpTable(t, tgt, tbl)
		if len(a) != len(b) {
			t.Errorf("table %s: %d rows on the provider, %d on the target", tbl, len(a), len(b))
		}
		for i := 0; i < min(len(a), len(b)); i++ {
			if a[i] != b[i] {
				t.Errorf("table %s differs at row %d:\nprovider: %.300s\ntarget:   %.300s", tbl, i, a[i], b[i])
				break
			}
		}
		t.Logf("table %s: %d rows compared", tbl, len(a))
	}
}

func dumpTable(t testing.TB, c *pgx.Conn, table string) []string {
	t.Helper()
	ctx := context.Background()
	exec1(t, c, `SET TimeZone = 'UTC'`)
	if pg.ServerVersion(c) >= 90000 {
		exec1(t, c, `SET bytea_output = 'escape'`) // the only format before 9.0: pairs across 9.0 compare alike
	}
	rows, err := c.Query(ctx, `SELECT t::text FROM `+table+` t ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// Workload tables: two groups (queues) of two tables each. Keys come first (compare orders
// by the whole row's text, which then orders by key).
const workloadDDL = `
CREATE SEQUENCE ids;
CREATE TABLE a1 (id bigint PRIMARY KEY, v text, n integer, big text);
CREATE TABLE a2 (k1 integer, k2 text, v text, ts timestamptz, PRIMARY KEY (k1, k2));
CREATE TABLE b1 (id bigint PRIMARY KEY, payload text, d numeric(12,3), flag boolean);
CREATE TABLE b2 (id integer PRIMARY KEY, arr integer[], note varchar(40), b bytea);
`

var workloadTables = map[string][]string{"qa": {"public.a1", "public.a2"}, "qb": {"public.b1", "public.b2"}}

// newWorkloadPair is a pair holding workloadDDL's tables, captured by queues qa and qb (with
// src: the zero value for trigger queues) and subscribed by consumer c1 without a copy.
func newWorkloadPair(t testing.TB, provVersion, tgtVersion string, src source) *pair {
	t.Helper()
	p := newPair(t, provVersion, tgtVersion, workloadDDL)
	p.src = src
	for q, tables := range workloadTables {
		p.capture(t, q, tables...)
		p.subscribe(t, q)
	}
	return p
}

func allTables() []string {
	return append(append([]string{}, workloadTables["qa"]...), workloadTables["qb"]...)
}

// randText returns text with the characters COPY and record literals must escape.
func randText(rng *rand.Rand) string {
	parts := []string{"plain", "tab\there", "new\nline", `back\slash`, `\N`, "quote'\"", "ünï ✓", "", "(x,y)", "{1,2}", " "}
	var b strings.Builder
	for range 1 + rng.IntN(3) {
		b.WriteString(parts[rng.IntN(len(parts))])
	}
	return b.String()
}

// writeTx runs fn in a transaction of c for a test's concurrent writer. The statements use
// the writer's ctx (a stop cuts them off, and the transaction rolls back), but BEGIN, COMMIT
// and ROLLBACK do not: a COMMIT the client gave up on may still be made by the server, after
// the test's last tick (caughtUp), and the row would be missing from the compare.
func writeTx(ctx context.Context, c *pgx.Conn, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(context.WithoutCancel(ctx), c, fn)
}

// writer runs random transactions on the provider until ctx ends: inserts, updates that
// change the key, deletes, rows inserted and deleted in one transaction, large rows, and now
// and then a TRUNCATE.
func writer(t testing.TB, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, group string, txs *int64) {
	writerTruncating(t, ctx, wg, url, seed, group, txs, true)
}

// writerTruncating is writer, with the TRUNCATEs only when truncate is set (a DELETE of one
// row instead).
func writerTruncating(t testing.TB, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, group string, txs *int64, truncate bool) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 7))
		for ctx.Err() == nil {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				for range 1 + rng.IntN(8) {
					if err := writeOne(ctx, tx, rng, group, truncate); err != nil {
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
				if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "23505" || pgErr.Code == "40001") {
					continue // concurrent writers collide now and then; the provider rolled back
				}
				t.Errorf("writer %s: %v", group, err)
				return
			}
			*txs++
		}
	}()
}

func writeOne(ctx context.Context, tx pgx.Tx, rng *rand.Rand, group string, truncate bool) error {
	var err error
	r := rng.IntN(100)
	if group == "qa" {
		switch {
		case r < 35:
			big := ""
			if rng.IntN(20) == 0 {
				big = strings.Repeat("large row "+randText(rng), 3000)
			}
			_, err = tx.Exec(ctx, `INSERT INTO a1 SELECT nextval('ids'), $1, $2, NULLIF($3, '') FROM generate_series(1, $4)`, randText(rng), rng.IntN(1000), big, 1+rng.IntN(5))
		case r < 50:
			_, err = tx.Exec(ctx, `UPDATE a1 SET v = $1, n = n + 1 WHERE id IN (SELECT id FROM a1 ORDER BY random() LIMIT 3)`, randText(rng))
		case r < 60:
			_, err = tx.Exec(ctx, `UPDATE a1 SET id = nextval('ids') WHERE id = (SELECT id FROM a1 ORDER BY random() LIMIT 1)`)
		case r < 67:
			_, err = tx.Exec(ctx, `DELETE FROM a1 WHERE id IN (SELECT id FROM a1 ORDER BY random() LIMIT 2)`)
		case r < 72:
			var id int64
			if err = tx.QueryRow(ctx, `INSERT INTO a1 VALUES (nextval('ids'), 'short-lived', 0) RETURNING id`).Scan(&id); err == nil {
				_, err = tx.Exec(ctx, `UPDATE a1 SET v = 'still short-lived' WHERE id = $1`, id)
				if err == nil {
					_, err = tx.Exec(ctx, `DELETE FROM a1 WHERE id = $1`, id)
				}
			}
		case r < 85:
			_, err = tx.Exec(ctx, `INSERT INTO a2 VALUES ($1, $2, $3, now() - $4 * interval '1 second')`, rng.IntN(1000000), randText(rng)+fmt.Sprint(rng.IntN(1000000)), randText(rng), rng.IntN(100000))
		case r < 92:
			_, err = tx.Exec(ctx, `UPDATE a2 SET k2 = k2 || 'x', v = $1 WHERE (k1, k2) IN (SELECT k1, k2 FROM a2 ORDER BY random() LIMIT 1)`, randText(rng))
		default:
			_, err = tx.Exec(ctx, `DELETE FROM a2 WHERE (k1, k2) IN (SELECT k1, k2 FROM a2 ORDER BY random() LIMIT 1)`)
		}
		return err
	}
	switch {
	case r < 40:
		_, err = tx.Exec(ctx, `INSERT INTO b1 SELECT nextval('ids'), $1, random() * 1000, random() < 0.5 FROM generate_series(1, $2)`, randText(rng), 1+rng.IntN(10))
	case r < 55:
		_, err = tx.Exec(ctx, `UPDATE b1 SET d = d + 1, flag = NOT flag, payload = $1 WHERE id IN (SELECT id FROM b1 ORDER BY random() LIMIT 5)`, randText(rng))
	case r < 62:
		_, err = tx.Exec(ctx, `UPDATE b1 SET id = nextval('ids') WHERE id = (SELECT id FROM b1 ORDER BY random() LIMIT 1)`)
	case r < 68:
		_, err = tx.Exec(ctx, `DELETE FROM b1 WHERE id IN (SELECT id FROM b1 ORDER BY random() LIMIT 3)`)
	case r < 85:
		_, err = tx.Exec(ctx, `INSERT INTO b2 VALUES ($1, ARRAY[$2::int, NULL, 3], $3, $4)`, rng.IntN(1<<30), rng.IntN(100), fmt.Sprint(rng.IntN(1000)), []byte{0, 1, '\\', '\n', byte(rng.IntN(256))})
	case r < 95:
		_, err = tx.Exec(ctx, `UPDATE b2 SET note = NULL, arr = arr || 4 WHERE id = (SELECT id FROM b2 ORDER BY random() LIMIT 1)`)
	case r == 99 && rng.IntN(4) == 0 && truncate:
		_, err = tx.Exec(ctx, `TRUNCATE b2`) // replicated in order with the rows around it
	default:
		_, err = tx.Exec(ctx, `DELETE FROM b2 WHERE id = (SELECT id FROM b2 ORDER BY random() LIMIT 1)`)
	}
	return err
}

// builtin builds a route's handler from the built-in handlers.
func builtin(r change.Route) (consumer.Handler, error) { return handlers.NewRegistry().ForRoute(r) }
