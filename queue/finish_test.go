package queue

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestSourceFinishDoesNotWaitForFlush: Source.Finish commits without waiting for its WAL to
// be flushed (synchronous_commit off for that one transaction): a finish lost in a provider
// crash only hands the batch out again, which the worker finishes without applying (the
// target's position says it is applied), so the wait would only add an fsync to every
// batch's cycle. The server is made to hold every synchronous commit forever (a synchronous
// standby that never connects): Finish still returns, and the consumer has moved on.
func TestSourceFinishDoesNotWaitForFlush(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := pgtest.New(t, pgtest.Options{Version: pgtest.DefaultVersion()})
	url := srv.NewDB(t)
	migratetest.Install(t, url, migrate.Provider)
	p := &provider{url: url}
	c := p.conn(t)
	exec(t, c, `CREATE TABLE public.t (id int PRIMARY KEY)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c1")
	require.NoError(t, err)
	exec(t, c, `INSERT INTO t VALUES (1)`)
	tick, err := ForceTick(ctx, c, "q")
	require.NoError(t, err)

	srcConn := p.conn(t)
	src, err := NewSource(ctx, srcConn, SourceConfig{Queue: "q", Consumer: "c1"})
	require.NoError(t, err)
	b, err := src.NextBatch(ctx)
	require.NoError(t, err)
	var evs []change.Event
	require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
		evs = append(evs, chunk...)
		return nil
	}))
	require.Len(t, evs, 1)
	require.Equal(t, tick, b.End.Tick)

	// From now on a synchronous commit waits for a standby that does not exist. (Synchronous
	// standbys arrived in 9.1, ALTER SYSTEM in 9.4: before, nothing makes a commit wait.)
	if pg.ServerVersion(c) < 90400 {
		t.Skip("no ALTER SYSTEM before 9.4 to name a synchronous standby")
	}
	exec(t, c, `ALTER SYSTEM SET synchronous_standby_names = 'skiff_no_such_standby'`)
	exec(t, c, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		cc, err := pg.Connect(context.Background(), url, "skiff-test")
		if err != nil {
			return
		}
		defer cc.Close(context.Background())
		_, _ = cc.Exec(context.Background(), `SET synchronous_commit = local`)
		_, _ = cc.Exec(context.Background(), `ALTER SYSTEM RESET synchronous_standby_names`)
		_, _ = cc.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})
	require.Eventually(t, func() bool {
		var names string
		err := srcConn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&names)
		return err == nil && names == "skiff_no_such_standby"
	}, 30*time.Second, 20*time.Millisecond, "the source's session never saw the new setting")

	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	require.NoError(t, src.Finish(fctx, b))
	require.NoError(t, fctx.Err(), "Finish waited for a synchronous commit")

	var last int64
	require.NoError(t, c.QueryRow(ctx, `SELECT sub_last_tick FROM skiff.consumer WHERE sub_consumer = 'c1'`).Scan(&last))
	require.Equal(t, tick, last)
	var open *int64
	require.NoError(t, c.QueryRow(ctx, `SELECT sub_batch FROM skiff.consumer WHERE sub_consumer = 'c1'`).Scan(&open))
	require.Nil(t, open)
}

// countingConn counts the writes a client makes: pgx writes each batch of messages it sends
// before waiting for the server once, so writes are round trips.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// countingConnect opens a connection to url whose socket writes (one per round trip the
// client starts) are counted in the returned counter.
func countingConnect(ctx context.Context, t *testing.T, url string) (*pgx.Conn, *atomic.Int64) {
	t.Helper()
	writes := new(atomic.Int64)
	cfg, err := pg.ParseConfig(url, "skiff-test")
	require.NoError(t, err)
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: nc, writes: writes}, nil
	}
	sc, err := pg.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sc.Close(context.Background()) })
	return sc, writes
}

// TestBatchRoundTrips: reading a small batch costs the source a known number of round trips
// to the provider, each of which waits for a CPU on a loaded machine (the lag path): NextBatch
// two (next_batch; then the batch's description with what Events needs read ahead: its long
// transactions, its query, new layouts, the catalog's fingerprint), Events one (the events)
// and Finish one. (The first batch reads them one by one: the provider's schema may predate
// batch_long_txids.)
func TestBatchRoundTrips(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE public.t (id int PRIMARY KEY, v text)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c1")
	require.NoError(t, err)

	sc, writes := countingConnect(ctx, t, p.url)
	src, err := NewSource(ctx, sc, SourceConfig{Queue: "q", Consumer: "c1"})
	require.NoError(t, err)

	for i := 1; i <= 3; i++ {
		exec(t, c, `INSERT INTO t VALUES ($1, 'x')`, i)
		_, err = ForceTick(ctx, c, "q")
		require.NoError(t, err)
		before := writes.Load()
		b, err := src.NextBatch(ctx)
		require.NoError(t, err)
		next := writes.Load()
		var evs []change.Event
		require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
			evs = append(evs, chunk...)
			return nil
		}))
		events := writes.Load()
		require.NoError(t, src.Finish(ctx, b))
		require.Len(t, evs, 1)
		require.Equal(t, strconv.Itoa(i), evs[0].Values[0].Text)
		if i < 3 {
			continue // the first batch also LISTENs and loads the layouts; statements are prepared
		}
		require.Equal(t, int64(2), next-before, "NextBatch's round trips")
		require.Equal(t, int64(1), events-next, "Events' round trips")
		require.Equal(t, int64(1), writes.Load()-events, "Finish's round trips")
	}
}

// TestNextBatchIgnoresStaleNotifications: the ticks' notifications received while a source
// was busy do not wake its later waits for nothing. Ten ticks come while the source reads and
// finishes one batch (merged, they are one batch); the next NextBatch, which waits for a new
// tick, asks the provider for a batch only twice (once before waiting, once after the new
// tick's notification) instead of once per stale notification.
func TestNextBatchIgnoresStaleNotifications(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE public.t (id int PRIMARY KEY)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c1")
	require.NoError(t, err)

	sc, writes := countingConnect(ctx, t, p.url)
	h := waitingHandler{Handler: slog.DiscardHandler, waiting: make(chan struct{}, 1)}
	src, err := NewSource(ctx, sc, SourceConfig{Queue: "q", Consumer: "c1", PollInterval: time.Hour, Log: slog.New(h)})
	require.NoError(t, err)

	exec(t, c, `INSERT INTO t VALUES (0)`)
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	b, err := src.NextBatch(ctx) // LISTENs
	require.NoError(t, err)
	for i := 1; i <= 10; i++ {
		exec(t, c, `INSERT INTO t VALUES ($1)`, i)
		_, err = ForceTick(ctx, c, "q")
		require.NoError(t, err)
	}
	require.NoError(t, src.Events(ctx, b, func([]change.Event) error { return nil }))
	require.NoError(t, src.Finish(ctx, b))
	_, evs := readBatch(t, src) // the ten ticks, merged
	require.Len(t, evs, 10)
	select {
	case <-h.waiting: // readBatch's NextBatch did not wait
	default:
	}

	before := writes.Load()
	done := make(chan error, 1)
	go func() {
		_, err := src.NextBatch(ctx)
		done <- err
	}()
	select {
	case <-h.waiting:
	case err := <-done:
		t.Fatalf("NextBatch returned before the tick: %v", err)
	case <-ctx.Done():
		t.Fatal("the source never waited for a tick")
	}
	exec(t, c, `INSERT INTO t VALUES (11)`)
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("NextBatch never returned the new tick's batch")
	}
	// next_batch, the wait, next_batch, the batch's description read ahead.
	require.Equal(t, int64(3), writes.Load()-before, "NextBatch's round trips")
}
