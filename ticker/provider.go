package ticker

import (
	"context"
	"time"

	"github.com/skiffdb/skiff/queue"
)

// provider is what the ticker asks of one provider database, over the one connection of its
// database loop (which also holds the advisory lock). The queue package implements it; the
// ticker issues no queue SQL of its own.
type provider interface {
	// Installed reports whether the database has skiff's provider schema.
	Installed(ctx context.Context) (bool, error)
	// Queues lists the database's queues with their pending events and tick age.
	Queues(ctx context.Context) ([]queueInfo, error)
	// Tick offers each named queue a tick (skiff.ticker) and returns those that ticked. A
	// queue whose thresholds say no tick is due is left alone.
	Tick(ctx context.Context, queues []string) ([]tickResult, error)
	// RotateTables rotates the queue's event tables when due; true when it rotated.
	RotateTables(ctx context.Context, queue string) (bool, error)
	// RetryEvents moves due retry events back into their queues and returns how many.
	RetryEvents(ctx context.Context) (int, error)
	// CleanupTicks deletes the queue's ticks no consumer needs and returns how many.
	CleanupTicks(ctx context.Context, queue string) (int, error)
	// TablesToVacuum names the tables VACUUM should visit, as quoted SQL identifiers.
	TablesToVacuum(ctx context.Context) ([]string, error)
	// Vacuum runs VACUUM on one table named by TablesToVacuum (outside any transaction).
	Vacuum(ctx context.Context, table string) error
	// AdoptChildren gives the partitions and inheritance children of tables captured with
	// their children the capture triggers they lack, and takes them back from tables that left
	// (queue.AdoptChildren): one entry per table it acted on.
	AdoptChildren(ctx context.Context) ([]queue.Adopted, error)
	// CaptureGaps lists captured tables whose capture triggers no longer record every
	// operation (queue.CaptureGaps).
	CaptureGaps(ctx context.Context) ([]queue.CaptureGap, error)
}

// queueInfo is one queue as the ticker sees it.
type queueInfo struct {
	Name    string
	Pending int64 // events written since the queue's last tick
	// SinceTick is the time since the queue's last tick by the database's clock; negative
	// when the queue has never ticked.
	SinceTick time.Duration
	// MaxLag is the queue's ticker_max_lag: a tick is due once the last one is this old and
	// events are pending.
	MaxLag time.Duration
}

// tickResult is a tick a queue got.
type tickResult struct {
	Queue  string
	TickID int64
	Time   time.Time // the tick's time by the database's clock (now() of the poll)
}
