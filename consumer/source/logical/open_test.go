package logical

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestOpenBatch: with pgoutput, a transaction that reaches MaxEvents is handed out in an open
// batch, with the whole transactions received before it, before its commit arrives; Events
// reads the rest from the stream. The batch's End lies past the start of the transaction's
// commit record, and before its end; the next batch starts there. An Events whose receiver
// fails part way, and one whose stream breaks part way, leave the batch to be read again:
// replayed from the spool and the stream (the same events), or after Resume at its start
// (the same batch, the same events). A source resumed at its End never sends the transaction
// again. Replayed, the batches equal the provider's table.
func TestOpenBatch(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", "15"} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v, PGOutput)
			tbl := change.Table{Schema: "public", Name: "t"}
			p.exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
			p.publish(t, tbl)
			p.createSlot(t)
			const big = 6000
			small := p.writeTx(t, `INSERT INTO t VALUES (-1, 'a'), (-2, 'b'), (-3, 'c')`)
			var before, after LSN
			require.NoError(t, p.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&before))
			// Rows of about 250 bytes: what follows the events read before the walsender is
			// killed (over 1.5 MB) is far more than the socket's buffer and the stream's queue
			// (1,024 messages) hold, so the source cannot have received it all.
			bigTx := p.writeTx(t, fmt.Sprintf(`INSERT INTO t SELECT g, 'x' || g || repeat('y', 240) FROM generate_series(1, %d) g`, big),
				`UPDATE t SET v = v || '!' WHERE id % 2 = 0`)
			require.NoError(t, p.conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&after))
			last := p.writeTx(t, `DELETE FROM t WHERE id = -2`, `UPDATE t SET v = 'last' WHERE id = 7`)
			wantEvents := 3 + big + big/2 + 1 // the UPDATE takes -2 too

			// MaxWait is long: the small transaction waits in the batch for the large one.
			s := p.source(t, func(c *Config) {
				c.Conn = p.socketConn(t) // see socketConn: the kill below must cut the transaction
				c.MaxEvents, c.ChunkSize, c.MaxWait = 1000, 250, time.Minute
			})
			require.NoError(t, s.Resume(ctx, change.Position{}))
			b, err := s.NextBatch(ctx)
			require.NoError(t, err)
			require.True(t, s.open, "handed out before the large transaction's commit")
			require.Less(t, s.held.Len(), wantEvents)
			require.Greater(t, LSN(b.End.LSN), before)
			require.Less(t, LSN(b.End.LSN), after)
			require.Equal(t, int64(b.End.LSN), b.ID)
			require.False(t, b.EndTime.IsZero())

			read := func(fail int) ([]change.Event, error) {
				var out []change.Event
				chunks := 0
				err := s.Events(ctx, b, func(evs []change.Event) error {
					if chunks++; chunks == fail {
						return errors.New("the target failed")
					}
					for _, ev := range evs {
						ev.Values = slices.Clone(ev.Values)
						ev.OldKey = slices.Clone(ev.OldKey)
						out = append(out, ev)
					}
					return nil
				})
				return out, err
			}
			// The receiver fails on the third chunk: the batch stays open, to be read again.
			_, err = read(3)
			require.ErrorContains(t, err, "the target failed")
			require.True(t, s.open)
			// The stream breaks while the rest of the transaction is still to come.
			gone := p.terminateWalsender(t)
			_, err = read(0)
			require.Error(t, err)
			gone()
			require.True(t, s.open)
			require.ErrorContains(t, s.Finish(ctx, b), "not received whole")

			// The worker rolls back and resumes at the batch's start: the same batch.
			require.NoError(t, s.Resume(ctx, b.Prev))
			again, err := s.NextBatch(ctx)
			require.NoError(t, err)
			require.Equal(t, b, again)
			// The receiver fails again, further on; the next Events replays and goes on.
			_, err = read(12)
			require.ErrorContains(t, err, "the target failed")
			require.True(t, s.open)
			first, err := read(0)
			require.NoError(t, err)
			require.False(t, s.open)
			require.Equal(t, wantEvents, len(first))
			require.Equal(t, small, first[0].TxID)
			require.Equal(t, bigTx, first[len(first)-1].TxID)
			for i, ev := range first {
				require.Equal(t, int64(i+1), ev.ID, "events numbered in order")
			}
			replayed, err := read(0)
			require.NoError(t, err)
			require.Equal(t, first, replayed, "the whole batch replays from the spool")
			finish(t, s, b)

			// A source resumed at the open batch's End (a worker restarted after it) starts
			// after its transaction, with the next batch.
			require.NoError(t, s.Close(ctx))
			s2 := p.source(t, func(c *Config) { c.MaxEvents = 1000; c.ChunkSize = 250 })
			require.NoError(t, s2.Resume(ctx, b.End))
			b2, rest := next(t, s2)
			require.Equal(t, b.End, b2.Prev, "the next batch starts at the open batch's End")
			require.Len(t, rest, 2)
			require.Equal(t, last, rest[0].TxID)
			finish(t, s2, b2)

			m := memTable{}
			replay(t, tbl, append(first, rest...), m)
			require.Equal(t, p.providerRows(t, tbl, []string{"id", "v"}), m.dump([]string{"id", "v"}))
		})
	}
}

// commitDecoder decodes every message as the commit of the transaction committing at final.
type commitDecoder struct{ final LSN }

func (d commitDecoder) decode(context.Context, wal, func(change.Event) error) (decoded, error) {
	return decoded{commit: true, final: d.final, end: d.final + 10}, nil
}
func (commitDecoder) reset() {}

// TestOpenBatchFailRun: a slot whose stream fails again and again inside a large transaction
// becomes stuck: cutting the open batch again does not end the run of failures (only the
// transaction's commit, received whole, does).
func TestOpenBatchFailRun(t *testing.T) {
	s, err := New(Config{Slot: "s", Plugin: TestDecoding, Queue: "q"})
	require.NoError(t, err)
	defer s.Close(context.Background())
	s.dec = commitDecoder{final: 100}
	fail := &pgconn.PgError{Code: "XX000", Message: "could not decode"}
	for i := 1; i <= StuckAfter; i++ {
		s.inTx, s.txFinal, s.txEvents = true, 100, s.cfg.MaxEvents
		s.cutOpen()
		err := s.failed(fail, false) // the stream fails inside the transaction (openBroken)
		if i < StuckAfter {
			require.NoError(t, err, "try %d", i)
		} else {
			var stuck *SlotStuckError
			require.ErrorAs(t, err, &stuck)
		}
		// The worker rolls back and resumes at the batch's start (Resume, without the stream).
		s.pending = nil
		require.NoError(t, s.held.Reset())
		s.spare, s.held = s.held, nil
		s.resetFill()
	}
	s.inTx, s.txFinal = true, 100
	s.cutOpen()
	_, _, err = s.handle(context.Background(), wal{})
	require.NoError(t, err)
	require.False(t, s.open)
	require.Zero(t, s.fails.n, "the transaction came whole: the run of failures ended")
}
