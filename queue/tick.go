package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
)

// TickSnapshot returns the txid snapshot (text form "xmin:xmax:xip,…") recorded by a tick of
// a queue; ok is false when the tick does not exist (never made, or cleaned up). The initial
// copy uses it to tell when a catching-up table is in sync.
func TickSnapshot(ctx context.Context, db pg.DB, queue string, tick int64) (snapshot string, ok bool, err error) {
	err = db.QueryRow(ctx, `SELECT tick_snapshot::text FROM skiff.tick WHERE queue_id = skiff.queue_id($1) AND tick_id = $2`,
		queue, tick).Scan(&snapshot)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, wrap(err, fmt.Sprintf("snapshot of tick %d of queue %s", tick, queue), ErrNoQueue)
	}
	return snapshot, true, nil
}
