package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
	"github.com/skiffdb/skiff/queue"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const ddl = `CREATE TABLE t (id integer PRIMARY KEY, v text)`

// fixture is a provider and a target (of the default test version) with table t captured in
// queue q, and consumer c1 subscribed to it on the target, every table in sync.
type fixture struct {
	prov, tgt   string
	pconn, tcon *pgx.Conn
	next        int // the next id the writer inserts
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{prov: migratetest.NewDB(t, "", migrate.Provider), tgt: migratetest.NewDB(t, "", migrate.Target), next: 1}
	f.pconn, f.tcon = connect(t, f.prov), connect(t, f.tgt)
	exec(t, f.pconn, ddl)
	exec(t, f.tcon, ddl)
	_, err := queue.AddTable(ctx, f.pconn, "q", queue.TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = queue.RegisterConsumer(ctx, f.pconn, "q", "c1")
	require.NoError(t, err)
	var tick int64
	infos, err := queue.GetConsumerInfo(ctx, f.pconn)
	require.NoError(t, err)
	for _, in := range infos {
		if in.Queue == "q" && in.Consumer == "c1" {
			tick = in.LastTick
		}
	}
	tb := change.Table{Schema: "public", Name: "t"}
	_, err = apply.Subscribe(ctx, f.tcon, apply.Subscription{Queue: "q", Consumer: "c1", Provider: "test", Tick: tick},
		[]change.Route{{Source: tb, Dest: tb, State: change.StateInSync}})
	require.NoError(t, err)
	return f
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pg.Connect(ctx, url, "worker test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	_, err := c.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
}

// config is the service's configuration for the fixture, with short backoffs.
func (f *fixture) config(t *testing.T) worker.Config {
	return worker.Config{
		Provider: f.prov, Target: f.tgt,
		Queues:     []worker.Queue{{Name: "q", Consumer: "c1"}},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		ManagerInterval: 100 * time.Millisecond,
		Log:             slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
}

// start starts a service, stopped (softly) when the test ends.
func start(t *testing.T, cfg worker.Config) *worker.Service {
	t.Helper()
	svc, err := worker.New(cfg)
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(svc.Stop)
	return svc
}

// write inserts n rows into t on the provider and ticks: one batch of n rows.
func (f *fixture) write(t *testing.T, n int) int64 {
	t.Helper()
	exec(t, f.pconn, `INSERT INTO t SELECT g, 'row ' || g FROM generate_series($1::int, $2::int) g`, f.next, f.next+n-1)
	f.next += n
	tick, err := queue.ForceTick(context.Background(), f.pconn, "q")
	require.NoError(t, err)
	return tick
}

// applied is the tick the target has applied for q (0: none).
func (f *fixture) applied(t *testing.T) int64 {
	t.Helper()
	var at *int64
	require.NoError(t, f.tcon.QueryRow(context.Background(), `SELECT tick FROM skiff.subscription WHERE queue = 'q'`).Scan(&at))
	if at == nil {
		return 0
	}
	return *at
}

// caughtUp ticks once more and waits until the target has applied that tick.
func (f *fixture) caughtUp(t *testing.T) {
	t.Helper()
	tick, err := queue.ForceTick(context.Background(), f.pconn, "q")
	require.NoError(t, err)
	pgtest.Eventually(t, time.Minute, fmt.Sprintf("the target applies tick %d", tick), func() bool { return f.applied(t) >= tick })
}

// equal compares table tb on both sides row by row.
func (f *fixture) equal(t *testing.T, tb string) {
	t.Helper()
	rows := func(c *pgx.Conn) []string {
		r, err := c.Query(context.Background(), `SELECT x::text FROM `+tb+` x ORDER BY 1`)
		require.NoError(t, err)
		out, err := pgx.CollectRows(r, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	p := rows(f.pconn)
	require.NotEmpty(t, p)
	require.Equal(t, p, rows(f.tcon), "table %s differs", tb)
}

// terminate ends a backend of the server url points at.
func terminate(t *testing.T, c *pgx.Conn, pid uint32) {
	t.Helper()
	var ok bool
	require.NoError(t, c.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok))
	require.True(t, ok, "backend %d not terminated", pid)
}

// TestReconnect: the worker's provider and target backends are terminated while batches flow
// (the queue's own connections, which hold the subscription's lock) — between batches, one side
// or both, and in the middle of a batch: the service reconnects both, takes the lock again and
// goes on; every row arrives once.
func TestReconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	svc := start(t, f.config(t))
	for _, side := range []string{"provider", "target", "both"} {
		tick := f.write(t, 50)
		pgtest.Eventually(t, time.Minute, "batch applied", func() bool { return f.applied(t) >= tick })
		prov, tgt := svc.Backends("q")
		require.NotZero(t, prov)
		require.NotZero(t, tgt)
		// A batch waits while the backends go away: the worker finds its connections dead
		// at NextBatch (provider) or Position (target).
		f.write(t, 50)
		if side != "target" {
			terminate(t, f.pconn, prov)
		}
		if side != "provider" {
			terminate(t, f.tcon, tgt)
		}
		f.write(t, 50)
		pgtest.Eventually(t, time.Minute, "reconnected after "+side+" terminated", func() bool {
			p, g := svc.Backends("q")
			return p != 0 && g != 0 && (p != prov || side == "target") && (g != tgt || side == "provider")
		})
		f.caughtUp(t)
	}
	// In the middle of a batch: its target transaction waits for t's lock when both
	// backends go; the batch is rolled back and applied again, once, on new connections.
	release := f.blocked(t, svc)
	prov, tgt := svc.Backends("q")
	terminate(t, f.pconn, prov)
	terminate(t, f.tcon, tgt)
	release()
	pgtest.Eventually(t, time.Minute, "reconnected after a batch's backends terminated", func() bool {
		p, g := svc.Backends("q")
		return p != 0 && g != 0 && p != prov && g != tgt
	})
	f.caughtUp(t)
	f.equal(t, "t")
	svc.Stop()
	require.NoError(t, svc.Err())
}

// TestLockRetry: a second service on the same subscription (WaitForLock) waits while the
// first holds it, and takes over when the first stops; no batch is applied twice. Without
// WaitForLock a service refuses to start beside the holder.
func TestLockRetry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var mu sync.Mutex
	appliedBy := map[int64]string{}
	record := func(name string) func(string, change.Batch, int) {
		return func(_ string, b change.Batch, _ int) {
			mu.Lock()
			defer mu.Unlock()
			if other, ok := appliedBy[b.ID]; ok {
				t.Errorf("batch %d applied by %s and again by %s", b.ID, other, name)
			}
			appliedBy[b.ID] = name
		}
	}
	count := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, by := range appliedBy {
			if by == name {
				n++
			}
		}
		return n
	}
	cfgA := f.config(t)
	cfgA.OnBatch = record("first")
	first := start(t, cfgA)

	refused, err := worker.New(f.config(t))
	require.NoError(t, err)
	err = refused.Start(context.Background())
	require.ErrorIs(t, err, apply.ErrLocked)
	require.ErrorContains(t, err, "queue q")
	<-refused.Stopped()

	cfgB := f.config(t)
	cfgB.WaitForLock = true
	cfgB.OnBatch = record("second")
	second := start(t, cfgB)
	for range 3 {
		tick := f.write(t, 20)
		pgtest.Eventually(t, time.Minute, "the first applies", func() bool { return f.applied(t) >= tick })
	}
	// OnBatch runs after the batch's Finish, a moment after the target shows its tick.
	pgtest.Eventually(t, time.Minute, "the first's batches reported", func() bool { return count("first") >= 3 })
	require.Equal(t, 3, count("first"))
	require.Zero(t, count("second"), "the standby applied a batch while the first held the subscription")
	p, g := second.Backends("q")
	require.Zero(t, p+g, "the standby holds no connection")

	first.Stop()
	require.NoError(t, first.Err())
	for range 3 {
		tick := f.write(t, 20)
		pgtest.Eventually(t, time.Minute, "the second takes over", func() bool { return f.applied(t) >= tick })
	}
	pgtest.Eventually(t, time.Minute, "the second's batches reported", func() bool { return count("second") >= 3 })
	require.Equal(t, 3, count("second"))
	f.caughtUp(t)
	f.equal(t, "t")
	var batches int
	require.NoError(t, f.tcon.QueryRow(context.Background(), `SELECT batches_applied FROM skiff.subscription WHERE queue = 'q'`).Scan(&batches))
	mu.Lock()
	require.Len(t, appliedBy, 7, "the six batches and caughtUp's") // an empty tick is a batch too
	mu.Unlock()
	require.Equal(t, 7, batches)
}

// blocked makes the next batch wait on the target: a transaction of the test holds t's lock
// until release; it returns once the worker's target backend waits for it.
func (f *fixture) blocked(t *testing.T, svc *worker.Service) (release func()) {
	t.Helper()
	ctx := context.Background()
	locker := connect(t, f.tgt)
	tx, err := locker.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	f.write(t, 10)
	_, tgt := svc.Backends("q")
	pgtest.Eventually(t, time.Minute, "the batch waits for t's lock", func() bool {
		var waiting bool
		require.NoError(t, f.tcon.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE pid = $1 AND NOT granted)`, int32(tgt)).Scan(&waiting))
		return waiting
	})
	return func() { require.NoError(t, tx.Rollback(ctx)) }
}

// TestStopSoftAndHard: a soft stop (Start's ctx cancelled, then Stop) lets the batch in hand
// commit; StopAndCancel rolls it back and returns while it still waits; the next service
// applies it, once.
func TestStopSoftAndHard(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	svc, err := worker.New(f.config(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, svc.Start(ctx))
	release := f.blocked(t, svc)
	before := f.applied(t)
	cancel() // the soft stop is requested (synchronously) while the batch is in hand
	release()
	<-svc.Stopped()
	svc.Stop() // idempotent
	require.NoError(t, svc.Err())
	require.Greater(t, f.applied(t), before, "the batch in hand was committed")
	f.equal(t, "t")

	svc, err = worker.New(f.config(t))
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	release = f.blocked(t, svc)
	before = f.applied(t)
	_, old := svc.Backends("q")
	svc.StopAndCancel() // returns while the test still holds the lock: the batch was cancelled
	require.NoError(t, svc.Err())
	require.Equal(t, before, f.applied(t), "the batch in hand was rolled back")
	release()
	// The cancelled worker's connection is closed, but its backend may not have exited yet, and
	// it holds the subscription's advisory lock until it has.
	pgtest.Eventually(t, time.Minute, "the cancelled worker's target backend releases its advisory lock", func() bool {
		var held bool
		require.NoError(t, f.tcon.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE pid = $1 AND locktype = 'advisory')`, int32(old)).Scan(&held))
		return !held
	})

	start(t, f.config(t))
	f.caughtUp(t)
	f.equal(t, "t")
}

// TestTableManagerCopiesAddedTable: a table added to the subscription (state copying) while
// the service runs, with writes going on, is copied by the service's table manager, caught
// up and promoted to in-sync, and ends equal row by row.
func TestTableManagerCopiesAddedTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	start(t, f.config(t))
	f.caughtUp(t)

	const added = `CREATE TABLE added (id integer PRIMARY KEY, v text)`
	exec(t, f.pconn, added)
	exec(t, f.tcon, added)
	exec(t, f.pconn, `INSERT INTO added SELECT g, 'before ' || g FROM generate_series(1, 500) g`)
	_, err := queue.AddTable(ctx, f.pconn, "q", queue.TableSpec{Name: "added"})
	require.NoError(t, err)
	tb := change.Table{Schema: "public", Name: "added"}
	_, err = apply.Subscribe(ctx, f.tcon, apply.Subscription{Queue: "q", Consumer: "c1", Provider: "test"},
		[]change.Route{{Source: tb, Dest: tb, State: change.StateCopying}})
	require.NoError(t, err)

	state := func() string {
		var s string
		require.NoError(t, f.tcon.QueryRow(ctx, `SELECT state FROM skiff.table_state WHERE source_name = 'added'`).Scan(&s))
		return s
	}
	id := 500
	pgtest.Eventually(t, 2*time.Minute, "added is copied and in sync", func() bool {
		// Writes go on meanwhile (and ticks: promotion needs an applied tick past the copy).
		id++
		exec(t, f.pconn, `INSERT INTO added VALUES ($1, 'during')`, id)
		exec(t, f.pconn, `UPDATE added SET v = 'updated' WHERE id = $1`, id-250)
		f.write(t, 1)
		return state() == string(change.StateInSync)
	})
	f.caughtUp(t)
	f.equal(t, "added")
	f.equal(t, "t")
}

// TestStartValidates: a configuration without databases or queues, or with a queue twice, is
// refused by New.
func TestStartValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []worker.Config{
		{Target: "host=x", Queues: []worker.Queue{{Name: "q", Consumer: "c"}}},
		{Provider: "host=x", Target: "host=x"},
		{Provider: "host=x", Target: "host=x", Queues: []worker.Queue{{Name: "q", Consumer: "c"}, {Name: "q", Consumer: "d"}}},
		{Provider: "host=x", Target: "host=x", Queues: []worker.Queue{{Name: "q"}}},
	} {
		_, err := worker.New(cfg)
		require.Error(t, err)
	}
	_, err := worker.New(worker.Config{Provider: "host=x", Target: "host=x", Queues: []worker.Queue{{Name: "q", Consumer: "c"}}})
	require.NoError(t, err)
	require.False(t, errors.Is(err, apply.ErrLocked))
}
