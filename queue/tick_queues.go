package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
)

// Ticked is a tick a queue got from TickQueues.
type Ticked struct {
	Queue  string
	TickID int64
	// Time is the tick's tick_time: now() of the polling statement's transaction, by the
	// database's clock (the ticker places its next poll by it).
	Time time.Time
}

// TickQueues offers every named queue a tick (skiff.ticker, as Tick does) in one statement
// and one round trip, and returns the queues that ticked. It is the ticker's poll: with many
// queues, one transaction per poll instead of one per queue. A queue that does not exist
// fails the whole statement (ErrNoQueue, wrapped); no queue ticks then. (OFFSET 0 keeps the
// planner from evaluating skiff.ticker twice, in the select list and in the filter.) Its
// commit waits for the WAL flush (durableTick).
func TickQueues(ctx context.Context, db pg.DB, queues []string) ([]Ticked, error) {
	if len(queues) == 0 {
		return nil, nil
	}
	rows, err := db.Query(ctx, `SELECT q, t, now() FROM `+durableTick+`,
		(SELECT q, skiff.ticker(q) AS t FROM unnest($1::text[]) AS q OFFSET 0) s
		WHERE t IS NOT NULL`, queues)
	if err != nil {
		return nil, wrap(err, "tick queues", ErrNoQueue)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Ticked, error) {
		var t Ticked
		err := r.Scan(&t.Queue, &t.TickID, &t.Time)
		return t, err
	})
	if err != nil {
		return nil, wrap(err, fmt.Sprintf("tick %d queues", len(queues)), ErrNoQueue)
	}
	return out, nil
}
