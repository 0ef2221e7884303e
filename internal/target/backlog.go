package target

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// AppendBacklog appends events of source table src to subscription id's copy backlog
// (skiff.copy_backlog, version 3) with COPY, in order: as given (after handlers, ev.Table is
// the table they are written to).
func AppendBacklog(ctx context.Context, db pg.DB, id int32, src change.Table, evs []change.Event) error {
	rows := make([][]any, len(evs))
	for i := range evs {
		ev := &evs[i]
		rows[i] = []any{id, src.Schema, src.Name, ev.ID, ev.TxID, string(rune(ev.Op)), ev.Table.Schema, ev.Table.Name,
			ev.Columns, textArray(ev.Values), ev.Key, textArray(ev.OldKey)}
	}
	_, err := db.CopyFrom(ctx, pgx.Identifier{"skiff", "copy_backlog"},
		[]string{"sub_id", "source_schema", "source_name", "event_id", "txid", "op", "dest_schema", "dest_name",
			"columns", "vals", "key_columns", "old_key"}, pgx.CopyFromRows(rows))
	return err
}

// Backlogged lists the source tables of subscription id that have a copy backlog.
func Backlogged(ctx context.Context, db pg.DB, id int32) ([]change.Table, error) {
	rows, err := db.Query(ctx, backloggedSQL, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanTable)
}

const backloggedSQL = `SELECT ts.source_schema, ts.source_name FROM skiff.table_state ts
		WHERE ts.sub_id = $1 AND EXISTS (SELECT 1 FROM skiff.copy_backlog b
			WHERE b.sub_id = ts.sub_id AND b.source_schema = ts.source_schema AND b.source_name = ts.source_name)
		ORDER BY 1, 2`

// BacklogEntry is a row of skiff.copy_backlog: an event as the worker would have written it.
type BacklogEntry struct {
	Seq   int64 // replay order
	Event change.Event
}

// BadOpError is a backlog row whose op is not one character.
type BadOpError struct {
	EventID int64
	Op      string
}

func (e *BadOpError) Error() string { return fmt.Sprintf("event %d: bad op %q", e.EventID, e.Op) }

// ReadBacklog reads at most limit entries of the copy backlog of source table src of
// subscription id, in order, those after seq after (-1 for the first). The events' Columns
// and Key are slices of their own (a caller sharing them by layout interns them). A row whose
// op is not one character is a *BadOpError.
func ReadBacklog(ctx context.Context, db pg.DB, id int32, src change.Table, after int64, limit int) ([]BacklogEntry, error) {
	rows, err := db.Query(ctx, `SELECT seq, event_id, txid, op, dest_schema, dest_name, columns, vals, key_columns, old_key
			FROM skiff.copy_backlog WHERE sub_id = $1 AND source_schema = $2 AND source_name = $3 AND seq > $4
			ORDER BY seq LIMIT `+fmt.Sprint(limit), id, src.Schema, src.Name, after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BacklogEntry
	for rows.Next() {
		var e BacklogEntry
		ev := &e.Event
		var op string
		var vals, oldKey []*string
		if err := rows.Scan(&e.Seq, &ev.ID, &ev.TxID, &op, &ev.Table.Schema, &ev.Table.Name, &ev.Columns, &vals, &ev.Key, &oldKey); err != nil {
			return nil, err
		}
		if len(op) != 1 {
			return nil, &BadOpError{EventID: ev.ID, Op: op}
		}
		ev.Op = change.Op(op[0])
		ev.Values, ev.OldKey = values(vals), values(oldKey)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteBacklog deletes the copy backlog of source table src of subscription id.
func DeleteBacklog(ctx context.Context, db pg.DB, id int32, src change.Table) error {
	_, err := db.Exec(ctx, `DELETE FROM skiff.copy_backlog WHERE sub_id = $1 AND source_schema = $2 AND source_name = $3`,
		id, src.Schema, src.Name)
	return err
}

// DeleteBacklogOf deletes the copy backlog of source table src of subscription k.
func DeleteBacklogOf(ctx context.Context, db pg.DB, k Key, src change.Table) error {
	_, err := db.Exec(ctx, `DELETE FROM skiff.copy_backlog b
		WHERE b.sub_id = (SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2)
		  AND b.source_schema = $3 AND b.source_name = $4`, k.Queue, k.Consumer, src.Schema, src.Name)
	return err
}

// textArray is values as a text[] parameter: nil elements for NULLs.
func textArray(vals []change.Value) []*string {
	if vals == nil {
		return nil
	}
	out := make([]*string, len(vals))
	for i := range vals {
		if vals[i].Valid {
			out[i] = &vals[i].Text
		}
	}
	return out
}

func values(vs []*string) []change.Value {
	if vs == nil {
		return nil
	}
	out := make([]change.Value, len(vs))
	for i, v := range vs {
		if v != nil {
			out[i] = change.Text(*v)
		}
	}
	return out
}
