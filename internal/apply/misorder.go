package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// ErrMisordered: the batch holds an INSERT of a row that an earlier UPDATE of the batch
// changed, with no DELETE of it between, and that UPDATE found no row on the target; or an
// INSERT of a row whose DELETE earlier in the batch found no row. No source emits the first
// for a table whose key is unique: the provider's capture queued the row's changes out of
// order (a trigger of the user's changed the row before skiff's capture trigger queued its
// INSERT). The second is that, a trigger deleting the row, or a target that lacked the row.
// Applied as they come, the target would keep the row as first inserted (the UPDATE lost),
// or keep a row the provider deleted, silently; the worker stops instead.
var ErrMisordered = errors.New("the provider queued this row's changes out of order")

// misorderHelp says what ErrMisordered comes from and how to get past it.
const misorderHelp = "a trigger on the provider's table changed or deleted the row before skiff's capture trigger queued its INSERT: " +
	"one firing before a capture trigger still named skiff_capture_q<N> (skiff init provider names such captures and how to move them), " +
	"or one changing another row of the same multi-row INSERT (README, \"Your own AFTER triggers\"). " +
	"Nothing of this batch is applied. Once the provider is fixed, copy the table again (skiff table resync), " +
	"or set the events aside (skiff event skip) and fix the row (skiff repair)"

// errReplacedMissing: a set-based DELETE of rows the batch deletes and inserts again found
// fewer than it must, or an INSERT of a key whose DELETE earlier in the batch may have found
// none (writer.deleted): the batch is replayed row by row, where a DELETE that finds no row
// followed by an INSERT of it stops the worker (ErrMisordered), naming them.
var errReplacedMissing = errors.New("rows deleted and inserted again in this batch were missing on the target: replaying row by row to tell which")

// maxMissedKeys bounds writer.missed for one table: the guard is best effort beyond it.
const maxMissedKeys = 100_000

// insertedKey returns the key an event inserts (an Insert's, or the new key of a
// key-changing Update), in a buffer reused from event to event; nil for other events, and
// when the row lacks a key column.
func (w *writer) insertedKey(s *shape, ev *change.Event) []change.Value {
	if len(s.key) == 0 || !(ev.Op == change.Insert || ev.Op == change.Update && ev.OldKey != nil) {
		return nil
	}
	k := s.rowKey(ev, w.kbuf[:0])
	if k != nil {
		w.kbuf = k
	}
	return k
}

// rowKey appends the values of the key columns of ev's row to into; nil when the row lacks
// one of them.
func (s *shape) rowKey(ev *change.Event, into []change.Value) []change.Value {
	for _, i := range s.keyIdx {
		if i < 0 {
			return nil
		}
		into = append(into, ev.Values[i])
	}
	return into
}

// updatedInRun returns the event of the run's pending UPDATE of the key ev inserts (0 when
// there is none): called when the run could not take the event in (run.merge), before the
// run is written.
func (w *writer) updatedInRun(r *run, s *shape, ev *change.Event) int64 {
	k := w.insertedKey(s, ev)
	if k == nil || w.a.merge != "" {
		return 0
	}
	if i, ok := r.idx[w.keyString(k)]; ok && r.entries[i].op == opUpdate {
		return r.entries[i].ev
	}
	return 0
}

// checkInsertAfterUpdate refuses an INSERT of a key (an Insert, or the new key of a
// key-changing Update) that an UPDATE of this batch changed with no DELETE between, when that
// UPDATE found no row on the target (ErrMisordered). updated is that UPDATE's event when the
// caller knows it (it was pending in the key's run, which has just been written); else the
// keys of UPDATEs that missed rows earlier in the batch (writer.missed) tell. It queries the
// target only then: never on the usual path.
func (w *writer) checkInsertAfterUpdate(ctx context.Context, t *table, s *shape, ev *change.Event, updated int64) error {
	if w.a.merge != "" {
		return nil
	}
	k := w.insertedKey(s, ev)
	if k == nil {
		return nil
	}
	if updated == 0 {
		id, ok := w.missed[t][w.keyString(k)]
		if !ok {
			return nil
		}
		updated = id
	}
	if err := w.settle(); err != nil {
		return err
	}
	args := make([]any, len(k))
	for j, v := range k {
		args[j] = textArg(v)
	}
	rows, err := w.tx.Query(ctx, s.hasRowSQL, args...)
	if err != nil {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, SQL: s.hasRowSQL, Err: err}
	}
	found := rows.Next()
	rows.Close()
	if err := rows.Err(); err != nil {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, SQL: s.hasRowSQL, Err: err}
	}
	if found {
		return nil // the UPDATE found it: the INSERT fails on the key, or the target decides
	}
	return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf(
		"row (%s) was changed by the UPDATE of event %d earlier in this batch, with no DELETE between, and that UPDATE found no row on the target: %w: %s",
		keyList(s, k), updated, ErrMisordered, misorderHelp)}
}

// noteRunKeys records in *into the keys of a run's entries of op (but quiet ones), after its
// set-based statement found fewer rows than it had keys (which ones is not known): an INSERT
// of one of them later in the batch is checked (checkInsertAfterUpdate for UPDATEs in
// writer.missed, checkDeleteBeforeInsert for DELETEs in writer.deleted).
func (w *writer) noteRunKeys(into *map[*table]map[string]int64, r *run, op uint8) {
	if w.a.merge != "" {
		return
	}
	n := len(r.shape.key)
	for i := range r.entries {
		if e := &r.entries[i]; e.op == op && !e.quiet {
			w.noteKey(into, r.t, r.arena[e.key:int(e.key)+n], e.ev)
		}
	}
}

// noteKey records in *into one key of table t that a statement of event ev may have found
// missing, up to maxMissedKeys per table.
func (w *writer) noteKey(into *map[*table]map[string]int64, t *table, k []change.Value, ev int64) {
	m := (*into)[t]
	if m == nil {
		if *into == nil {
			*into = map[*table]map[string]int64{}
		}
		m = map[string]int64{}
		(*into)[t] = m
	}
	if len(m) < maxMissedKeys {
		m[w.keyString(k)] = ev
	}
}

// forgetMissed drops a deleted key (a Delete, a Remove, the old key of a key change) from
// writer.missed: an INSERT of it after the DELETE is in order.
func (w *writer) forgetMissed(t *table, s *shape, ev *change.Event) {
	m := w.missed[t]
	if len(m) == 0 {
		return
	}
	k := ev.OldKey
	if k == nil {
		if ev.Op != change.Delete && ev.Op != change.Remove {
			return
		}
		if k = s.rowKey(ev, nil); k == nil {
			return
		}
	}
	delete(m, w.keyString(k))
}

// checkDeleteBeforeInsert refuses an INSERT of a key (an Insert, or the new key of a
// key-changing Update) whose DELETE earlier in the batch found no row on the target: applied,
// the target would keep a row the provider deleted, if the capture queued the DELETE before
// the INSERT (a user's trigger deleting a row of the INSERT before skiff's capture trigger
// queued it); or the target lacked the row. Row by row, writer.deleted holds exactly those
// keys and the worker stops (ErrMisordered); set-based, the keys of DELETEs of a run that
// missed rows, and the batch is replayed row by row to tell.
func (w *writer) checkDeleteBeforeInsert(t *table, s *shape, ev *change.Event) error {
	k := w.insertedKey(s, ev)
	if k == nil {
		return nil
	}
	id, ok := w.deleted[t][w.keyString(k)]
	if !ok {
		return nil
	}
	if w.setBased {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: errReplacedMissing, setBased: true}
	}
	return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf(
		"row (%s) was deleted by the DELETE of event %d earlier in this batch, which found no row on the target, and is inserted again: "+
			"either the target lacked the row (deleted there, or its INSERT set aside: then set the DELETE aside too, skiff event skip --event %d), or %w: %s",
		keyList(s, k), id, id, ErrMisordered, misorderHelp)}
}

// keyList names a key's values for messages: col=value, ….
func keyList(s *shape, k []change.Value) string {
	row := make([]string, len(k))
	for j, v := range k {
		row[j] = s.key[j] + "=NULL"
		if v.Valid {
			row[j] = s.key[j] + "=" + v.Text
		}
	}
	return strings.Join(row, ", ")
}
