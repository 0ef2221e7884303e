package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/skiffdb/skiff/consumer/change"
)

// ErrEventNotInBatch is returned (wrapped) by FindEvent when the batch does not hold the event.
var ErrEventNotInBatch = errors.New("event is not in the batch")

// BatchEvent is one event of an open batch as the queue holds it, and as the worker decodes it.
type BatchEvent struct {
	BatchID int64
	ID      int64
	TxID    int64
	Time    time.Time // now() of the writing transaction
	Op      change.Op
	Retried bool // put back by the retry queue
	// Layout is the event's layout id; Table and Columns are that layout's table and columns.
	Layout  int32
	Table   change.Table
	Columns []string
	// Data is the row as queued (a record literal), OldKey an update's old key when it
	// changed; nil when the event has none.
	Data, OldKey *string
	// Event is the event decoded as the worker decodes it now; Event.Err is set when the row
	// does not decode.
	Event change.Event
}

// FindEvent reads event eventID of open batch batchID of a queue and decodes it as the
// worker's Source would (same layouts, catalog and ticks). conn must not be the connection of
// a running Source.
func FindEvent(ctx context.Context, conn *pgx.Conn, queue string, batchID, eventID int64) (*BatchEvent, error) {
	s, err := NewSource(ctx, conn, SourceConfig{Queue: queue})
	if err != nil {
		return nil, err
	}
	info, err := GetBatchInfo(ctx, conn, batchID)
	if err != nil {
		return nil, err
	}
	b := change.Batch{ID: batchID, Queue: queue, Prev: change.Position{Tick: info.PrevTick}, End: change.Position{Tick: info.Tick}}
	query, err := BatchEventSQL(ctx, conn, batchID)
	if err != nil {
		return nil, err
	}
	if err := s.loadLayouts(ctx, b); err != nil {
		return nil, fmt.Errorf("batch %d: %w", batchID, err)
	}
	var (
		e           = BatchEvent{BatchID: batchID}
		op          string
		data, extra pgtype.Text
		retry       pgtype.Int4
	)
	err = conn.QueryRow(ctx, `SELECT ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra, ev_retry FROM (`+query+`) ev
		WHERE ev_id = $1`, pgx.QueryExecModeDescribeExec, eventID).
		Scan(&e.ID, &e.Time, &e.TxID, &op, &e.Layout, &data, &extra, &retry)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("event %d, batch %d of queue %s: %w", eventID, batchID, queue, ErrEventNotInBatch)
	}
	if err != nil {
		return nil, fmt.Errorf("read event %d of batch %d: %w", eventID, batchID, err)
	}
	if len(op) == 1 {
		e.Op = change.Op(op[0])
	}
	e.Retried = retry.Valid
	if data.Valid {
		e.Data = &data.String
	}
	if extra.Valid {
		e.OldKey = &extra.String
	}
	if l := s.layouts[e.Layout]; l != nil {
		e.Table, e.Columns = l.table, l.columns
	}
	if e.Event, err = s.decode(e.ID, e.TxID, op, e.Layout, data, extra, retry.Valid); err != nil {
		return nil, err
	}
	return &e, nil
}
