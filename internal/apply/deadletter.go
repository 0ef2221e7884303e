package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// SetAside returns the events of batch b that an operator set aside (skiff event skip wrote
// them to skiff.dead_letter): the worker leaves them out. Call it inside Apply's stream (it
// reads in the batch's transaction, after the subscription row is locked). A target schema
// without skiff.dead_letter (before version 6) has none.
func (a *Applier) SetAside(ctx context.Context, b change.Batch) ([]int64, error) {
	if a.tx == nil {
		return nil, errNoBatch
	}
	if !a.deadLetter {
		return nil, nil
	}
	rows, err := a.tx.Query(ctx, `SELECT event_id FROM skiff.dead_letter WHERE sub_id = $1 AND batch_id = $2 ORDER BY event_id`, a.subID, b.ID)
	if err != nil {
		return nil, fmt.Errorf("read the events set aside for batch %d: %w", b.ID, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read the events set aside for batch %d: %w", b.ID, err)
	}
	return ids, nil
}

// MarkSetAside records, in the batch's transaction, that batch b left these events out: they
// are set aside when the batch commits, and not before.
func (a *Applier) MarkSetAside(ctx context.Context, b change.Batch, ids []int64) error {
	if a.tx == nil {
		return errNoBatch
	}
	if !a.deadLetter || len(ids) == 0 {
		return nil
	}
	tag, err := a.tx.Exec(ctx, `UPDATE skiff.dead_letter SET set_aside_at = now()
		WHERE sub_id = $1 AND batch_id = $2 AND event_id = ANY ($3::bigint[])`, a.subID, b.ID, ids)
	if err != nil {
		return fmt.Errorf("record the events set aside in batch %d: %w", b.ID, err)
	}
	if int(tag.RowsAffected()) != len(ids) {
		return errors.New("record the events set aside: some were not requested")
	}
	return nil
}

// DeadLetter is an event an operator sets aside (skiff event skip), as skiff.dead_letter
// records it.
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

// Errors of SetAsideEvent that callers branch on.
var (
	ErrBatchApplied = errors.New("the batch is already applied on the target")
	ErrSetAside     = errors.New("the event is already set aside")
	ErrNoDeadLetter = errors.New("the target's skiff schema has no dead-letter table (run skiff init target)")
)

// SetAsideEvent records an operator's request to leave an event out of its batch: the worker
// leaves it out of batch d.BatchID, applies the rest, and sets set_aside_at in that batch's
// transaction (exactly once). It fails when the subscription already applied the batch, or the
// event was set aside already. It waits for a batch being applied to end (it locks the
// subscription row, as the worker's batch transaction does).
func SetAsideEvent(ctx context.Context, conn *pgx.Conn, queue, consumer string, d DeadLetter) error {
	if d.Reason == "" {
		return errors.New("set aside an event: a reason is required")
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		has, err := hasDeadLetter(ctx, tx)
		if err != nil {
			return err
		}
		if !has {
			return ErrNoDeadLetter
		}
		var subID int32
		var last *int64
		err = tx.QueryRow(ctx, `SELECT sub_id, last_batch_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`,
			queue, consumer).Scan(&subID, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("no subscription of queue %q for consumer %q on the target", queue, consumer)
		}
		if err != nil {
			return err
		}
		if last != nil && *last == d.BatchID {
			return fmt.Errorf("batch %d: %w", d.BatchID, ErrBatchApplied)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM skiff.dead_letter WHERE sub_id = $1 AND event_id = $2)`,
			subID, d.EventID).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("event %d: %w", d.EventID, ErrSetAside)
		}
		var keyVals []*string
		if d.KeyValues != nil {
			keyVals = textArray(d.KeyValues)
		}
		_, err = tx.Exec(ctx, `INSERT INTO skiff.dead_letter (sub_id, event_id, batch_id, txid, source_schema, source_name, op,
				layout_id, key_columns, key_values, data, old_key, error, reason)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULLIF($13, ''), $14)`,
			subID, d.EventID, d.BatchID, d.TxID, d.Table.Schema, d.Table.Name, string(rune(d.Op)), d.Layout,
			d.KeyColumns, keyVals, d.Data, d.OldKey, d.Error, d.Reason)
		return err
	})
	if err != nil {
		return fmt.Errorf("set aside event %d of %s/%s on the target: %w", d.EventID, queue, consumer, err)
	}
	return nil
}

// LastError returns the subscription's last error and the event it names (0 when none, or
// before target schema version 6).
func LastError(ctx context.Context, conn *pgx.Conn, queue, consumer string) (event int64, msg string, err error) {
	col := "NULL::bigint"
	has, err := hasDeadLetter(ctx, conn)
	if err != nil {
		return 0, "", err
	}
	if has {
		col = "last_error_event"
	}
	var ev *int64
	var m *string
	err = conn.QueryRow(ctx, `SELECT `+col+`, last_error FROM skiff.subscription WHERE queue = $1 AND consumer = $2`, queue, consumer).Scan(&ev, &m)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", fmt.Errorf("no subscription of queue %q for consumer %q on the target", queue, consumer)
	}
	if err != nil {
		return 0, "", fmt.Errorf("read the last error of %s/%s: %w", queue, consumer, err)
	}
	if ev != nil {
		event = *ev
	}
	if m != nil {
		msg = *m
	}
	return event, msg, nil
}

// hasDeadLetter says whether the target schema has skiff.dead_letter (version 6).
func hasDeadLetter(ctx context.Context, q pg.DB) (bool, error) {
	var has bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'skiff' AND c.relname = 'dead_letter')`).Scan(&has)
	if err != nil {
		return false, fmt.Errorf("read the target schema: %w", err)
	}
	return has, nil
}
