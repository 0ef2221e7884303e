package queue

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBatchQueryLeavesOutEvTime: the queries the provider's batch_event_sql and peek_batch
// make begin as withoutEvTime expects, so that the reader's rows carry NULL instead of
// ev_time's text (a timestamptz_out per event on the provider), and the rest of each row is
// unchanged. Should the provider's SQL change its form, this fails rather than the saving
// going away unseen.
func TestBatchQueryLeavesOutEvTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, src := capturedT(t)

	check := func(q string) {
		t.Helper()
		require.True(t, strings.HasPrefix(q, evTimePrefix), "%.200s", q)
		slim := withoutEvTime(q)
		require.NotEqual(t, q, slim)
		var full, lean []string
		for _, x := range []struct {
			sql string
			out *[]string
		}{{q, &full}, {slim, &lean}} {
			rows, err := c.Query(ctx, `SELECT ev_id, ev_time IS NULL, ev_txid, ev_op, ev_layout, ev_data FROM (`+x.sql+`) e`)
			require.NoError(t, err)
			for rows.Next() {
				var id, txid int64
				var timeNull bool
				var op, data string
				var layout int32
				require.NoError(t, rows.Scan(&id, &timeNull, &txid, &op, &layout, &data))
				require.Equal(t, x.out == &lean, timeNull)
				*x.out = append(*x.out, strings.Join([]string{op, data}, " "))
			}
			require.NoError(t, rows.Err())
		}
		require.NotEmpty(t, full)
		require.Equal(t, full, lean)
	}

	exec(t, c, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
	_, err := ForceTick(ctx, c, "q")
	require.NoError(t, err)
	b, err := src.NextBatch(ctx)
	require.NoError(t, err)
	q, err := BatchEventSQL(ctx, c, b.ID)
	require.NoError(t, err)
	check(q)

	exec(t, c, `UPDATE t SET v = 'c' WHERE id = 1`)
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	exec(t, c, `INSERT INTO t VALUES (3, 'd')`)
	_, err = ForceTick(ctx, c, "q") // a tick after the range: peek_batch answers for it
	require.NoError(t, err)
	var peek *string
	require.NoError(t, c.QueryRow(ctx, `SELECT o_sql FROM skiff.peek_batch('q', 'c', $1, 1)`, b.End.Tick).Scan(&peek))
	require.NotNil(t, peek)
	check(*peek)
}
