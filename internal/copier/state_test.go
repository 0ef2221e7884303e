package copier_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestStates walks a table through copying → catching-up → in-sync → copying (resync) with the
// subscription's hooks, and checks the copy lock keeps a second copier away.
func TestStates(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	pc, tc := configs(t, p, tg)
	migratetest.Install(t, tg, migrate.Target)
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE "T" (id int PRIMARY KEY, v text)`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, p).Exec(ctx, `INSERT INTO "T" SELECT g, repeat('v', 200) FROM generate_series(1, 100000) g`)
	require.NoError(t, err)
	tgt, err := pg.ConnectConfig(ctx, tc.Copy())
	require.NoError(t, err)
	defer tgt.Close(ctx)
	tbl := change.Table{Schema: "public", Name: "T"}
	_, err = apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "q", Consumer: "c", Provider: "p", Tick: 1},
		[]change.Route{{Source: tbl, Dest: tbl, State: change.StateCopying}})
	require.NoError(t, err)
	sub := copier.Subscription{Queue: "q", Consumer: "c"}
	toCopy, err := sub.ToCopy(ctx, tgt)
	require.NoError(t, err)
	require.Equal(t, []copier.Table{{Source: tbl, Dest: tbl}}, toCopy)

	// Another process holds the table's copy lock: the copy leaves it alone.
	other := pgtest.Connect(t, tg)
	_, err = other.Exec(ctx, `SELECT pg_advisory_lock($1::int4, $2::int4)`, int32(copier.LockClass), sub.TableLockKey(tbl))
	require.NoError(t, err)
	hooks := sub.Hooks()
	cfg := copier.Config{Provider: pc, Target: tc, LockKey: func(t copier.Table) int32 { return sub.TableLockKey(t.Source) },
		CopyPoint: trigger.CopyPoint}
	cfg.Hooks = hooks
	res, err := copier.Copy(ctx, cfg, toCopy)
	require.ErrorIs(t, err, copier.ErrBusy)
	require.ErrorIs(t, res[0].Err, copier.ErrBusy)
	_, err = other.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)

	var progress atomic.Int64
	cfg.ProgressEvery = time.Millisecond
	cfg.Hooks.Progress = func(ctx context.Context, conn *pgx.Conn, t copier.Table, rows, bytes int64) error {
		progress.Add(1)
		return hooks.Progress(ctx, conn, t, rows, bytes)
	}
	res, err = copier.Copy(ctx, cfg, toCopy)
	require.NoError(t, err)
	require.Positive(t, progress.Load(), "progress recorded while the rows flow")
	var state, snap string
	var rows, bytes int64
	require.NoError(t, tgt.QueryRow(ctx, `SELECT state, copy_snapshot, copy_rows, copy_bytes FROM skiff.table_state`).Scan(&state, &snap, &rows, &bytes))
	require.Equal(t, "catching-up", state)
	require.Equal(t, res[0].Point, snap)
	require.EqualValues(t, 100000, rows)
	require.Equal(t, res[0].Bytes, bytes)

	// Promote asks, for the table's copy point, whether the applied position has passed it:
	// here as the trigger queue answers at a tick of snapshot end.
	s, err := change.ParseSnapshot(res[0].Point)
	require.NoError(t, err)
	passedAt := func(end change.Snapshot) func(string) (bool, error) {
		return func(point string) (bool, error) {
			require.Equal(t, res[0].Point, point)
			return s.CaughtUp(end), nil
		}
	}
	// Not caught up at a tick whose xmin is below the copy's xmax; caught up past it.
	promoted, err := sub.Promote(ctx, tgt, passedAt(change.Snapshot{Xmin: s.Xmax - 1, Xmax: s.Xmax + 5}))
	require.NoError(t, err)
	require.Empty(t, promoted)
	// Caught up, but the worker has not applied the table's copy backlog yet: not in sync.
	_, err = tgt.Exec(ctx, `INSERT INTO skiff.copy_backlog (sub_id, source_schema, source_name, event_id, txid, op, dest_schema, dest_name)
		SELECT sub_id, 'public', 'T', 1, 1, 'T', 'public', 'T' FROM skiff.subscription`)
	require.NoError(t, err)
	promoted, err = sub.Promote(ctx, tgt, passedAt(change.Snapshot{Xmin: s.Xmax, Xmax: s.Xmax + 5}))
	require.NoError(t, err)
	require.Empty(t, promoted, "a table with a copy backlog is not promoted")
	_, err = tgt.Exec(ctx, `DELETE FROM skiff.copy_backlog`)
	require.NoError(t, err)
	promoted, err = sub.Promote(ctx, tgt, passedAt(change.Snapshot{Xmin: s.Xmax, Xmax: s.Xmax + 5}))
	require.NoError(t, err)
	require.Equal(t, []change.Table{tbl}, promoted)

	ok, err := sub.Resync(ctx, tgt, tbl)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = sub.Resync(ctx, tgt, change.Table{Schema: "public", Name: "nope"})
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, tgt.QueryRow(ctx, `SELECT state || coalesce(copy_snapshot, '-') FROM skiff.table_state`).Scan(&state))
	require.Equal(t, "copying-", state)

	// A copy whose table changed state under it is rolled back.
	cfg.Hooks.Point = func(ctx context.Context, conn *pgx.Conn, t copier.Table, point string) error {
		if err := hooks.Point(ctx, conn, t, point); err != nil {
			return err
		}
		_, err := sub.Resync(ctx, tgt, t.Source) // e.g. a second resync: the snapshot is cleared
		return err
	}
	_, err = copier.Copy(ctx, cfg, toCopy)
	require.ErrorIs(t, err, copier.ErrNotCopying)
}

// TestBarrier: a worker batch that read the table's state before a resync (so it applies the
// table's events as in sync) must not write into the destination after the new copy. The
// copy's barrier waits for that batch transaction (it holds the subscription row, as
// internal/apply does), so the stale write lands before the TRUNCATE and is copied over.
func TestBarrier(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc, tc := configs(t, p, tg)
	migratetest.Install(t, tg, migrate.Target)
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'new')`)
		require.NoError(t, err)
	}
	tgt := pgtest.Connect(t, tg)
	tbl := change.Table{Schema: "public", Name: "t"}
	_, err := apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "q", Consumer: "c", Provider: "p", Tick: 1},
		[]change.Route{{Source: tbl, Dest: tbl, State: change.StateInSync}})
	require.NoError(t, err)
	sub := copier.Subscription{Queue: "q", Consumer: "c"}

	// The worker's batch: locks the subscription row, reads the table as in sync...
	batch, err := pgtest.Connect(t, tg).Begin(ctx)
	require.NoError(t, err)
	_, err = batch.Exec(ctx, `SELECT 1 FROM skiff.subscription FOR UPDATE`)
	require.NoError(t, err)
	// ... meanwhile the table is resynced and copied.
	ok, err := sub.Resync(ctx, tgt, tbl)
	require.NoError(t, err)
	require.True(t, ok)
	cfg := copier.Config{Provider: pc, Target: tc, LockKey: func(t copier.Table) int32 { return sub.TableLockKey(t.Source) },
		Hooks: sub.Hooks(), CopyPoint: trigger.CopyPoint}
	done := make(chan error, 1)
	go func() {
		_, err := copier.Copy(ctx, cfg, []copier.Table{{Source: tbl, Dest: tbl}})
		done <- err
	}()
	// The copy waits at its barrier for the batch's row lock.
	watch := pgtest.Connect(t, tg)
	pid := "pid"
	if pg.ServerVersion(watch) < 90200 {
		pid = "procpid"
	}
	// A row lock wait is a transactionid lock, which has no database: find the waiters among
	// this database's backends.
	waitingSQL := `SELECT count(*) FROM pg_catalog.pg_locks WHERE NOT granted
		AND pid IN (SELECT ` + pid + ` FROM pg_catalog.pg_stat_activity WHERE datname = current_database())`
	pgtest.Eventually(t, 30*time.Second, "the copy waits for the batch in flight", func() bool {
		var waiting int
		require.NoError(t, watch.QueryRow(ctx, waitingSQL).Scan(&waiting))
		return waiting > 0
	})
	select {
	case err := <-done:
		t.Fatalf("the copy finished while a batch that read the old state was in flight: %v", err)
	default:
	}
	// The batch writes its (stale) image and commits; the copy then truncates and copies.
	_, err = batch.Exec(ctx, `UPDATE t SET v = 'stale' WHERE id = 1`)
	require.NoError(t, err)
	require.NoError(t, batch.Commit(ctx))
	require.NoError(t, <-done)
	var v string
	require.NoError(t, tgt.QueryRow(ctx, `SELECT v FROM t WHERE id = 1`).Scan(&v))
	require.Equal(t, "new", v)
}

// TestSideConnection: a table's copy with the subscription's hooks opens two target
// connections, the one that writes the rows and one side connection that the barrier, the
// snapshot and every progress record share, not one per hook call.
func TestSideConnection(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	pc, tc := configs(t, p, tg)
	migratetest.Install(t, tg, migrate.Target)
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, p).Exec(ctx, `INSERT INTO t SELECT g, repeat('v', 200) FROM generate_series(1, 100000) g`)
	require.NoError(t, err)
	tgt := pgtest.Connect(t, tg)
	tbl := change.Table{Schema: "public", Name: "t"}
	_, err = apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "q", Consumer: "c", Provider: "p", Tick: 1},
		[]change.Route{{Source: tbl, Dest: tbl, State: change.StateCopying}})
	require.NoError(t, err)

	var connects atomic.Int64
	counted := tc.Copy()
	hook := counted.AfterConnect
	counted.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		connects.Add(1)
		return hook(ctx, c)
	}
	sub := copier.Subscription{Queue: "q", Consumer: "c"}
	hooks := sub.Hooks()
	var progress atomic.Int64
	pids := map[uint32]bool{}
	var mu sync.Mutex
	seen := func(c *pgx.Conn) {
		mu.Lock()
		defer mu.Unlock()
		pids[c.PgConn().PID()] = true
	}
	cfg := copier.Config{Provider: pc, Target: counted, ProgressEvery: time.Millisecond, Hooks: hooks, CopyPoint: trigger.CopyPoint}
	cfg.Hooks.Barrier = func(ctx context.Context, conn *pgx.Conn, t copier.Table) (func() error, error) {
		seen(conn)
		return hooks.Barrier(ctx, conn, t)
	}
	cfg.Hooks.Point = func(ctx context.Context, conn *pgx.Conn, t copier.Table, point string) error {
		seen(conn)
		return hooks.Point(ctx, conn, t, point)
	}
	cfg.Hooks.Progress = func(ctx context.Context, conn *pgx.Conn, t copier.Table, rows, bytes int64) error {
		seen(conn)
		progress.Add(1)
		return hooks.Progress(ctx, conn, t, rows, bytes)
	}
	res, err := copier.Copy(ctx, cfg, []copier.Table{{Source: tbl, Dest: tbl}})
	require.NoError(t, err)
	require.EqualValues(t, 100000, res[0].Rows)
	require.Positive(t, progress.Load(), "progress recorded while the rows flow")
	require.Len(t, pids, 1, "the barrier, the snapshot and the progress share one side connection")
	require.EqualValues(t, 2, connects.Load(), "target connections of one table's copy (after %d progress records)", progress.Load())
	var state string
	require.NoError(t, tgt.QueryRow(ctx, `SELECT state FROM skiff.table_state`).Scan(&state))
	require.Equal(t, "catching-up", state)
	cres, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: []compare.Pair{{Source: tbl, Dest: tbl}}})
	require.NoError(t, err)
	require.NoError(t, cres[0].Err)
	require.True(t, cres[0].Equal, "%+v", cres[0])
}
