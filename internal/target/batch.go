package target

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
)

// Batcher is what sends a pgx batch: a *pgx.Conn or a pgx.Tx.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// BatchStart is what a batch's transaction reads before its events (StartBatch).
type BatchStart struct {
	// Position is the subscription's recorded position, its row locked FOR UPDATE
	// (LockPosition).
	Position change.Position
	// Routes are the subscription's tables (Routes).
	Routes []change.Route
	// Backlogged are the source tables with a copy backlog (Backlogged); nil before version 3.
	Backlogged []change.Table
	// SetAside are the events of the batch an operator set aside (SetAside); nil before
	// version 6.
	SetAside []int64
}

// StartBatch runs, in tx and in one round trip (a pgx batch, one statement each), the
// statements of pre (the caller's settings, e.g. SET LOCAL; no arguments), then LockPosition,
// Routes, Backlogged (version 3+) and SetAside of batchID (version 6+) of subscription id. The
// lock comes first among the reads: the others see the table states as the batch writes them
// (a copy changes them under the same lock). pgx.ErrNoRows: no such subscription.
func StartBatch(ctx context.Context, tx Batcher, v Version, id int32, batchID int64, pre ...string) (BatchStart, error) {
	var out BatchStart
	b := &pgx.Batch{}
	for _, sql := range pre {
		b.Queue(sql)
	}
	b.Queue(lockPositionSQL, id).QueryRow(func(row pgx.Row) error {
		var tick, lsn *int64
		if err := row.Scan(&tick, &lsn); err != nil {
			return err
		}
		out.Position = toPos(tick, lsn)
		return nil
	})
	b.Queue(routesSQL, id).Query(func(rows pgx.Rows) error {
		var err error
		out.Routes, err = scanRoutes(rows)
		return err
	})
	if v.HasBacklog() {
		b.Queue(backloggedSQL, id).Query(func(rows pgx.Rows) error {
			var err error
			out.Backlogged, err = pgx.CollectRows(rows, scanTable)
			return err
		})
	}
	if v.HasDeadLetter() {
		b.Queue(setAsideSQL, id, batchID).Query(func(rows pgx.Rows) error {
			var err error
			out.SetAside, err = pgx.CollectRows(rows, pgx.RowTo[int64])
			return err
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return BatchStart{}, err
	}
	return out, nil
}

// BatchEnd is what a batch's transaction records after its events (EndBatch).
type BatchEnd struct {
	Applied
	// Conflicts and LastConflict: the merge conflicts the batch settled (CountConflicts);
	// nothing is counted when Conflicts is 0.
	Conflicts    int64
	LastConflict string
	// Prune deletes the batch log entries older than 7 days (PruneBatchLog).
	Prune bool
}

// EndBatch runs, in tx and in one round trip (a pgx batch): CountConflicts (when there were
// any), RecordBatch, LogBatch and PruneBatchLog (when asked) for subscription id. recorded is
// RecordBatch's answer: false when the recorded position was neither e.Prev nor nothing (the
// row was not changed; the caller must roll back).
func EndBatch(ctx context.Context, tx Batcher, v Version, id int32, e BatchEnd) (recorded bool, err error) {
	b := &pgx.Batch{}
	if e.Conflicts > 0 {
		b.Queue(countConflictsSQL, id, e.Conflicts, e.LastConflict)
	}
	sql, args := recordBatch(v, id, e.Applied)
	b.Queue(sql, args...).Exec(func(tag pgconn.CommandTag) error {
		recorded = tag.RowsAffected() == 1
		return nil
	})
	b.Queue(logBatchSQL, logBatchArgs(id, e.Applied)...)
	if e.Prune {
		b.Queue(pruneBatchLogSQL, id)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	return recorded, nil
}
