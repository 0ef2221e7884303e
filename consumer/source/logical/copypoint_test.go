package logical

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// copyRows reads the table's ids in the copy transaction.
func copyRows(t *testing.T, tx pgx.Tx) []int {
	t.Helper()
	rows, err := tx.Query(context.Background(), `SELECT id FROM t ORDER BY id`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return ids
}

// TestCopyPoint: a slot's exported snapshot sees the rows committed before its consistent
// point and the stream from it holds only the transactions after; a temporary slot made
// later (a table added to a running queue) gives a copy point whose predicate says which of
// the main stream's events the copy holds, and when the stream has passed it.
func TestCopyPoint(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "t"}
		p.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
		p.publish(t, tbl)
		p.exec(t, `INSERT INTO t VALUES (1), (2), (3)`)

		sl, err := CreateSlot(ctx, p.url, "", p.slot, plugin, false)
		require.NoError(t, err)
		require.NotEmpty(t, sl.SnapshotName)
		require.NotZero(t, sl.ConsistentPoint)
		txA := p.writeTx(t, `INSERT INTO t VALUES (4)`) // after the consistent point
		copyConn := pgtest.Connect(t, p.url)
		tx, point, err := sl.BeginCopy(ctx, copyConn)
		require.NoError(t, err)
		require.Equal(t, []int{1, 2, 3}, copyRows(t, tx), "the snapshot sees what committed before the slot")
		require.NoError(t, tx.Rollback(ctx))
		require.NoError(t, sl.Close(ctx))

		// A temporary slot of its own for a table added later: its snapshot sees A. Before 10
		// there are none: CreateSlot says so (the copier takes CopyPointNow there).
		tmp, err := CreateSlot(ctx, p.url, "", p.slot+"_tmp", plugin, true)
		if p.ver < 100000 {
			require.ErrorContains(t, err, "temporary slots need PostgreSQL 10 or later")
			tmp, err = CreateSlot(ctx, p.url, "", p.slot+"_tmp", plugin, false)
			t.Cleanup(func() { _ = DropSlot(context.Background(), p.conn, p.slot+"_tmp") })
		}
		require.NoError(t, err)
		tx, point2, err := tmp.BeginCopy(ctx, copyConn)
		require.NoError(t, err)
		require.Equal(t, []int{1, 2, 3, 4}, copyRows(t, tx))
		require.NoError(t, tx.Rollback(ctx))
		require.NoError(t, tmp.Close(ctx))
		if p.ver >= 100000 {
			pgtest.Eventually(t, 30*time.Second, "the temporary slot is gone with its connection", func() bool {
				_, ok, err := ReadSlot(ctx, p.conn, p.slot+"_tmp")
				require.NoError(t, err)
				return !ok // the server drops it as the walsender exits, after Close returned
			})
		}
		txB := p.writeTx(t, `INSERT INTO t VALUES (5)`)

		s := p.source(t, func(c *Config) { c.MaxEvents = 1 })
		require.NoError(t, s.Resume(ctx, change.Position{}))
		bA, evA := next(t, s)
		finish(t, s, bA)
		bB, evB := next(t, s)
		finish(t, s, bB)
		require.Len(t, evA, 1)
		require.Len(t, evB, 1)
		require.Equal(t, txA, evA[0].TxID, "the stream from the consistent point starts after it")
		require.Equal(t, txB, evB[0].TxID)
		require.Equal(t, change.Text("4"), evA[0].Values[0])

		holds, err := s.CopyHolds(point)
		require.NoError(t, err)
		require.False(t, holds(&evA[0]))
		require.False(t, holds(&evB[0]))
		require.True(t, s.Passed(point, change.Position{LSN: uint64(sl.ConsistentPoint)}))
		require.False(t, s.Passed(point, change.Position{}))

		holds2, err := s.CopyHolds(point2)
		require.NoError(t, err)
		require.True(t, holds2(&evA[0]), "the later copy holds A")
		require.False(t, holds2(&evB[0]), "but not B")
		require.False(t, s.Passed(point2, bA.End), "after A the stream has not passed the later copy")
		require.True(t, s.Passed(point2, bB.End))

		_, err = s.CopyHolds("nonsense")
		require.Error(t, err)
		require.False(t, s.Passed("nonsense", bB.End))
	})
}
