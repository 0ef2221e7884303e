package queue

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// readAheadDial opens read-ahead connections to p (the Source closes them: its Close ends the
// read that uses one).
func (p *provider) readAheadDial() func(ctx context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) { return pg.Connect(ctx, p.url, "skiff-test read-ahead") }
}

// TestReadAhead: a source behind its queue reads each next batch ahead on its second
// connection, and what it hands on is what a source without read-ahead reads: the same
// events, in the same order, batch by batch. Transactions open across ticks (short ones, and
// one long enough to be read by itself) are among them. The last batch is not read ahead (no
// tick follows it: a tick cut meanwhile could still be merged into it).
func TestReadAhead(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupQueue(t, v, "ahead", "plain")
			c := p.conn(t)
			open := p.conn(t)
			tick := func() {
				_, err := ForceTick(ctx, c, "q")
				require.NoError(t, err)
			}
			const rounds = 8
			var tx pgx.Tx
			for r := range rounds {
				if tx != nil && r%2 == 0 {
					// A transaction open across a tick (or, the second time, across three
					// with many rows: read by itself).
					_, err := tx.Exec(ctx, `UPDATE t SET v = v || '+open' WHERE id % 7 = 0`)
					require.NoError(t, err)
					require.NoError(t, tx.Commit(ctx))
					tx = nil
				}
				if r == 1 || r == 4 {
					var err error
					tx, err = open.Begin(ctx)
					require.NoError(t, err)
					n := 5
					if r == 4 {
						n = 300
					}
					_, err = tx.Exec(ctx, fmt.Sprintf(`INSERT INTO t SELECT g, 'open %d' FROM generate_series(%d, %d) g`, r, 100000*r, 100000*r+n-1))
					require.NoError(t, err)
				}
				exec(t, c, fmt.Sprintf(`INSERT INTO t SELECT g, 'r%d ' || g FROM generate_series(%d, %d) g`, r, 1000*r, 1000*r+29))
				exec(t, c, fmt.Sprintf(`UPDATE t SET v = v || ' u' WHERE id BETWEEN %d AND %d`, 1000*r, 1000*r+9))
				exec(t, c, fmt.Sprintf(`DELETE FROM t WHERE id = %d`, 1000*r+29))
				tick()
			}
			require.Nil(t, tx)

			ahead, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "ahead", MaxEvents: -1, ChunkSize: 7,
				LongTxEvents: 100, ReadAhead: p.readAheadDial()})
			require.NoError(t, err)
			t.Cleanup(func() { _ = ahead.Close(context.Background()) })
			plain, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "plain", MaxEvents: -1, ChunkSize: 7, LongTxEvents: 100})
			require.NoError(t, err)
			for i := range rounds {
				b1, got := readBatch(t, ahead)
				b2, want := readBatch(t, plain)
				require.Equal(t, b2.Prev, b1.Prev)
				require.Equal(t, b2.End, b1.End)
				require.NotEmpty(t, want, "batch %d", i)
				require.Equal(t, idsOf(want), idsOf(got), "batch %d", i)
				for j := range want {
					require.Equal(t, want[j].Values, got[j].Values, "batch %d, event %d", i, want[j].ID)
					require.Equal(t, want[j].Op, got[j].Op)
				}
			}
			// Batch 1 has nothing before it to be read ahead of; batch 6 starts at the tick
			// where the long transaction runs (read by itself, not ahead); the last one has no
			// tick after it when it is peeked.
			require.Equal(t, rounds-3, ahead.prefetched)
			require.Zero(t, plain.prefetched)
		})
	}
}

// TestReadAheadNotUsedForAnotherRange: a range read ahead that is not the batch NextBatch
// opens is dropped, not handed on: here the consumer's batch is handed out again (a failed
// apply), and the batch after it then comes whole from the queue.
func TestReadAheadNotUsedForAnotherRange(t *testing.T) {
	t.Parallel()
	v := pgtest.Majors()[0]
	ctx := context.Background()
	p := setupQueue(t, v, "ahead")
	c := p.conn(t)
	for r := range 3 {
		exec(t, c, fmt.Sprintf(`INSERT INTO t SELECT g, 'x' FROM generate_series(%d, %d) g`, 100*r, 100*r+19))
		_, err := ForceTick(ctx, c, "q")
		require.NoError(t, err)
	}
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "ahead", MaxEvents: -1, ChunkSize: 5,
		ReadAhead: p.readAheadDial()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	events := func(b change.Batch) []change.Event {
		var evs []change.Event
		require.NoError(t, src.Events(cctx, b, func(chunk []change.Event) error {
			evs = append(evs, chunk...)
			return nil
		}))
		return evs
	}
	b, err := src.NextBatch(cctx)
	require.NoError(t, err)
	first := events(b)
	require.NotNil(t, src.pre, "batch 2 is being read ahead")
	// Not finished: handed out again, read again.
	again, err := src.NextBatch(cctx)
	require.NoError(t, err)
	require.Equal(t, b, again)
	require.Equal(t, idsOf(first), idsOf(events(again)))
	require.Zero(t, src.prefetched)
	require.NoError(t, src.Finish(cctx, again))
	_, second := readBatch(t, src)
	require.Len(t, second, 20)
	require.Equal(t, 1, src.prefetched)
}

// TestReadAheadTooLarge: a batch larger than ReadAheadBytes is not read ahead (the read stops
// and the batch is read when it comes), and nothing of it is lost or repeated.
func TestReadAheadTooLarge(t *testing.T) {
	t.Parallel()
	v := pgtest.Majors()[0]
	ctx := context.Background()
	p := setupQueue(t, v, "ahead")
	c := p.conn(t)
	for r := range 4 {
		exec(t, c, fmt.Sprintf(`INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(%d, %d) g`, 100*r, 100*r+19))
		_, err := ForceTick(ctx, c, "q")
		require.NoError(t, err)
	}
	// 20 events estimated at 96 bytes each fit in 2,500 bytes; with their 100-byte rows they
	// do not: the read itself stops.
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "ahead", MaxEvents: -1, ChunkSize: 5,
		ReadAhead: p.readAheadDial(), ReadAheadBytes: 2500})
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	for r := range 4 {
		_, evs := readBatch(t, src)
		require.Len(t, evs, 20)
		require.Equal(t, strconv.Itoa(100*r), evs[0].Values[0].Text)
	}
	require.Zero(t, src.prefetched)
}
