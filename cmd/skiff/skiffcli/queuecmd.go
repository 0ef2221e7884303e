package skiffcli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// QueueCmd is `skiff queue`: the queues of a provider and their settings.
type QueueCmd struct {
	Config QueueConfigCmd `cmd:"" help:"Show a queue's ticker and rotation settings, or change them (SETTING=VALUE ...)."`
	Drop   QueueDropCmd   `cmd:"" help:"Drop a queue: its tables' capture triggers and functions, its event tables and sequence (refused while consumers are registered, unless --force)."`
}

// QueueConfigCmd is `skiff queue config`.
type QueueConfigCmd struct {
	DB       string   `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_DB"`
	Queue    string   `help:"Queue (table group)." required:""`
	Settings []string `arg:"" optional:"" name:"setting" help:"SETTING=VALUE to change: ticker_max_events (events pending that make a tick), ticker_max_lag (longest wait of a pending event for its tick, e.g. '500 ms'), ticker_idle_period (tick interval without events), ticker_paused (true stops ticks), rotation_period (how long an event table takes new events before the next is used, e.g. '2 hours'). Without any: show them."`
}

// Run applies the settings given (all in one transaction), then shows the queue's settings.
func (c *QueueConfigCmd) Run(rt *Runtime) error {
	return queueConfig(rt.Ctx, c, rt.Out)
}

func queueConfig(ctx context.Context, c *QueueConfigCmd, out io.Writer) error {
	conn, err := pg.Connect(ctx, c.DB, "skiff queue config")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSchema(ctx, conn, migrate.Provider); err != nil {
		return err
	}
	if len(c.Settings) > 0 {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		for _, s := range c.Settings {
			name, value, ok := strings.Cut(s, "=")
			if !ok || strings.TrimSpace(name) == "" {
				return fmt.Errorf("setting %q: write SETTING=VALUE, e.g. rotation_period='30 minutes'", s)
			}
			if err := queue.SetQueueConfig(ctx, tx, c.Queue, strings.TrimSpace(name), strings.TrimSpace(value)); err != nil {
				return oneLine(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
	}
	infos, err := queue.GetQueueInfo(ctx, conn)
	if err != nil {
		return oneLine(err)
	}
	for _, q := range infos {
		if q.Name != c.Queue {
			continue
		}
		fmt.Fprintf(out, "queue %s\n", q.Name)
		fmt.Fprintf(out, "  %-19s %d\n", queue.SettingTickerMaxEvents, q.TickerMaxEvents)
		fmt.Fprintf(out, "  %-19s %s\n", queue.SettingTickerMaxLag, q.TickerMaxLag)
		fmt.Fprintf(out, "  %-19s %s\n", queue.SettingTickerIdlePeriod, q.TickerIdlePeriod)
		fmt.Fprintf(out, "  %-19s %t\n", queue.SettingTickerPaused, q.TickerPaused)
		fmt.Fprintf(out, "  %-19s %s (epoch %d since %s)\n", queue.SettingRotationPeriod, q.RotationPeriod, q.Epoch,
			q.SwitchTime.UTC().Format(time.RFC3339))
		return nil
	}
	return fmt.Errorf("queue %q: %w", c.Queue, queue.ErrNoQueue)
}
