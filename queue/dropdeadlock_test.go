package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestTickerYieldsToDropQueue: the ticker's poll reads a queue's event sequence, then locks
// the queue's row to tick it; skiff.drop_queue locks the row, then drops the sequence. A
// drop that starts between the two must not deadlock with the poll (a ticker running beside
// `skiff queue drop` failed with 40P01 now and then): the poll skips the tick, the drop waits
// for the poll's transaction and succeeds.
func TestTickerYieldsToDropQueue(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := setupQueue(t, v)
			admin := p.conn(t)
			exec(t, admin, `SELECT skiff.set_queue_config('q', 'ticker_idle_period', '0')`)

			poll := p.conn(t)
			tx, err := poll.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
			// The poll's first look at the queue: its event sequence is read (and locked for
			// the transaction).
			_, err = tx.Exec(ctx, `SELECT skiff.event_seq_value(queue_id) FROM skiff.queue WHERE queue_name = 'q'`)
			require.NoError(t, err)

			dropper := p.conn(t)
			dropPID := dropper.PgConn().PID()
			dropped := make(chan error, 1)
			go func() {
				_, err := DropQueue(ctx, dropper, "q", true)
				dropped <- err
			}()
			pgtest.Eventually(t, time.Minute, "drop_queue waits for the poll's lock on the sequence", func() bool {
				var waiting bool
				require.NoError(t, admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
					WHERE pid = $1 AND NOT granted)`, dropPID).Scan(&waiting))
				return waiting
			})

			var tick *int64
			require.NoError(t, tx.QueryRow(ctx, `SELECT skiff.ticker('q')`).Scan(&tick), "the poll ticks the queue being dropped")
			require.Nil(t, tick, "no tick of a queue being dropped")
			require.NoError(t, tx.Commit(ctx))
			require.NoError(t, <-dropped)
		})
	}
}
