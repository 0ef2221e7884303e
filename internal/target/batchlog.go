package target

import (
	"context"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Applied is a batch a worker applied: what its transaction records in skiff.subscription
// (the new position) and skiff.batch_log (the audit of exactly-once).
type Applied struct {
	BatchID   int64           // the provider's batch id
	Prev, End change.Position // where the batch starts and ends
	Events    int64           // events written
}

// RecordBatch advances subscription id's position from b.Prev (or from nothing applied) to
// b.End, counts the batch and its events, and clears the last error (and, from version 6, the
// event it named). Run it in the batch's transaction, after LockPosition. It reports false when
// the recorded position was neither: the row was not changed.
func RecordBatch(ctx context.Context, tx pg.DB, v Version, id int32, b Applied) (bool, error) {
	sql, args := recordBatch(v, id, b)
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

func recordBatch(v Version, id int32, b Applied) (string, []any) {
	clearEvent := ""
	if v.HasDeadLetter() {
		clearEvent = ", last_error_event = NULL"
	}
	return `UPDATE skiff.subscription
		SET tick = $2, lsn = $3, last_batch_id = $4, batches_applied = batches_applied + 1,
		    events_applied = events_applied + $5, applied_at = now(), heartbeat = now(),
		    last_error = NULL, last_error_at = NULL` + clearEvent + `
		WHERE sub_id = $1 AND ((tick IS NULL AND lsn IS NULL) OR (tick IS NOT DISTINCT FROM $6 AND lsn IS NOT DISTINCT FROM $7))`,
		[]any{id, nullable(b.End.Tick), nullable(int64(b.End.LSN)), b.BatchID, b.Events, nullable(b.Prev.Tick), nullable(int64(b.Prev.LSN))}
}

// LogBatch adds the batch to skiff.batch_log. Run it in the batch's transaction.
func LogBatch(ctx context.Context, tx pg.DB, id int32, b Applied) error {
	_, err := tx.Exec(ctx, logBatchSQL, logBatchArgs(id, b)...)
	return err
}

const logBatchSQL = `INSERT INTO skiff.batch_log (sub_id, batch_id, prev_tick, end_tick, prev_lsn, end_lsn, events)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`

func logBatchArgs(id int32, b Applied) []any {
	return []any{id, b.BatchID, nullable(b.Prev.Tick), nullable(b.End.Tick),
		nullable(int64(b.Prev.LSN)), nullable(int64(b.End.LSN)), b.Events}
}

// PruneBatchLog deletes the subscription's batch log entries older than 7 days.
func PruneBatchLog(ctx context.Context, tx pg.DB, id int32) error {
	_, err := tx.Exec(ctx, pruneBatchLogSQL, id)
	return err
}

const pruneBatchLogSQL = `DELETE FROM skiff.batch_log WHERE sub_id = $1 AND applied_at < now() - interval '7 days'`
