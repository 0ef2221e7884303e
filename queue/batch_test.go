package queue

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// setupQueue makes table public.t (id bigint primary key, v text) captured by queue q, with
// the given consumers registered.
func setupQueue(t *testing.T, version string, consumers ...string) *provider {
	t.Helper()
	return prepareQueue(t, newProvider(t, version), consumers...)
}

// prepareQueue creates table t captured by queue q in p, and registers the consumers.
func prepareQueue(t *testing.T, p *provider, consumers ...string) *provider {
	t.Helper()
	ctx := context.Background()
	c := p.conn(t)
	exec(t, c, `CREATE TABLE public.t (id bigint PRIMARY KEY, v text)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	for _, name := range consumers {
		_, err := RegisterConsumer(ctx, c, "q", name)
		require.NoError(t, err)
	}
	return p
}

func ids(evs []change.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Values[0].Text
	}
	return out
}

// TestTransactionLandsWholeInNextBatch: a transaction open across a tick is in no batch until
// it commits, then wholly in the batch of the next tick.
func TestTransactionLandsWholeInNextBatch(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupQueue(t, v, "c1")
			c := p.conn(t)
			long := p.conn(t)
			tx, err := long.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO t VALUES (1, 'long'), (2, 'long')`)
			require.NoError(t, err)
			exec(t, c, `INSERT INTO t VALUES (10, 'short')`)
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO t VALUES (3, 'long')`)
			require.NoError(t, err)
			exec(t, c, `INSERT INTO t VALUES (11, 'short')`)
			require.NoError(t, tx.Commit(ctx))
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)

			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1", MaxEvents: -1})
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			require.Equal(t, []string{"10"}, ids(evs))
			_, evs = readBatch(t, src)
			// In event id order.
			require.Equal(t, []string{"1", "2", "3", "11"}, ids(evs))
			for _, e := range evs {
				if e.Values[1].Text == "long" {
					require.Equal(t, evs[0].TxID, e.TxID)
				}
			}
		})
	}
}

// TestUnfinishedBatchIsReturnedAgain: a batch read and not finished comes back, to a new
// Source on a new connection, with the same id, ticks and events.
func TestUnfinishedBatchIsReturnedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := setupQueue(t, "", "c1")
	c := p.conn(t)
	exec(t, c, `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g`)
	_, err := ForceTick(ctx, c, "q")
	require.NoError(t, err)
	exec(t, c, `INSERT INTO t VALUES (1000, 'later')`)

	src1, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1", ChunkSize: 10})
	require.NoError(t, err)
	b1, err := src1.NextBatch(ctx)
	require.NoError(t, err)
	var first []change.Event
	stop := fmt.Errorf("crash")
	err = src1.Events(ctx, b1, func(chunk []change.Event) error {
		first = append(first, chunk...)
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Len(t, first, 10)
	_, err = ForceTick(ctx, c, "q") // a new tick must not widen the open batch

	src2, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1"})
	require.NoError(t, err)
	require.NoError(t, err)
	b2, err := src2.NextBatch(ctx)
	require.NoError(t, err)
	require.Equal(t, b1, b2)
	var all []change.Event
	require.NoError(t, src2.Events(ctx, b2, func(chunk []change.Event) error {
		require.LessOrEqual(t, len(chunk), 5000)
		all = append(all, chunk...)
		return nil
	}))
	require.Len(t, all, 100)
	require.Equal(t, first, all[:10])
	require.NoError(t, src2.Finish(ctx, b2))
	require.NoError(t, src2.Finish(ctx, b2), "finishing twice is harmless")

	b3, evs := readBatch(t, src2)
	require.Equal(t, b2.End, b3.Prev)
	require.Equal(t, []string{"1000"}, ids(evs))
}

// collector reads batches of one consumer into a map of row id → times seen.
type collector struct {
	mu   sync.Mutex
	seen map[int64]int
	pos  int64 // end tick of the last finished batch
}

func (cl *collector) batch(ctx context.Context, src *Source) error {
	b, err := src.NextBatch(ctx)
	if err != nil {
		return err
	}
	var got []int64
	err = src.Events(ctx, b, func(chunk []change.Event) error {
		for _, e := range chunk {
			if e.Op != change.Insert {
				return fmt.Errorf("unexpected %s event %d", e.Op, e.ID)
			}
			id, err := strconv.ParseInt(e.Values[0].Text, 10, 64)
			if err != nil {
				return err
			}
			got = append(got, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := src.Finish(ctx, b); err != nil {
		return err
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, id := range got {
		cl.seen[id]++
	}
	cl.pos = b.End.Tick
	return nil
}

func (cl *collector) position() int64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.pos
}

// writeLoad inserts rows from+1..n: in autocommit, in multi-row transactions and in transactions
// that stay open for a while, from several connections at once.
func writeLoad(ctx context.Context, p *provider, t *testing.T, n, writers, from int) error {
	g, ctx := errgroup.WithContext(ctx)
	for w := 0; w < writers; w++ {
		conn := p.conn(t)
		g.Go(func() error {
			for i := from + w + 1; i <= n; {
				switch i % 3 {
				case 0:
					if _, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1, 'a')`, int64(i)); err != nil {
						return err
					}
					i += writers
				default:
					err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
						for k := 0; k < 7 && i <= n; k++ {
							if _, err := tx.Exec(ctx, `INSERT INTO t VALUES ($1, 'b')`, int64(i)); err != nil {
								return err
							}
							i += writers
						}
						return nil
					})
					if err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// TestConsumersSeeEveryEventOnce: two consumers of one queue, reading while writers and a
// ticker run, each see every row exactly once.
func TestConsumersSeeEveryEventOnce(t *testing.T) {
	t.Parallel()
	runExactlyOnce(t, false)
}

// TestRotationUnderWrites: the event tables rotate as fast as the safety rule lets them while
// writers, a long transaction, a fast and a slow consumer run: nothing is lost or repeated.
// (It found the xmax bound of schema version 1: TestRotationWaitsForRunningWriter shows that
// case deterministically.)
func TestRotationUnderWrites(t *testing.T) {
	t.Parallel()
	runExactlyOnce(t, true)
}

func runExactlyOnce(t *testing.T, rotate bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var p *provider
	if rotate {
		// txid snapshots are cluster-wide: other tests' transactions on a shared server would
		// hold rotation back, so this test has a server of its own.
		url := pgtest.New(t, pgtest.Options{}).NewDB(t)
		migratetest.Install(t, url, migrate.Provider)
		p = prepareQueue(t, &provider{url: url}, "fast", "slow")
	} else {
		p = setupQueue(t, "", "fast", "slow")
	}
	admin := p.conn(t)
	if rotate {
		require.NoError(t, SetQueueConfig(ctx, admin, "q", SettingRotationPeriod, "0"))
	}
	const n = 6000

	// A transaction open across many ticks and rotation attempts, committed half-way.
	long := p.conn(t)
	longTx, err := long.Begin(ctx)
	require.NoError(t, err)
	_, err = longTx.Exec(ctx, `INSERT INTO t VALUES ($1, 'long')`, int64(n+1))
	require.NoError(t, err)
	var longOpen atomic.Bool
	longOpen.Store(true)

	fast, slow := &collector{seen: map[int64]int{}}, &collector{seen: map[int64]int{}}
	srcFast, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "fast", MaxEvents: 300, PollInterval: 5 * time.Millisecond})
	require.NoError(t, err)
	srcSlow, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "slow", MaxEvents: 1000, PollInterval: 5 * time.Millisecond})
	require.NoError(t, err)

	// The ticker: ticks and rotation attempts until the consumers are done.
	stopTicker := make(chan struct{})
	tickerErr := make(chan error, 1)
	var maxEpochWhileLong int64
	ticker := p.conn(t)
	go func() {
		tickerErr <- func() error {
			for {
				if _, err := ForceTick(ctx, ticker, "q"); err != nil {
					return err
				}
				if rotate {
					open := longOpen.Load()
					if _, err := RotateTables(ctx, ticker, "q"); err != nil {
						return err
					}
					if open {
						info, err := GetQueueInfo(ctx, ticker)
						if err != nil {
							return err
						}
						maxEpochWhileLong = max(maxEpochWhileLong, info[0].Epoch)
					}
				}
				select {
				case <-stopTicker:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(3 * time.Millisecond):
				}
			}
		}()
	}()

	var final int64
	finalSet := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // writers; the long transaction commits half-way; then a last tick
		if err := writeLoad(gctx, p, t, n/2, 3, 0); err != nil {
			return err
		}
		if err := longTx.Commit(gctx); err != nil {
			return err
		}
		longOpen.Store(false)
		if err := writeLoad(gctx, p, t, n, 3, n/2); err != nil {
			return err
		}
		id, err := ForceTick(gctx, admin, "q")
		final = id
		close(finalSet)
		return err
	})
	consume := func(cl *collector, src *Source, pause time.Duration) func() error {
		return func() error {
			for {
				select {
				case <-finalSet:
					if cl.position() >= final {
						return nil
					}
				default:
				}
				if err := cl.batch(gctx, src); err != nil {
					return err
				}
				if pause > 0 {
					select {
					case <-gctx.Done():
						return gctx.Err()
					case <-time.After(pause):
					}
				}
			}
		}
	}
	g.Go(consume(fast, srcFast, 0))
	g.Go(consume(slow, srcSlow, 50*time.Millisecond))
	require.NoError(t, g.Wait())
	close(stopTicker)
	require.NoError(t, <-tickerErr)

	for name, cl := range map[string]*collector{"fast": fast, "slow": slow} {
		var missing, repeated []int64
		for id := int64(1); id <= n+1; id++ {
			switch cl.seen[id] {
			case 0:
				missing = append(missing, id)
			case 1:
			default:
				repeated = append(repeated, id)
			}
		}
		require.Empty(t, missing, "rows consumer %s never saw", name)
		require.Empty(t, repeated, "rows consumer %s saw more than once", name)
		require.Len(t, cl.seen, n+1, "consumer %s saw rows that were not written", name)
	}
	if rotate {
		info, err := GetQueueInfo(ctx, admin)
		require.NoError(t, err)
		t.Logf("epoch %d at the end, at most %d while the long transaction was open", info[0].Epoch, maxEpochWhileLong)
		require.GreaterOrEqual(t, info[0].Epoch, int64(4), "rotations must have truncated tables")
		// The long transaction wrote in epoch 0: table 0 may not be reused (epoch 3) before
		// it ends and both consumers are past it.
		require.LessOrEqual(t, maxEpochWhileLong, int64(2))
	}
}

// TestNextBatchWakesOnTick: a waiting Source wakes up on the tick's NOTIFY, long before its
// poll interval, and a cancelled wait returns the context's error.
func TestNextBatchWakesOnTick(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := setupQueue(t, "", "c")
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c", PollInterval: time.Hour})
	require.NoError(t, err)
	type result struct {
		b   change.Batch
		err error
	}
	got := make(chan result, 1)
	go func() {
		b, err := src.NextBatch(ctx)
		got <- result{b, err}
	}()
	c := p.conn(t)
	// Tick once the source waits: it has polled next_batch and found nothing.
	waiting := `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND state = 'idle' AND query LIKE '%skiff.next_batch%'`
	if pg.ServerVersion(c) < 90200 {
		// No last query of an idle backend before 9.2: wait for any idle backend that
		// listens (pg_listener before 9.0), a weaker sign that the source waits.
		waiting = `SELECT count(*) FROM pg_stat_activity a WHERE a.datname = current_database() AND a.current_query = '<IDLE>'`
		if pg.ServerVersion(c) < 90000 {
			waiting += ` AND a.procpid IN (SELECT listenerpid FROM pg_catalog.pg_listener)`
		}
	}
	pgtest.Eventually(t, 10*time.Second, "source waiting", func() bool {
		var n int
		require.NoError(t, c.QueryRow(ctx, waiting).Scan(&n))
		return n >= 1
	})
	exec(t, c, `INSERT INTO t VALUES (1, 'x')`)
	start := time.Now()
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	var r result
	select {
	case r = <-got:
		require.NoError(t, r.err)
		require.Less(t, time.Since(start), 5*time.Second)
	case <-ctx.Done():
		t.Fatal("NextBatch did not wake up on the tick")
	}
	require.NoError(t, src.Finish(ctx, r.b))

	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		b, err := src.NextBatch(cctx)
		got <- result{b, err}
	}()
	ccancel()
	r = <-got
	require.ErrorIs(t, r.err, context.Canceled)
}

// TestRotationWaitsForRunningWriter: a writer still open across two rotations holds back the
// rotation that would reuse its event table, even when its xid is above the xmax of every
// snapshot taken at those rotations. (A snapshot's xmax is the latest *completed* xid + 1: a
// transaction that got its xid earlier and is still running can be above it. Recording that
// xmax as the switch's bound let the third rotation truncate the writer's table while it
// was open; its commit then landed in a truncated table and no consumer saw it.)
func TestRotationWaitsForRunningWriter(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A server of its own: no other test's transactions complete between the writer's xid and
	// the rotations, which is what puts the writer's xid above the snapshots' xmax.
	url := pgtest.New(t, pgtest.Options{}).NewDB(t)
	migratetest.Install(t, url, migrate.Provider)
	p := prepareQueue(t, &provider{url: url}, "c")
	admin := p.conn(t)
	require.NoError(t, SetQueueConfig(ctx, admin, "q", SettingRotationPeriod, "0"))
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)

	w := p.conn(t)
	wtx, err := w.Begin(ctx)
	require.NoError(t, err)
	_, err = wtx.Exec(ctx, `INSERT INTO t VALUES (1, 'w')`) // an event in table 0 (epoch 0)
	require.NoError(t, err)
	for i := 1; i <= 2; i++ { // epochs 1 and 2 reuse tables 1 and 2, which held nothing
		rotated, err := RotateTables(ctx, admin, "q")
		require.NoError(t, err)
		require.True(t, rotated, "rotation %d", i)
	}
	// The consumer finishes a tick taken while the writer runs.
	_, err = ForceTick(ctx, admin, "q")
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	require.Empty(t, evs)

	// The next rotation would reuse table 0. It must decline while the writer could still
	// commit into it (a wrong decision shows as a TRUNCATE waiting for the writer's lock).
	rotator := p.conn(t)
	type result struct {
		rotated bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		r, err := RotateTables(ctx, rotator, "q")
		done <- result{r, err}
	}()
	var res result
	returned := false
	pgtest.Eventually(t, 30*time.Second, "rotation returns or waits for the writer", func() bool {
		select {
		case res = <-done:
			returned = true
			return true
		default:
		}
		var waiting int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&waiting))
		return waiting > 0
	})
	require.NoError(t, wtx.Commit(ctx))
	if !returned {
		res = <-done
	}
	require.NoError(t, res.err)
	require.False(t, res.rotated, "rotation reused the event table of a running writer")

	_, err = ForceTick(ctx, admin, "q")
	require.NoError(t, err)
	_, evs = readBatch(t, src)
	require.Equal(t, []string{"1"}, ids(evs), "the writer's row after its commit")
}

// TestRotationAfterRolledBackSwitch: setval is not transactional. A switch whose transaction
// rolls back (the ticker killed or cancelled) leaves the sequence in the new epoch and writers
// filling the next table; the next rotation must take that switch as made, not truncate the
// table they fill.
func TestRotationAfterRolledBackSwitch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := setupQueue(t, "", "c")
	admin := p.conn(t)
	require.NoError(t, SetQueueConfig(ctx, admin, "q", SettingRotationPeriod, "0"))
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)

	tx, err := admin.Begin(ctx)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRow(ctx, `SELECT skiff.maint_rotate_tables('q')`).Scan(&n))
	require.Equal(t, 1, n)
	require.NoError(t, tx.Rollback(ctx))

	exec(t, admin, `INSERT INTO t VALUES (1, 'after the rolled-back switch')`)
	var table int
	require.NoError(t, admin.QueryRow(ctx, `SELECT (skiff.event_seq_value(skiff.queue_id('q')) >> 40) % 3`).Scan(&table))
	require.Equal(t, 1, table, "the writer is on the rolled-back switch's epoch")

	rotated, err := RotateTables(ctx, admin, "q")
	require.NoError(t, err)
	require.True(t, rotated, "the switch the sequence shows is recorded")
	info, err := GetQueueInfo(ctx, admin)
	require.NoError(t, err)
	require.Equal(t, int64(1), info[0].Epoch)

	_, err = ForceTick(ctx, admin, "q")
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	require.Equal(t, []string{"1"}, ids(evs))
}
