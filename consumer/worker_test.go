package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// memSource is a Source of batches held in memory; the target is a real database.
type memSource struct {
	mu       sync.Mutex
	batches  []change.Batch
	events   map[int64][]change.Event
	next     int
	finished []int64
	more     chan struct{}
}

func newMemSource() *memSource {
	return &memSource{events: map[int64][]change.Event{}, more: make(chan struct{}, 100)}
}

func (s *memSource) add(b change.Batch, evs ...change.Event) {
	s.mu.Lock()
	s.batches = append(s.batches, b)
	s.events[b.ID] = evs
	s.mu.Unlock()
	s.more <- struct{}{}
}

func (s *memSource) NextBatch(ctx context.Context) (change.Batch, error) {
	for {
		s.mu.Lock()
		if s.next < len(s.batches) {
			b := s.batches[s.next]
			s.mu.Unlock()
			return b, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return change.Batch{}, ctx.Err()
		case <-s.more:
		}
	}
}

func (s *memSource) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	s.mu.Lock()
	evs := s.events[b.ID]
	s.mu.Unlock()
	for i := 0; i < len(evs); i += 2 {
		chunk := append([]change.Event(nil), evs[i:min(i+2, len(evs))]...)
		if err := fn(chunk); err != nil {
			return err
		}
	}
	return nil
}

func (s *memSource) Finish(ctx context.Context, b change.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished = append(s.finished, b.ID)
	if s.next < len(s.batches) && s.batches[s.next].ID == b.ID {
		s.next++
	}
	return nil
}

// CopyHolds reads copy points as the trigger queue writes them (txid snapshots).
func (s *memSource) CopyHolds(point string) (func(*change.Event) bool, error) {
	return trigger.CopyHolds(point)
}

func (s *memSource) done() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.finished...)
}

var (
	cols = []string{"id", "v"}
	key  = []string{"id"}
	src  = change.Table{Schema: "public", Name: "t"}
)

func ins(id int64, k, v string) change.Event {
	return change.Event{ID: id, TxID: id, Op: change.Insert, Table: src, Columns: cols, Key: key, Values: []change.Value{change.Text(k), change.Text(v)}}
}

func batch(id, prev, end int64) change.Batch {
	return change.Batch{ID: id, Queue: "q", Prev: change.Position{Tick: prev}, End: change.Position{Tick: end}}
}

type fixture struct {
	url  string
	conn *pgx.Conn
	a    *apply.Applier
	src  *memSource
}

func newFixture(t *testing.T, ddl string, routes ...change.Route) *fixture {
	t.Helper()
	ctx := context.Background()
	url := migratetest.NewDB(t, "", migrate.Target)
	conn, err := pg.Connect(ctx, url, "skiff-test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, ddl)
	require.NoError(t, err)
	if len(routes) == 0 {
		routes = []change.Route{{Source: src, Dest: src, State: change.StateInSync}}
	}
	_, err = apply.Subscribe(ctx, conn, apply.Subscription{Queue: "q", Consumer: "c", Provider: "test", Tick: 1}, routes)
	require.NoError(t, err)
	// The applier gets a connection of its own; conn stays the test's.
	aconn, err := pg.Connect(ctx, url, "skiff-test-applier")
	require.NoError(t, err)
	t.Cleanup(func() { _ = aconn.Close(context.Background()) })
	a, err := apply.Open(ctx, aconn, apply.Config{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	return &fixture{url: url, conn: conn, a: a, src: newMemSource()}
}

// run starts the worker; stop ends it softly and returns its Err.
func (f *fixture) run(t *testing.T, reg *handlers.Registry) (stop func() error) {
	t.Helper()
	w, err := consumer.NewWorker(consumer.Config{Name: "q", Source: f.src, Applier: f.a, Handlers: handlersOf(reg), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(w.Stop)
	return func() error { w.Stop(); return w.Err() }
}

func (f *fixture) rows(t *testing.T, table string) []string {
	t.Helper()
	rows, err := f.conn.Query(context.Background(), `SELECT t::text FROM `+table+` t ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func (f *fixture) finished(t *testing.T, ids ...int64) {
	t.Helper()
	pgtest.Eventually(t, 30*time.Second, "batches finished", func() bool { return len(f.src.done()) >= len(ids) })
	require.Equal(t, ids, f.src.done())
}

func TestWorkerAppliesAndFinishesInOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	stop := f.run(t, nil)
	f.src.add(batch(10, 1, 2), ins(1, "1", "a"), ins(2, "2", "b"), ins(3, "3", "c"))
	f.src.add(batch(11, 2, 3))
	f.src.add(batch(12, 3, 4), ins(4, "4", "d"))
	f.finished(t, 10, 11, 12)
	require.NoError(t, stop())
	require.Equal(t, []string{"(1,a)", "(2,b)", "(3,c)", "(4,d)"}, f.rows(t, "t"))
	pos, err := f.a.Position(context.Background())
	require.NoError(t, err)
	require.Equal(t, change.Position{Tick: 4}, pos)
}

// TestWorkerFinishesAlreadyAppliedBatch: after a crash between the target's commit and the
// source's Finish, the batch comes again; the worker only finishes it.
func TestWorkerFinishesAlreadyAppliedBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	b := batch(10, 1, 2)
	require.NoError(t, f.a.Apply(context.Background(), b, func(emit func([]change.Event) error) error {
		return emit([]change.Event{ins(1, "1", "a")})
	}))
	stop := f.run(t, nil)
	f.src.add(b, ins(1, "1", "a")) // applied again it would fail: duplicate key
	f.finished(t, 10)
	require.NoError(t, stop())
	require.Equal(t, []string{"(1,a)"}, f.rows(t, "t"))
	var logged int
	require.NoError(t, f.conn.QueryRow(context.Background(), `SELECT count(*) FROM skiff.batch_log`).Scan(&logged))
	require.Equal(t, 1, logged)
}

func TestWorkerStopsOnPositionLost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	w, err := consumer.NewWorker(consumer.Config{Source: f.src, Applier: f.a, Handlers: builtin})
	require.NoError(t, err)
	f.src.add(batch(10, 5, 6), ins(1, "1", "a"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, w.Start(ctx))
	<-w.Stopped() // by itself
	require.ErrorIs(t, w.Err(), change.ErrPositionLost)
	require.Empty(t, f.src.done())
	require.Empty(t, f.rows(t, "t"))
}

// TestWorkerRetriesUntilFixed: a batch failing on the target is retried (nothing skipped, the
// error recorded) and goes through once the target is fixed.
func TestWorkerRetriesUntilFixed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v varchar(3))`)
	stop := f.run(t, nil)
	f.src.add(batch(10, 1, 2), ins(1, "1", "ok"), ins(2, "2", "too long"), ins(3, "3", "ok"))
	var lastErr string
	pgtest.Eventually(t, 30*time.Second, "error recorded", func() bool {
		var e *string
		_ = f.conn.QueryRow(context.Background(), `SELECT last_error FROM skiff.subscription`).Scan(&e)
		if e != nil {
			lastErr = *e
		}
		return e != nil
	})
	require.Contains(t, lastErr, "event 2")
	require.Contains(t, lastErr, `"public"."t"`)
	require.Contains(t, lastErr, "value too long")
	require.Empty(t, f.src.done())

	_, err := f.conn.Exec(context.Background(), `ALTER TABLE t ALTER v TYPE text`)
	require.NoError(t, err)
	f.finished(t, 10)
	require.NoError(t, stop())
	require.Equal(t, []string{"(1,ok)", "(2,\"too long\")", "(3,ok)"}, f.rows(t, "t"))
}

// TestWorkerRoutesAndHandlers: routes rename tables, a custom handler from the registry
// transforms rows, tables not subscribed are ignored.
func TestWorkerRoutesAndHandlers(t *testing.T) {
	t.Parallel()
	other := change.Table{Schema: "public", Name: "other"}
	f := newFixture(t, `CREATE SCHEMA dst; CREATE TABLE dst.t2 (id int PRIMARY KEY, v text)`,
		change.Route{Source: src, Dest: change.Table{Schema: "dst", Name: "t2"}, State: change.StateInSync, Handler: "upper", Config: `{"suffix": "!"}`})
	reg := handlers.NewRegistry()
	require.NoError(t, reg.Register("upper", func(_ change.Table, cfg json.RawMessage) (handlers.Handler, error) {
		var c struct{ Suffix string }
		if err := json.Unmarshal(cfg, &c); err != nil {
			return nil, err
		}
		return handlers.Func(func(ev *change.Event) (bool, error) {
			if v, _ := ev.Value("v"); v.Text == "drop me" {
				return false, nil
			}
			vals := append([]change.Value(nil), ev.Values...)
			vals[1] = change.Text(vals[1].Text + c.Suffix)
			ev.Values = vals
			return true, nil
		}), nil
	}))
	stop := f.run(t, reg)
	notSubscribed := ins(3, "3", "x")
	notSubscribed.Table = other
	f.src.add(batch(10, 1, 2), ins(1, "1", "a"), ins(2, "2", "drop me"), notSubscribed)
	f.finished(t, 10)
	require.NoError(t, stop())
	require.Equal(t, []string{"(1,a!)"}, f.rows(t, "dst.t2"))
}

func TestWorkerSoftStopFinishesBatchInHand(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	w, err := consumer.NewWorker(consumer.Config{Source: f.src, Applier: f.a, Handlers: builtin, OnBatch: func(change.Batch, int) {}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	// The source cancels the soft context while the batch is being read: the batch still
	// commits and finishes, and the worker stops without error.
	src := &cancelling{memSource: f.src, cancel: cancel}
	w, err = consumer.NewWorker(consumer.Config{Source: src, Applier: f.a, Handlers: builtin})
	require.NoError(t, err)
	f.src.add(batch(10, 1, 2), ins(1, "1", "a"), ins(2, "2", "b"), ins(3, "3", "c"))
	require.NoError(t, w.Start(ctx))
	<-w.Stopped()
	require.NoError(t, w.Err())
	require.Equal(t, []int64{10}, f.src.done())
	require.Equal(t, []string{"(1,a)", "(2,b)", "(3,c)"}, f.rows(t, "t"))

	// A hard stop (StopAndCancel, which waits: from a goroutine of its own) rolls the batch
	// back; a requested stop is no error.
	var hardStopped sync.WaitGroup
	var w2 *consumer.Worker
	src2 := &cancelling{memSource: f.src, cancel: func() { hardStopped.Go(w2.StopAndCancel) }}
	w2, err = consumer.NewWorker(consumer.Config{Source: src2, Applier: f.a, Handlers: builtin})
	require.NoError(t, err)
	f.src.add(batch(11, 2, 3), ins(4, "4", "d"), ins(5, "5", "e"), ins(6, "6", "f"))
	require.NoError(t, w2.Start(context.Background()))
	<-w2.Stopped()
	hardStopped.Wait()
	require.NoError(t, w2.Err())
	require.Equal(t, []int64{10}, f.src.done())
	require.Len(t, f.rows(t, "t"), 3)
}

// cancelling cancels a context after handing out the first chunk of a batch.
type cancelling struct {
	*memSource
	cancel func()
}

func (c *cancelling) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	first := true
	return c.memSource.Events(ctx, b, func(chunk []change.Event) error {
		if err := fn(chunk); err != nil {
			return err
		}
		if first {
			first = false
			c.cancel()
		}
		return ctx.Err()
	})
}

func TestWorkerMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	reg := prometheus.NewRegistry()
	m := consumer.NewMetrics(reg)
	w, err := consumer.NewWorker(consumer.Config{Name: "q", Source: f.src, Applier: f.a, Handlers: builtin, Metrics: m.For("q")})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	f.src.add(batch(10, 1, 2), ins(1, "1", "a"), ins(2, "2", "b"))
	late := batch(11, 2, 3)
	late.EndTime = time.Now().Add(-5 * time.Second) // its tick was cut 5 s ago
	f.src.add(late, ins(3, "3", "c"))
	f.finished(t, 10, 11)
	w.Stop()
	require.NoError(t, w.Err())
	families, err := reg.Gather()
	require.NoError(t, err)
	var lag float64
	for _, mf := range families {
		if mf.GetName() == "skiff_worker_lag_seconds" {
			lag = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	require.GreaterOrEqual(t, lag, 5.0, "lag is measured from the batch's end tick")
	require.Less(t, lag, 60.0)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP skiff_worker_events_applied_total Events applied on the target.
# TYPE skiff_worker_events_applied_total counter
skiff_worker_events_applied_total{queue="q"} 3
# HELP skiff_worker_batches_total Batches applied on the target.
# TYPE skiff_worker_batches_total counter
skiff_worker_batches_total{queue="q"} 2
`), "skiff_worker_events_applied_total", "skiff_worker_batches_total"))
	n, err := testutil.GatherAndCount(reg, "skiff_worker_batch_duration_seconds", "skiff_worker_last_batch_timestamp_seconds")
	require.NoError(t, err)
	require.Equal(t, 2, n)
}

// TestWorkerBacklogsTableBeingCopied: while t is copying with its snapshot published, the
// events of t the snapshot does not see go to t's backlog (the destination is not written)
// and the other table is applied; the first batch that sees t catching-up applies the
// backlog first (less what the snapshot sees, e.g. a failed attempt's rows), then its own
// events, and deletes the backlog.
func TestWorkerBacklogsTableBeingCopied(t *testing.T) {
	t.Parallel()
	other := change.Table{Schema: "public", Name: "other"}
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY, v text);
		INSERT INTO t VALUES (1, 'copied')`,
		change.Route{Source: src, Dest: src, State: change.StateCopying, CopyPoint: "100:105:102"},
		change.Route{Source: other, Dest: other, State: change.StateInSync})
	ctx := context.Background()
	// A row of an earlier attempt that this copy's snapshot sees: dropped when draining.
	_, err := f.conn.Exec(ctx, `INSERT INTO skiff.copy_backlog (sub_id, source_schema, source_name, event_id, txid, op, dest_schema, dest_name, columns, vals, key_columns)
		SELECT sub_id, 'public', 't', 7, 99, 'I', 'public', 't', '{id,v}', '{7,stale}', '{id}' FROM skiff.subscription`)
	require.NoError(t, err)
	stop := f.run(t, nil)
	inOther := func(id int64, k, v string) change.Event {
		ev := ins(id, k, v)
		ev.Table = other
		return ev
	}
	upd := func(id int64, k, v string) change.Event {
		ev := ins(id, k, v)
		ev.Op = change.Update
		return ev
	}
	f.src.add(batch(10, 1, 2),
		ins(50, "50", "in the copy"), // seen by the snapshot: skipped
		ins(102, "2", "backlog"), inOther(103, "1", "a"), ins(200, "3", "backlog"), upd(201, "1", "changed"))
	f.finished(t, 10)
	require.Equal(t, []string{"(1,copied)"}, f.rows(t, "t"), "t is not written while copying")
	require.Equal(t, []string{"(1,a)"}, f.rows(t, "other"))
	var held int
	require.NoError(t, f.conn.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog`).Scan(&held))
	require.Equal(t, 4, held)

	// The copy commits.
	_, err = f.conn.Exec(ctx, `UPDATE skiff.table_state SET state = 'catching-up' WHERE source_name = 't'`)
	require.NoError(t, err)
	f.src.add(batch(11, 2, 3), upd(300, "3", "after the backlog"), inOther(301, "2", "b"))
	f.finished(t, 10, 11)
	require.NoError(t, stop())
	require.Equal(t, []string{"(1,changed)", "(2,backlog)", "(3,\"after the backlog\")"}, f.rows(t, "t"))
	require.Equal(t, []string{"(1,a)", "(2,b)"}, f.rows(t, "other"))
	require.NoError(t, f.conn.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog`).Scan(&held))
	require.Zero(t, held)
}

// TestWorkerBacklogsCopyWithoutSnapshot: t is copying and no copy snapshot is known (its last
// copy failed after the barrier cleared it; the next attempt is minutes away). The batches
// must go on: the other table is applied, t's events go to its backlog. When a copy publishes
// its snapshot and commits, the backlog is applied less what that snapshot sees.
func TestWorkerBacklogsCopyWithoutSnapshot(t *testing.T) {
	t.Parallel()
	other := change.Table{Schema: "public", Name: "other"}
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY, v text)`,
		change.Route{Source: src, Dest: src, State: change.StateCopying},
		change.Route{Source: other, Dest: other, State: change.StateInSync})
	ctx := context.Background()
	stop := f.run(t, nil)
	inOther := func(id int64, k, v string) change.Event {
		ev := ins(id, k, v)
		ev.Table = other
		return ev
	}
	f.src.add(batch(10, 1, 2), ins(50, "50", "the copy holds it"), inOther(51, "1", "a"), ins(102, "2", "after the copy's snapshot"))
	f.finished(t, 10)
	require.Equal(t, []string{"(1,a)"}, f.rows(t, "other"), "the other table replicates while t has no copy snapshot")
	require.Empty(t, f.rows(t, "t"))
	var held int
	require.NoError(t, f.conn.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog`).Scan(&held))
	require.Equal(t, 2, held)

	// A copy under snapshot 100:105:102 commits (it holds event 50's row).
	_, err := f.conn.Exec(ctx, `INSERT INTO t VALUES (50, 'the copy holds it');
		UPDATE skiff.table_state SET state = 'catching-up', copy_snapshot = '100:105:102' WHERE source_name = 't'`)
	require.NoError(t, err)
	f.src.add(batch(11, 2, 3), inOther(300, "2", "b"))
	f.finished(t, 10, 11)
	require.NoError(t, stop())
	require.Equal(t, []string{`(2,"after the copy's snapshot")`, `(50,"the copy holds it")`}, f.rows(t, "t"))
	require.Equal(t, []string{"(1,a)", "(2,b)"}, f.rows(t, "other"))
	require.NoError(t, f.conn.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog`).Scan(&held))
	require.Zero(t, held)
}

// TestWorkerHeartbeatInBackoff: a worker waiting a long backoff before it retries a failed
// batch keeps its heartbeat on the target fresh: it is alive, and skiff status must not call
// it "not running?".
func TestWorkerHeartbeatInBackoff(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	ctx := context.Background()
	w, err := consumer.NewWorker(consumer.Config{Name: "q", Source: f.src, Applier: f.a, Handlers: builtin,
		MinBackoff: time.Hour, MaxBackoff: time.Hour, HeartbeatEvery: 50 * time.Millisecond})
	require.NoError(t, err)
	f.src.add(batch(10, 1, 2), ins(1, "1", "not an integer"))
	require.NoError(t, w.Start(ctx))
	var failedAt time.Time
	pgtest.Eventually(t, 30*time.Second, "the batch fails", func() bool {
		var at *time.Time
		require.NoError(t, f.conn.QueryRow(ctx, `SELECT last_error_at FROM skiff.subscription`).Scan(&at))
		if at != nil {
			failedAt = *at
		}
		return at != nil
	})
	pgtest.Eventually(t, 30*time.Second, "the heartbeat moves on during the backoff", func() bool {
		var hb time.Time
		require.NoError(t, f.conn.QueryRow(ctx, `SELECT heartbeat FROM skiff.subscription`).Scan(&hb))
		return hb.Sub(failedAt) > 500*time.Millisecond
	})
	w.Stop()
	require.NoError(t, w.Err())
	require.Empty(t, f.src.done(), "the batch is not applied")
}

// handlersOf adapts a registry to Config.Handlers, as the worker service does.
func handlersOf(reg *handlers.Registry) func(change.Route) (consumer.Handler, error) {
	return func(r change.Route) (consumer.Handler, error) { return reg.ForRoute(r) }
}

// builtin builds a route's handler from the built-in handlers.
func builtin(r change.Route) (consumer.Handler, error) { return handlers.NewRegistry().ForRoute(r) }

// pointSource reads copy points of its own making, "holds:<event ids>", where the trigger
// queue's txid arithmetic would say the opposite: the worker must ask the source.
type pointSource struct {
	*memSource
	mu    sync.Mutex
	asked []string
}

func (s *pointSource) CopyHolds(point string) (func(*change.Event) bool, error) {
	s.mu.Lock()
	s.asked = append(s.asked, point)
	s.mu.Unlock()
	ids, ok := strings.CutPrefix(point, "holds:")
	if !ok {
		return nil, fmt.Errorf("not a copy point of this source: %q", point)
	}
	held := map[int64]bool{}
	for _, f := range strings.Split(ids, ",") {
		var id int64
		if _, err := fmt.Sscan(f, &id); err != nil {
			return nil, err
		}
		held[id] = true
	}
	return func(ev *change.Event) bool { return held[ev.ID] }, nil
}

// TestWorkerAsksSourceWhatCopyHolds: which events of a copying or catching-up table the copy
// already holds is the source's answer at the route's opaque copy point — for the events
// applied, for those held in the backlog, and when the backlog is drained.
func TestWorkerAsksSourceWhatCopyHolds(t *testing.T) {
	t.Parallel()
	other := change.Table{Schema: "public", Name: "other"}
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY, v text);
		CREATE TABLE other (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'copied'); INSERT INTO u VALUES (1, 'copied')`,
		change.Route{Source: src, Dest: src, State: change.StateCopying, CopyPoint: "holds:7,102"},
		change.Route{Source: change.Table{Schema: "public", Name: "u"}, Dest: change.Table{Schema: "public", Name: "u"}, State: change.StateCatchingUp, CopyPoint: "holds:5"},
		change.Route{Source: other, Dest: other, State: change.StateInSync, CopyPoint: "holds:1"})
	ctx := context.Background()
	// A backlog row of t the copy holds (event 7): dropped when draining. Its txid (99) is
	// one a txid snapshot would not call copied either way: only the source knows.
	_, err := f.conn.Exec(ctx, `INSERT INTO skiff.copy_backlog (sub_id, source_schema, source_name, event_id, txid, op, dest_schema, dest_name, columns, vals, key_columns)
		SELECT sub_id, 'public', 't', 7, 99, 'I', 'public', 't', '{id,v}', '{7,held}', '{id}' FROM skiff.subscription`)
	require.NoError(t, err)
	ps := &pointSource{memSource: f.src}
	w, err := consumer.NewWorker(consumer.Config{Name: "q", Source: ps, Applier: f.a, Handlers: builtin, MinBackoff: 20 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	t.Cleanup(w.Stop)
	in := func(tb string, id int64, k, v string) change.Event {
		ev := ins(id, k, v)
		ev.Table = change.Table{Schema: "public", Name: tb}
		ev.TxID = 1 // the same transaction for all: a txid snapshot could not tell them apart
		return ev
	}
	f.src.add(batch(10, 1, 2),
		in("t", 102, "2", "held by t's copy"), in("t", 103, "3", "to the backlog"),
		in("u", 5, "5", "held by u's copy"), in("u", 6, "6", "applied"),
		in("other", 1, "1", "in sync: applied"))
	f.finished(t, 10)
	require.Equal(t, []string{"(1,copied)"}, f.rows(t, "t"))
	require.Equal(t, []string{"(1,copied)", "(6,applied)"}, f.rows(t, "u"))
	require.Equal(t, []string{`(1,"in sync: applied")`}, f.rows(t, "other"))

	// t's copy commits: its backlog is drained less what the copy holds (event 7).
	_, err = f.conn.Exec(ctx, `UPDATE skiff.table_state SET state = 'catching-up' WHERE source_name = 't'`)
	require.NoError(t, err)
	f.src.add(batch(11, 2, 3), in("t", 104, "4", "applied"))
	f.finished(t, 10, 11)
	w.Stop()
	require.NoError(t, w.Err())
	require.Equal(t, []string{"(1,copied)", `(3,"to the backlog")`, "(4,applied)"}, f.rows(t, "t"))
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Subset(t, ps.asked, []string{"holds:7,102", "holds:5"}, "the worker asks the source at each route's copy point")
}

// TestWorkerCopyPointNeedsSource: a source that cannot read copy points fails a batch that
// meets a table catching up at one (nothing is applied), instead of guessing.
func TestWorkerCopyPointNeedsSource(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`,
		change.Route{Source: src, Dest: src, State: change.StateCatchingUp, CopyPoint: "100:105:"})
	plain := struct{ consumer.Source }{f.src} // NextBatch, Events, Finish only
	w, err := consumer.NewWorker(consumer.Config{Name: "q", Source: plain, Applier: f.a, Handlers: builtin, MinBackoff: time.Hour})
	require.NoError(t, err)
	f.src.add(batch(10, 1, 2), ins(1, "1", "a"))
	require.NoError(t, w.Start(context.Background()))
	pgtest.Eventually(t, 30*time.Second, "the batch fails", func() bool {
		var e *string
		_ = f.conn.QueryRow(context.Background(), `SELECT last_error FROM skiff.subscription`).Scan(&e)
		return e != nil && strings.Contains(*e, "cannot read")
	})
	w.Stop()
	require.Empty(t, f.src.done())
	require.Empty(t, f.rows(t, "t"))
}

// resuming is a stream-like source: it records Resume and NextBatch calls, and its stream
// breaks once while batch 11 is read.
type resuming struct {
	*memSource
	mu     sync.Mutex
	calls  []string
	broken bool
}

func (s *resuming) log(c string) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

func (s *resuming) Resume(ctx context.Context, from change.Position) error {
	s.log("resume " + from.String())
	return nil
}

func (s *resuming) NextBatch(ctx context.Context) (change.Batch, error) {
	b, err := s.memSource.NextBatch(ctx)
	if err == nil {
		s.log(fmt.Sprintf("next %d", b.ID))
	}
	return b, err
}

func (s *resuming) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	s.mu.Lock()
	breakNow := b.ID == 11 && !s.broken
	s.broken = s.broken || breakNow
	s.mu.Unlock()
	if breakNow {
		return errors.New("stream broken")
	}
	return s.memSource.Events(ctx, b, fn)
}

// TestWorkerResumesSourceAtTargetPosition: a Resumer source is told the target's position
// before the first batch and again after a failed batch, and not between good batches.
func TestWorkerResumesSourceAtTargetPosition(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	rs := &resuming{memSource: f.src}
	w, err := consumer.NewWorker(consumer.Config{Name: "q", Source: rs, Applier: f.a, Handlers: builtin, MinBackoff: 20 * time.Millisecond})
	require.NoError(t, err)
	f.src.add(batch(10, 1, 2), ins(1, "1", "a"))
	f.src.add(batch(11, 2, 3), ins(2, "2", "b"))
	f.src.add(batch(12, 3, 4), ins(3, "3", "c"))
	require.NoError(t, w.Start(context.Background()))
	f.finished(t, 10, 11, 12)
	w.Stop()
	require.NoError(t, w.Err())
	rs.mu.Lock()
	defer rs.mu.Unlock()
	require.Equal(t, []string{
		"resume tick 1", "next 10", // the subscription starts at tick 1
		"next 11",                  // fails: the stream breaks
		"resume tick 2", "next 11", // resumed where the target is
		"next 12",
	}, rs.calls[:6])
	require.Equal(t, []string{"(1,a)", "(2,b)", "(3,c)"}, f.rows(t, "t"))
}
