package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
)

// backlogPage is how many backlog rows DrainBacklog reads at a time.
const backlogPage = 5000

var errNoBatch = errors.New("backlog: only inside Apply's stream")

// AppendBacklog appends the events of source table src (in state copying: its copy holds the
// destination's lock) to the table's backlog on the target (skiff.copy_backlog), in order and
// in the batch's transaction, instead of writing them to the destination. Call it only inside
// Apply's stream. The events are stored as given (after handlers: ev.Table is the table they
// are written to).
func (a *Applier) AppendBacklog(ctx context.Context, src change.Table, evs []change.Event) error {
	if a.tx == nil {
		return errNoBatch
	}
	if len(evs) == 0 {
		return nil
	}
	rows := make([][]any, len(evs))
	for i := range evs {
		ev := &evs[i]
		rows[i] = []any{a.subID, src.Schema, src.Name, ev.ID, ev.TxID, string(rune(ev.Op)), ev.Table.Schema, ev.Table.Name,
			ev.Columns, textArray(ev.Values), ev.Key, textArray(ev.OldKey)}
	}
	_, err := a.tx.CopyFrom(ctx, pgx.Identifier{"skiff", "copy_backlog"},
		[]string{"sub_id", "source_schema", "source_name", "event_id", "txid", "op", "dest_schema", "dest_name",
			"columns", "vals", "key_columns", "old_key"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("append %d events of %s to its copy backlog: %w", len(evs), src, err)
	}
	return nil
}

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

// Backlogged lists the subscribed source tables that have a copy backlog. Call it inside
// Apply's stream (it reads in the batch's transaction).
func (a *Applier) Backlogged(ctx context.Context) ([]change.Table, error) {
	if a.tx == nil {
		return nil, errNoBatch
	}
	rows, err := a.tx.Query(ctx, `SELECT ts.source_schema, ts.source_name FROM skiff.table_state ts
		WHERE ts.sub_id = $1 AND EXISTS (SELECT 1 FROM skiff.copy_backlog b
			WHERE b.sub_id = ts.sub_id AND b.source_schema = ts.source_schema AND b.source_name = ts.source_name)
		ORDER BY 1, 2`, a.subID)
	if err != nil {
		return nil, fmt.Errorf("tables with a copy backlog: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Table, error) {
		var t change.Table
		err := r.Scan(&t.Schema, &t.Name)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("tables with a copy backlog: %w", err)
	}
	return out, nil
}

// DrainBacklog reads the copy backlog of source table src in order, a page at a time, hands
// each page's events to fn (which may write in the batch's transaction: no query is open
// while it runs), then deletes the backlog. Call it inside Apply's stream: the backlog is
// applied and deleted in the batch's transaction.
func (a *Applier) DrainBacklog(ctx context.Context, src change.Table, fn func([]change.Event) error) (int, error) {
	if a.tx == nil {
		return 0, errNoBatch
	}
	// Events of one layout share their Columns and Key slices, as a source's do.
	layouts := map[string][]string{}
	intern := func(s []string) []string {
		if s == nil {
			return nil
		}
		k := fmt.Sprintf("%q", s)
		if v, ok := layouts[k]; ok {
			return v
		}
		layouts[k] = s
		return s
	}
	var n int
	last := int64(-1)
	for {
		rows, err := a.tx.Query(ctx, `SELECT seq, event_id, txid, op, dest_schema, dest_name, columns, vals, key_columns, old_key
			FROM skiff.copy_backlog WHERE sub_id = $1 AND source_schema = $2 AND source_name = $3 AND seq > $4
			ORDER BY seq LIMIT `+fmt.Sprint(backlogPage), a.subID, src.Schema, src.Name, last)
		if err != nil {
			return n, fmt.Errorf("read copy backlog of %s: %w", src, err)
		}
		var evs []change.Event
		for rows.Next() {
			var ev change.Event
			var op string
			var cols, key []string
			var vals, oldKey []*string
			if err := rows.Scan(&last, &ev.ID, &ev.TxID, &op, &ev.Table.Schema, &ev.Table.Name, &cols, &vals, &key, &oldKey); err != nil {
				rows.Close()
				return n, fmt.Errorf("read copy backlog of %s: %w", src, err)
			}
			if len(op) != 1 {
				rows.Close()
				return n, fmt.Errorf("copy backlog of %s: event %d: bad op %q", src, ev.ID, op)
			}
			ev.Op = change.Op(op[0])
			ev.Columns, ev.Key = intern(cols), intern(key)
			ev.Values, ev.OldKey = values(vals), values(oldKey)
			evs = append(evs, ev)
		}
		if err := rows.Err(); err != nil {
			return n, fmt.Errorf("read copy backlog of %s: %w", src, err)
		}
		if len(evs) == 0 {
			break
		}
		n += len(evs)
		if err := fn(evs); err != nil {
			return n, err
		}
		if len(evs) < backlogPage {
			break
		}
	}
	if _, err := a.tx.Exec(ctx, `DELETE FROM skiff.copy_backlog WHERE sub_id = $1 AND source_schema = $2 AND source_name = $3`,
		a.subID, src.Schema, src.Name); err != nil {
		return n, fmt.Errorf("delete copy backlog of %s: %w", src, err)
	}
	return n, nil
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
