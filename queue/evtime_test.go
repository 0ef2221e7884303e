package queue

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// TestBatchReadCost measures what reading a batch costs the provider's backend (CPU time from
// schedstat) with ev_time's text and without it (withoutEvTime), alternating, the median of
// each:
//
//	SKIFF_BENCH=1 go test ./queue/ -run TestBatchReadCost -v -count=1
func TestBatchReadCost(t *testing.T) {
	if os.Getenv("SKIFF_BENCH") == "" {
		t.Skip("a measurement, not a test: set SKIFF_BENCH=1")
	}
	ctx := context.Background()
	c, src := capturedT(t)
	const events = 500_000
	for i := 0; i < events; i += 100_000 {
		exec(t, c, `INSERT INTO t SELECT g, md5(g::text) || repeat('y', 150) FROM generate_series($1::int + 1, $1::int + 100000) g`, i)
	}
	_, err := ForceTick(ctx, c, "q")
	require.NoError(t, err)
	b, err := src.NextBatch(ctx)
	require.NoError(t, err)
	full, err := BatchEventSQL(ctx, c, b.ID)
	require.NoError(t, err)
	slim := withoutEvTime(full)
	require.NotEqual(t, full, slim)
	cpu := backendNanos(t, c)
	read := func(q string) time.Duration {
		start := cpu()
		rows, err := c.Query(ctx, q, pgx.QueryExecModeExec)
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			n++
		}
		require.NoError(t, rows.Err())
		require.Equal(t, events, n)
		return time.Duration(cpu() - start)
	}
	read(full) // hint bits, cache
	var withTime, without []time.Duration
	for range 7 {
		withTime = append(withTime, read(full))
		without = append(without, read(slim), read(slim))
		withTime = append(withTime, read(full))
	}
	slices.Sort(withTime)
	slices.Sort(without)
	a, z := withTime[len(withTime)/2], without[len(without)/2]
	t.Logf("provider backend CPU reading %d events: with ev_time %v (%.2f µs/event), without %v (%.2f µs/event): %.1f %% less",
		events, a, float64(a.Microseconds())/events, z, float64(z.Microseconds())/events, 100*(1-float64(z)/float64(a)))
}
