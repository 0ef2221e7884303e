package apply

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestFlushAheadOverlaps: once a batch's pending rows reach the writer's limit, their
// statement is sent and the writer goes on merging while the target writes them. Here the
// target table is locked (SHARE) by another session: the COPY waits on the lock, and the
// writer's add returns all the same; the rows land once the lock goes, and the batch commits
// with all of them.
func TestFlushAheadOverlaps(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	ctx := context.Background()
	other, err := pg.Connect(ctx, tg.url, "skiff-test-locker")
	require.NoError(t, err)
	defer other.Close(ctx)

	var pid uint32
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	lockTx, err := other.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = lockTx.Rollback(ctx) }()

	evs := make([]change.Event, 0, 1500)
	for i := range 1500 {
		evs = append(evs, ins(int64(i+1), row(i+1, "x")...))
	}
	tg.id++
	b := change.Batch{ID: tg.id, Queue: "q", Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
	added := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- tg.a.Apply(ctx, b, func(emit func([]change.Event) error) error {
			// The table is loaded (its first event) before the lock is taken: what waits is
			// the flush's COPY, not the catalog.
			if err := emit(evs[:1]); err != nil {
				return err
			}
			if _, err := lockTx.Exec(ctx, `LOCK TABLE t IN SHARE MODE`); err != nil {
				return err
			}
			if err := emit(evs[1:]); err != nil { // 1,000 rows pending: flushed ahead
				return err
			}
			close(added)
			return nil
		})
	}()
	select {
	case <-added:
	case err := <-done:
		t.Fatalf("the batch ended before its rows were added: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("adding the events waited for the target: the full run was not flushed ahead")
	}
	// The COPY sent ahead waits for the lock (the writer's add has returned).
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, other.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE pid = $1 AND NOT granted)`, pid).Scan(&waiting))
		return waiting
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, lockTx.Rollback(ctx))
	require.NoError(t, <-done)
	tg.tick++
	var n int
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Equal(t, 1500, n)
}

// TestFlushAheadFailureNamesTheEvent: a statement sent ahead that fails (a key the target
// already holds) fails the set-based attempt when the writer next waits for it, whatever it
// was doing meanwhile; the batch is replayed row by row, which names the event, and nothing of
// it stays.
func TestFlushAheadFailureNamesTheEvent(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		t.Run("pg"+ver, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, ver, ddl)
			ctx := context.Background()
			_, err := tg.conn.Exec(ctx, `INSERT INTO t VALUES (700, 'there', 0)`)
			require.NoError(t, err)
			var evs []change.Event
			for i := range 2500 {
				evs = append(evs, ins(int64(i+1), row(i+1, "x")...))
			}
			err = tg.apply(t, evs)
			var ae *Error
			require.ErrorAs(t, err, &ae)
			require.Equal(t, int64(700), ae.EventID, "%v", err)
			require.False(t, ae.setBased)
			require.Contains(t, err.Error(), "duplicate key")
			require.Equal(t, []string{"(700,there,0)"}, dump(t, tg.conn, "t"))

			// The Applier goes on: the next batch (the row taken away) applies.
			_, err = tg.conn.Exec(ctx, `DELETE FROM t`)
			require.NoError(t, err)
			require.NoError(t, tg.apply(t, evs))
			var n int
			require.NoError(t, tg.conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
			require.Equal(t, 2500, n)
		})
	}
}

// TestFlushAheadMissingRows: an UPDATE or DELETE sent ahead that finds fewer rows than its
// keys (the target lacks rows) makes the batch apply again statement by statement, which
// warns about the missing rows as ever and remembers their keys; the batch applies, the rows
// the target has are changed.
func TestFlushAheadMissingRows(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	ctx := context.Background()
	var logs bytes.Buffer
	tg.a.log = slog.New(slog.NewTextHandler(&logs, nil))
	_, err := tg.conn.Exec(ctx, `INSERT INTO t SELECT g, 'old', 0 FROM generate_series(1, 3000) g WHERE g NOT IN (11, 20)`)
	require.NoError(t, err)
	var evs []change.Event
	for i := range 3000 {
		if i%2 == 0 {
			evs = append(evs, upd(int64(i+1), nil, row(i+1, "new")...))
		} else {
			evs = append(evs, del(int64(i+1), row(i+1, "")...))
		}
	}
	require.NoError(t, tg.apply(t, evs))
	require.Contains(t, logs.String(), "applying the batch again, statement by statement")
	require.Contains(t, logs.String(), "rows to update were missing on the target")
	require.Contains(t, logs.String(), "rows to delete were missing on the target")
	// Left: the odd ids (updated) but 11, which the target lacked.
	var n, news int
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT count(*), count(CASE WHEN v = 'new' AND id % 2 = 1 THEN 1 END) FROM t`).Scan(&n, &news))
	require.Equal(t, 1499, n)
	require.Equal(t, 1499, news)
}

// TestFlushAheadThenBatchReads: the applier's reads in the batch's transaction (here the
// table states, read again) wait for a flush sent ahead instead of finding the connection busy.
func TestFlushAheadThenBatchReads(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	ctx := context.Background()
	var evs []change.Event
	for i := range 1200 {
		evs = append(evs, ins(int64(i+1), row(i+1, "x")...))
	}
	tg.id++
	b := change.Batch{ID: tg.id, Queue: "q", Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
	require.NoError(t, tg.a.Apply(ctx, b, func(emit func([]change.Event) error) error {
		if _, err := tg.a.Routes(ctx); err != nil { // the first: read with the batch's start
			return err
		}
		if err := emit(evs); err != nil {
			return err
		}
		require.NotNil(t, tg.a.w.inflight, "a flush is sent ahead")
		_, err := tg.a.Routes(ctx) // a query in the transaction
		return err
	}))
	tg.tick++
	var n int
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Equal(t, 1200, n)
}
