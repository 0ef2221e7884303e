package target

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// DeadLetter is an event an operator sets aside (skiff event skip), as skiff.dead_letter
// (version 6) records it.
type DeadLetter struct {
	EventID, BatchID, TxID int64
	Table                  change.Table // the captured table on the provider
	Op                     change.Op
	Layout                 int32
	// KeyColumns and KeyValues are the row's key, when the row could be decoded.
	KeyColumns []string
	KeyValues  []change.Value
	// Data is the row as the provider queued it, OldKey an update's old key; nil when none.
	Data, OldKey *string
	Error        string // why the worker could not apply it, "" when unknown
	Reason       string // the operator's reason, required
}

// AddDeadLetter records d, set aside for subscription id (set_aside_at stays NULL until the
// batch that leaves it out commits).
func AddDeadLetter(ctx context.Context, db pg.DB, id int32, d DeadLetter) error {
	var keyVals []*string
	if d.KeyValues != nil {
		keyVals = textArray(d.KeyValues)
	}
	_, err := db.Exec(ctx, `INSERT INTO skiff.dead_letter (sub_id, event_id, batch_id, txid, source_schema, source_name, op,
				layout_id, key_columns, key_values, data, old_key, error, reason)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULLIF($13, ''), $14)`,
		id, d.EventID, d.BatchID, d.TxID, d.Table.Schema, d.Table.Name, string(rune(d.Op)), d.Layout,
		d.KeyColumns, keyVals, d.Data, d.OldKey, d.Error, d.Reason)
	return err
}

// DeadLetterExists reports whether event eventID is set aside for subscription id.
func DeadLetterExists(ctx context.Context, db pg.DB, id int32, eventID int64) (bool, error) {
	var exists bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM skiff.dead_letter WHERE sub_id = $1 AND event_id = $2)`,
		id, eventID).Scan(&exists)
	return exists, err
}

// SetAside returns the events set aside for subscription id in the provider's batch
// batchID, by event id.
func SetAside(ctx context.Context, db pg.DB, id int32, batchID int64) ([]int64, error) {
	rows, err := db.Query(ctx, setAsideSQL, id, batchID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

const setAsideSQL = `SELECT event_id FROM skiff.dead_letter WHERE sub_id = $1 AND batch_id = $2 ORDER BY event_id`

// MarkSetAside records that batch batchID left events ids of subscription id out
// (set_aside_at = now()). It returns the rows changed: fewer than ids when some were not
// set aside for that batch.
func MarkSetAside(ctx context.Context, db pg.DB, id int32, batchID int64, ids []int64) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE skiff.dead_letter SET set_aside_at = now()
		WHERE sub_id = $1 AND batch_id = $2 AND event_id = ANY ($3::bigint[])`, id, batchID, ids)
	return tag.RowsAffected(), err
}
