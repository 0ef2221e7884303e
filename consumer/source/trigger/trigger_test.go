package trigger_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestCopyHolds(t *testing.T) {
	t.Parallel()
	holds, err := trigger.CopyHolds("100:110:103,105")
	require.NoError(t, err)
	for txid, want := range map[int64]bool{1: true, 99: true, 100: true, 103: false, 104: true, 105: false, 109: true, 110: false, 200: false} {
		require.Equal(t, want, holds(&change.Event{ID: 1, TxID: txid}), "txid %d", txid)
	}
	require.False(t, holds(&change.Event{ID: 1}), "an event of an unknown transaction is applied")
	empty, err := trigger.CopyHolds("7:7:")
	require.NoError(t, err)
	require.True(t, empty(&change.Event{TxID: 6}))
	require.False(t, empty(&change.Event{TxID: 7}))
	for _, bad := range []string{"", "1:2", "a:2:", "5:4:", "1:5:7", "1:5:x", "holds:1"} {
		_, err := trigger.CopyHolds(bad)
		require.Error(t, err, bad)
	}
}

// TestCopyPointMatchesServer: the copy point CopyPoint takes in a copy's transaction, read by
// CopyHolds, says of every txid what txid_visible_in_snapshot says, with transactions in
// progress around a committed one.
func TestCopyPointMatchesServer(t *testing.T) {
	t.Parallel()
	url := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	var open []pgx.Tx
	var running []int64
	var committed int64
	for i := 0; i < 3; i++ {
		c := pgtest.Connect(t, url)
		tx, err := c.Begin(ctx)
		require.NoError(t, err)
		var id int64
		require.NoError(t, tx.QueryRow(ctx, "SELECT txid_current()").Scan(&id))
		open = append(open, tx)
		running = append(running, id)
		if i == 0 { // a committed transaction between running ones
			c2 := pgtest.Connect(t, url)
			require.NoError(t, c2.QueryRow(ctx, "SELECT txid_current()").Scan(&committed))
		}
	}
	conn := pgtest.Connect(t, url)
	copyTx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	point, err := trigger.CopyPoint(ctx, copyTx)
	require.NoError(t, err)
	require.NoError(t, copyTx.Rollback(ctx))
	holds, err := trigger.CopyHolds(point)
	require.NoError(t, err)
	for _, id := range running {
		require.False(t, holds(&change.Event{TxID: id}), "running %d in %s", id, point)
	}
	require.True(t, holds(&change.Event{TxID: committed}), "committed %d in %s", committed, point)
	snap, err := change.ParseSnapshot(point)
	require.NoError(t, err)
	for txid := snap.Xmin - 2; txid <= snap.Xmax+1; txid++ {
		var want bool
		require.NoError(t, conn.QueryRow(ctx, "SELECT txid_visible_in_snapshot($1, $2::text::txid_snapshot)", txid, point).Scan(&want))
		require.Equal(t, want, holds(&change.Event{TxID: txid}), "txid %d in %s", txid, point)
	}
	for _, tx := range open {
		require.NoError(t, tx.Rollback(ctx))
	}
}

// TestPassed: a copy is passed once the applied tick's snapshot has every transaction the copy
// could contain finished — not while one that was running at the copy is still open.
func TestPassed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := migratetest.NewDB(t, "", migrate.Provider)
	conn := pgtest.Connect(t, url)
	_, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY)`)
	require.NoError(t, err)
	_, err = queue.AddTable(ctx, conn, "q", queue.TableSpec{Name: "t"})
	require.NoError(t, err)

	// A writer is running when the copy takes its point.
	writer, err := pgtest.Connect(t, url).Begin(ctx)
	require.NoError(t, err)
	_, err = writer.Exec(ctx, `INSERT INTO t VALUES (1)`)
	require.NoError(t, err)
	// A later transaction commits: the writer is below the copy's xmax, among those the
	// copy could contain (in its xip: it does not).
	_, err = conn.Exec(ctx, `INSERT INTO t VALUES (2)`)
	require.NoError(t, err)
	copyTx, err := pgtest.Connect(t, url).BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	point, err := trigger.CopyPoint(ctx, copyTx)
	require.NoError(t, err)
	require.NoError(t, copyTx.Rollback(ctx))

	passed := func(applied change.Position) bool {
		t.Helper()
		ok, err := trigger.Passed(ctx, conn, "q", point, applied)
		require.NoError(t, err)
		return ok
	}
	require.False(t, passed(change.Position{}), "nothing applied")
	require.False(t, passed(change.Position{Tick: 1 << 40}), "a tick that does not exist")
	before, err := queue.ForceTick(ctx, conn, "q")
	require.NoError(t, err)
	require.False(t, passed(change.Position{Tick: before}), "the writer the copy does not see is still running")
	require.NoError(t, writer.Commit(ctx))
	// The copy's snapshot is the cluster's: other tests' transactions running then count
	// too, so under load a tick or two more may be needed before all of them have finished.
	var after int64
	pgtest.Eventually(t, time.Minute, "a tick after the writer's commit passes the copy", func() bool {
		after, err = queue.ForceTick(ctx, conn, "q")
		require.NoError(t, err)
		return passed(change.Position{Tick: after})
	})
	_, err = trigger.Passed(ctx, conn, "q", "not a snapshot", change.Position{Tick: after})
	require.Error(t, err)
}
