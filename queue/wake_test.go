package queue

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// waitingHandler signals when the source logs that it waits for a tick.
type waitingHandler struct {
	slog.Handler
	waiting chan struct{}
}

func (h waitingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h waitingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "no batch ready: waiting for a tick" {
		select {
		case h.waiting <- struct{}{}:
		default:
		}
	}
	return nil
}

// TestNextBatchWokenByTick: a source waiting for a batch is woken by the NOTIFY of a tick, not
// by its poll: with a poll interval of an hour it still returns the batch of a tick made on
// another connection while it waits.
func TestNextBatchWokenByTick(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := newProvider(t, v)
			c := p.conn(t)
			exec(t, c, `CREATE TABLE public.t (id int PRIMARY KEY)`)
			_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
			require.NoError(t, err)
			_, err = RegisterConsumer(ctx, c, "q", "c1")
			require.NoError(t, err)

			h := waitingHandler{Handler: slog.DiscardHandler, waiting: make(chan struct{}, 1)}
			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1", PollInterval: time.Hour, Log: slog.New(h)})
			require.NoError(t, err)
			type result struct {
				b   change.Batch
				err error
			}
			done := make(chan result, 1)
			go func() {
				b, err := src.NextBatch(ctx)
				done <- result{b, err}
			}()
			select {
			case <-h.waiting:
			case r := <-done:
				t.Fatalf("NextBatch returned before any tick: %+v", r)
			case <-ctx.Done():
				t.Fatal("the source never waited for a tick")
			}

			exec(t, c, `INSERT INTO t VALUES (1)`)
			tick, err := ForceTick(ctx, c, "q")
			require.NoError(t, err)
			var b change.Batch
			select {
			case r := <-done:
				require.NoError(t, r.err)
				b = r.b
			case <-ctx.Done():
				t.Fatal("the tick's NOTIFY did not wake the source waiting for a batch")
			}
			require.Equal(t, tick, b.End.Tick, "the batch ends at the tick that woke it")
			var evs []change.Event
			require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
				evs = append(evs, chunk...)
				return nil
			}))
			require.NoError(t, src.Finish(ctx, b))
			require.Equal(t, []string{"1"}, ids(evs))
		})
	}
}

// TestTickerCountsLateEvents: the events of a transaction that was running when the last tick
// was taken are pending once it commits, though their ids are not above the tick's: the queue
// ticks at ticker_max_lag, not at ticker_idle_period (which would leave the tail of a burst of
// writes waiting a minute), and the batch holds them. Then nothing is due any more.
func TestTickerCountsLateEvents(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := setupQueue(t, v, "c1")
			c := p.conn(t)
			require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxLag, "0"))
			require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerIdlePeriod, "1 hour"))
			require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxEvents, "1000000"))

			w := p.conn(t)
			tx, err := w.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO t VALUES (1, 'in flight at the tick')`)
			require.NoError(t, err)
			_, ok, err := Tick(ctx, c, "q")
			require.NoError(t, err)
			require.True(t, ok, "an event pending")
			require.NoError(t, tx.Commit(ctx))

			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1"})
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			require.Empty(t, evs, "the transaction had not committed at the tick")

			late, ok, err := Tick(ctx, c, "q")
			require.NoError(t, err)
			require.True(t, ok, "the committed transaction's event is pending at ticker_max_lag")
			b, evs := readBatch(t, src)
			require.Equal(t, late, b.End.Tick)
			require.Equal(t, []string{"1"}, ids(evs))

			_, ok, err = Tick(ctx, c, "q")
			require.NoError(t, err)
			require.False(t, ok, "nothing pending after the late tick")
		})
	}
}
