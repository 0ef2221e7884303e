package apply

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// The merged effect of a run's events on one key.
const (
	opNone    uint8 = iota // cancelled (inserted then deleted in the run)
	opInsert               // the row did not exist: insert it
	opUpdate               // the row existed: overwrite it
	opDelete               // the row existed: delete it
	opReplace              // deleted then inserted again: delete, then insert the new row
	opUpsert               // the row may exist (change.Upsert): overwrite it, else insert it
)

// entry is one key of a run. row and key are offsets into the run's arena.
type entry struct {
	op  uint8
	row int32 // the row's values (len(shape.cols)), -1 when none
	key int32 // the key's values (len(shape.key)) the target row is found by, -1 when none
	ev  int64 // the last event that touched the key
	// quiet: the row to delete (opDelete, opReplace) may be missing on the target, as a
	// change.Remove's may, or one an Upsert may have made: no warning when it is.
	quiet bool
}

// run is the pending, merged changes of one table since its last flush, in the order keys
// first appeared. Every row of a run has the same layout.
type run struct {
	t       *table
	shape   *shape // layout of the rows (and of the keys)
	idx     map[string]int32
	entries []entry
	arena   []change.Value
	firstEv int64
	queued  bool // in writer.order
	hasRows bool // an entry holds a row (insert, update, replace)
}

// writer applies one batch attempt's events in one transaction.
type writer struct {
	a        *Applier
	tx       pgx.Tx
	setBased bool
	// strict: triggers and foreign keys fire (no replica role), so the runs of tables that
	// have triggers or rules are written in event order relative to the other tables' runs;
	// tables without any may still be grouped.
	strict bool
	// orderTriggers: a pending run's table has triggers or rules.
	orderTriggers bool

	runs    map[*table]*run
	order   []*run // runs with pending rows, in first-appearance order
	rows    int
	bytes   int
	limit   int      // pending rows that make the next flush: grows to MaxPendingRows
	truncs  []*table // consecutive TRUNCATE events not yet executed
	truncEv int64
	events  int64
	keyBuf  []byte
	kbuf    []change.Value
	// conflicts counts the merge conflicts settled (merged subscriptions, row by row), the
	// last one described in lastConflict.
	conflicts    int64
	lastConflict string
	// joinsOff: hash and merge joins are disabled in the transaction (SET LOCAL), which makes
	// large set-based UPDATEs and DELETEs look their rows up by index.
	joinsOff bool
	// guarded: tables locked and checked for code another role controls in this batch
	// (guard).
	guarded map[*table]bool
	// missed: per table, the keys of UPDATEs of this batch that may have found no row on the
	// target, each with its event (checkInsertAfterUpdate); nil on the usual path.
	missed map[*table]map[string]int64
	// deleted: per table, the keys of DELETEs of this batch that may have found no row on the
	// target (checkDeleteBeforeInsert); nil on the usual path.
	deleted map[*table]map[string]int64

	// ahead: full runs may be flushed ahead (ahead.go: set-based, not merged); inflight is the flush running on the
	// target meanwhile (nil when none), aheadErr the first such flush's error.
	ahead    bool
	inflight chan error
	aheadErr error
}

// lookupThreshold is the run size from which the planner might prefer a hash join over a
// scan of the whole table to index lookups of the keys; measured on PostgreSQL 15, index
// lookups stay about twice as fast at 20k keys in a 200k-row table.
const lookupThreshold = 500

// planJoins disables hash and merge joins for a large set-based statement on a table whose
// rows an index finds, and enables them again for a table no index serves.
func (w *writer) planJoins(ctx context.Context, s *shape, rows int) error {
	if rows < lookupThreshold || s.indexed == w.joinsOff {
		return nil
	}
	v := "on"
	if s.indexed {
		v = "off"
	}
	if _, err := w.tx.Exec(ctx, `SELECT set_config('enable_hashjoin', $1, true), set_config('enable_mergejoin', $1, true)`, v); err != nil {
		return fmt.Errorf("set join methods: %w", err)
	}
	w.joinsOff = s.indexed
	return nil
}

func newWriter(a *Applier, tx pgx.Tx, setBased, ahead bool) *writer {
	// The runs (their maps and arenas) live as long as the table cache: reused batch after
	// batch instead of grown again.
	if a.runs == nil {
		a.runs = map[*table]*run{}
	}
	return &writer{a: a, tx: tx, setBased: setBased, ahead: ahead && setBased && a.merge == "", strict: !a.replica, runs: a.runs,
		limit: min(firstRunRows, a.cfg.MaxPendingRows)}
}

// guard refuses, when the worker is a superuser, to write into a table whose writes would run
// code that a role other than a superuser controls (catalog.ForeignCode: a trigger that
// fires, a rule, an index expression, a constraint, a default): that role would run it with
// the superuser's rights. A table that superusers own with all it routes rows to and the
// domains of its columns (catalog.SuperuserOwned) is checked once, when the table cache loads
// it: nobody else can attach code to it since. Any other table is checked once per batch,
// after taking the lock its writes take anyway (ROW EXCLUSIVE), which keeps such code from
// being added before they run.
func (w *writer) guard(ctx context.Context, t *table) error {
	if !w.a.superuser || w.guarded[t] || t.ownersChecked {
		return nil
	}
	if err := w.settle(); err != nil {
		return err
	}
	if !t.ownersKnown {
		owned, err := catalog.SuperuserOwned(ctx, w.tx, t.sql)
		if err != nil {
			return err
		}
		t.superuserOwned, t.ownersKnown = owned, true
	}
	if !t.superuserOwned {
		if _, err := pg.Exec(ctx, w.tx.Conn().PgConn(), "LOCK TABLE "+t.sql+" IN ROW EXCLUSIVE MODE"); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
				return fmt.Errorf("table %s does not exist on the target", t.name)
			}
			return fmt.Errorf("lock %s: %w", t.sql, err)
		}
	}
	if err := catalog.ForeignCode(ctx, w.tx, t.sql, w.a.replica); err != nil {
		return err
	}
	if t.superuserOwned {
		t.ownersChecked = true
		return nil
	}
	if w.guarded == nil {
		w.guarded = map[*table]bool{}
	}
	w.guarded[t] = true
	return nil
}

func (w *writer) add(ctx context.Context, evs []change.Event) error {
	for i := range evs {
		if err := w.addOne(ctx, &evs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) addOne(ctx context.Context, ev *change.Event) error {
	if ev.Err != nil {
		return ev.Err // a row the source could not decode is never written
	}
	w.events++
	if ev.Op == change.Execute {
		return w.execute(ctx, ev)
	}
	t, err := w.a.table(ctx, w.tx, ev.Table)
	if err == nil {
		err = w.guard(ctx, t)
	}
	if err != nil {
		if ev.Op != change.Truncate {
			err = fmt.Errorf("row %s: %w", keyText(ev), err)
		}
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: err}
	}
	if ev.Op == change.Truncate {
		if w.a.merge != "" {
			return &MergedTruncateError{Table: ev.Table, EventID: ev.ID}
		}
		if len(w.truncs) == 0 {
			if err := w.flushAll(ctx); err != nil {
				return err
			}
			w.truncEv = ev.ID
		}
		w.truncs = append(w.truncs, t)
		delete(w.missed, t)
		delete(w.deleted, t)
		return nil
	}
	if err := w.flushTruncates(ctx); err != nil {
		return err
	}
	s, err := t.shapeOf(ev)
	if err != nil {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: err}
	}
	if w.a.merge != "" && !s.unique {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("merged table %s needs a primary key or unique index on exactly its key columns (%s): "+
			"without one an insert of a key another provider wrote would add a second row", ev.Table, strings.Join(ev.Key, ", "))}
	}
	if len(ev.Values) != len(ev.Columns) {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("event has %d values for %d columns", len(ev.Values), len(ev.Columns))}
	}
	if len(s.escape) > 0 || len(s.escapeKey) > 0 {
		if err := s.escapeBytea(ev); err != nil {
			return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: err}
		}
	}
	switch ev.Op {
	case change.Insert, change.Update, change.Delete, change.Upsert, change.Remove:
	default:
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("unknown operation %q", byte(ev.Op))}
	}
	if ev.Op != change.Insert {
		if len(s.key) == 0 {
			return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("table %s has no key: cannot apply %s", ev.Table, ev.Op)}
		}
		for j, i := range s.keyIdx {
			if i < 0 && (ev.OldKey == nil || ev.Op == change.Update || ev.Op == change.Upsert) {
				return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("event lacks key column %s", change.QuoteIdent(s.key[j]))}
			}
		}
	}
	if len(w.missed[t]) > 0 {
		w.forgetMissed(t, s, ev)
		if err := w.checkInsertAfterUpdate(ctx, t, s, ev, 0); err != nil {
			return err
		}
	}
	if len(w.deleted[t]) > 0 {
		if err := w.checkDeleteBeforeInsert(t, s, ev); err != nil {
			return err
		}
	}
	if !w.setBased {
		return w.applyRow(ctx, s, ev)
	}
	if s.rowOnly || (s.partial && ev.OldKey != nil && (ev.Op == change.Update || ev.Op == change.Upsert)) {
		// Written now, in order: what is pending goes first. A key-changing update of a
		// partial row keeps the columns it lacks (shape.partial).
		if err := w.flushAll(ctx); err != nil {
			return err
		}
		return w.applyRow(ctx, s, ev)
	}

	r := w.runs[t]
	if r == nil {
		r = &run{t: t, idx: map[string]int32{}}
		w.runs[t] = r
	}
	if w.strict && len(w.order) > 0 && w.order[len(w.order)-1] != r && (t.triggers || w.orderTriggers) {
		if err := w.flushAll(ctx); err != nil {
			return err
		}
	}
	if r.shape != nil && r.shape != s {
		switch {
		case sameSlice(r.shape.key, s.key) && (ev.Op == change.Delete || ev.Op == change.Remove):
			// A delete needs only the key: one carrying only the key columns (logical
			// decoding's default replica identity) joins a run of full rows.
		case sameSlice(r.shape.key, s.key) && !r.hasRows:
			r.shape = s // the run holds only deletes so far: the rows' layout takes over
		default:
			if err := w.flush(ctx, r); err != nil {
				return err
			}
		}
	}
	if !r.queued {
		w.enqueue(r, s, ev.ID)
	}
	if !r.merge(w, s, ev) {
		// A change the merge cannot express (e.g. an insert of a key the run already holds):
		// write what came before, then start again; the target decides. An insert of a key
		// the run updates is checked first (checkInsertAfterUpdate).
		updated := w.updatedInRun(r, s, ev)
		if err := w.flush(ctx, r); err != nil {
			return err
		}
		if updated != 0 {
			if err := w.checkInsertAfterUpdate(ctx, t, s, ev, updated); err != nil {
				return err
			}
		}
		w.enqueue(r, s, ev.ID)
		if !r.merge(w, s, ev) {
			return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("cannot merge event")}
		}
	}
	w.rows++
	for _, v := range ev.Values {
		w.bytes += len(v.Text)
	}
	if w.rows >= w.limit || w.bytes >= w.a.cfg.MaxPendingBytes {
		// Slow start: a large batch writes its first rows early (they show on the target's
		// relation size, and the target works while the source reads on), then in runs
		// growing to MaxPendingRows.
		w.limit = min(2*w.limit, w.a.cfg.MaxPendingRows)
		if w.ahead {
			return w.flushAhead(ctx)
		}
		return w.flushAll(ctx)
	}
	return nil
}

// firstRunRows is the size of a batch's first run (slow start, see addOne).
const firstRunRows = 2000

// enqueue starts a run.
func (w *writer) enqueue(r *run, s *shape, firstEv int64) {
	r.queued, r.shape, r.firstEv = true, s, firstEv
	w.order = append(w.order, r)
	if r.t.triggers {
		w.orderTriggers = true
	}
}

// keyString makes a map key of key values.
func (w *writer) keyString(vals []change.Value) string {
	if len(vals) == 1 {
		return vals[0].Text
	}
	b := w.keyBuf[:0]
	for _, v := range vals {
		if !v.Valid {
			b = append(b, 'N')
			continue
		}
		b = strconv.AppendInt(b, int64(len(v.Text)), 10)
		b = append(b, ':')
		b = append(b, v.Text...)
	}
	w.keyBuf = b
	return string(b)
}

// merge folds an event into the run; false when it cannot (the caller flushes and retries).
func (r *run) merge(w *writer, s *shape, ev *change.Event) bool {
	if len(s.key) == 0 { // no key: inserts only, nothing to merge with
		r.entries = append(r.entries, entry{op: opInsert, row: r.putRow(ev.Values), key: -1, ev: ev.ID})
		return true
	}
	// newKey gathers the row's key values into a buffer reused from event to event (put
	// copies what it keeps into the arena).
	newKey := func() []change.Value {
		k := w.kbuf[:0]
		for _, i := range s.keyIdx {
			k = append(k, ev.Values[i])
		}
		w.kbuf = k
		return k
	}
	switch ev.Op {
	case change.Insert:
		return r.insert(w, newKey(), ev)
	case change.Delete, change.Remove:
		k := ev.OldKey
		if k == nil {
			k = newKey()
		}
		return r.delete(w, k, ev.ID, ev.Op == change.Remove)
	case change.Upsert:
		if ev.OldKey != nil && !r.delete(w, ev.OldKey, ev.ID, true) {
			return false
		}
		return r.upsert(w, newKey(), ev)
	case change.Update:
		if ev.OldKey != nil {
			// A key change is the old key's delete and the new key's insert.
			if i, ok := r.idx[w.keyString(newKey())]; ok && r.entries[i].op != opDelete {
				return false
			}
			if !r.delete(w, ev.OldKey, ev.ID, false) {
				return false
			}
			return r.insert(w, newKey(), ev)
		}
		k := newKey()
		ks := w.keyString(k)
		if i, ok := r.idx[ks]; ok {
			e := &r.entries[i]
			switch e.op {
			case opInsert, opUpdate, opReplace, opUpsert:
				e.row, e.ev = r.putRow(ev.Values), ev.ID
				return true
			}
			return false
		}
		r.idx[ks] = int32(len(r.entries))
		r.entries = append(r.entries, entry{op: opUpdate, row: r.putRow(ev.Values), key: r.put(k), ev: ev.ID})
		return true
	}
	return false
}

// upsert folds in a row the target may or may not hold (change.Upsert): what the run did to
// the key before decides, else the flush updates it or inserts it.
func (r *run) upsert(w *writer, k []change.Value, ev *change.Event) bool {
	ks := w.keyString(k)
	if i, ok := r.idx[ks]; ok {
		e := &r.entries[i]
		if e.op == opDelete {
			e.op = opReplace // quiet stays: the delete may find no row
		}
		e.row, e.ev = r.putRow(ev.Values), ev.ID
		return true
	}
	r.idx[ks] = int32(len(r.entries))
	r.entries = append(r.entries, entry{op: opUpsert, row: r.putRow(ev.Values), key: r.put(k), ev: ev.ID})
	return true
}

func (r *run) insert(w *writer, k []change.Value, ev *change.Event) bool {
	ks := w.keyString(k)
	if i, ok := r.idx[ks]; ok {
		e := &r.entries[i]
		if e.op != opDelete {
			return false
		}
		e.op, e.row, e.ev = opReplace, r.putRow(ev.Values), ev.ID
		return true
	}
	r.idx[ks] = int32(len(r.entries))
	r.entries = append(r.entries, entry{op: opInsert, row: r.putRow(ev.Values), key: r.put(k), ev: ev.ID})
	return true
}

// delete folds in the deletion of a key; quiet when the target may not hold the row
// (change.Remove).
func (r *run) delete(w *writer, k []change.Value, id int64, quiet bool) bool {
	ks := w.keyString(k)
	if i, ok := r.idx[ks]; ok {
		e := &r.entries[i]
		switch e.op {
		case opInsert:
			e.op, e.ev = opNone, id
			delete(r.idx, ks)
			return true
		case opUpdate, opReplace:
			e.op, e.row, e.ev = opDelete, -1, id
			e.quiet = e.quiet || quiet
			return true
		case opUpsert:
			// The row exists now; before the run it may not have.
			e.op, e.row, e.ev, e.quiet = opDelete, -1, id, true
			return true
		}
		return false
	}
	r.idx[ks] = int32(len(r.entries))
	r.entries = append(r.entries, entry{op: opDelete, row: -1, key: r.put(k), ev: id, quiet: quiet})
	return true
}

// putRow stores a row's values in the arena.
func (r *run) putRow(vals []change.Value) int32 {
	r.hasRows = true
	return r.put(vals)
}

func (r *run) put(vals []change.Value) int32 {
	off := int32(len(r.arena))
	r.arena = append(r.arena, vals...)
	return off
}

func (r *run) reset() {
	clear(r.idx)
	r.entries = r.entries[:0]
	clear(r.arena) // drop references to the values' strings
	r.arena = r.arena[:0]
	r.shape, r.queued, r.hasRows = nil, false, false
}

func (w *writer) flushAll(ctx context.Context) error {
	if err := w.settle(); err != nil {
		return err
	}
	for _, r := range w.order {
		if err := w.flushRun(ctx, r); err != nil {
			return err
		}
	}
	w.order = w.order[:0]
	w.orderTriggers = false
	w.rows, w.bytes = 0, 0
	return w.flushTruncates(ctx)
}

// flush writes one run out of turn (its layout changes, or a merge conflict).
func (w *writer) flush(ctx context.Context, r *run) error {
	if w.strict && w.orderTriggers {
		return w.flushAll(ctx)
	}
	if err := w.flushRun(ctx, r); err != nil {
		return err
	}
	for i, o := range w.order {
		if o == r {
			w.order = append(w.order[:i], w.order[i+1:]...)
			break
		}
	}
	return nil
}

func (w *writer) flushTruncates(ctx context.Context) error {
	if len(w.truncs) == 0 {
		return nil
	}
	if err := w.settle(); err != nil {
		return err
	}
	names := make([]string, len(w.truncs))
	for i, t := range w.truncs {
		names[i] = t.sql
	}
	sql := "TRUNCATE " + strings.Join(names, ", ")
	t := w.truncs[0]
	w.truncs = w.truncs[:0]
	if _, err := pg.Exec(ctx, w.tx.Conn().PgConn(), sql); err != nil {
		return &Error{Table: t.name, EventID: w.truncEv, Op: change.Truncate, SQL: sql, Err: err}
	}
	return nil
}

// flushRun writes a run set-based: deletes, then updates, then inserts (COPY). Each key
// appears once in a run, so the three statements touch disjoint rows.
func (w *writer) flushRun(ctx context.Context, r *run) error {
	defer r.reset()
	if err := w.settle(); err != nil {
		return err
	}
	s := r.shape
	if s == nil {
		return nil
	}
	fail := func(op change.Op, sql string, err error) error {
		return &Error{Table: r.t.name, EventID: r.firstEv, Op: op, SQL: sql, Err: err, setBased: true}
	}
	// ndel and nupd count every row deleted and updated; mustDel and mustUpd those the target
	// must hold (not quiet deletes, not upserts): fewer found is worth a warning.
	// mustRep counts the rows deleted and inserted again (opReplace) the target must hold.
	var ndel, nrep, mustDel, mustRep, nupd, mustUpd, nups, nins int
	for i := range r.entries {
		e := &r.entries[i]
		if (e.op == opDelete || e.op == opReplace) && !e.quiet {
			mustDel++
		}
		switch e.op {
		case opDelete:
			ndel++
		case opReplace:
			ndel++
			nrep++
			nins++
			if !e.quiet {
				mustRep++
			}
		case opUpdate:
			nupd++
			mustUpd++
		case opUpsert:
			nupd++
			nups++
		case opInsert:
			nins++
		}
	}
	if mustRep > 0 && w.a.merge == "" {
		// Rows deleted and inserted again: written by a DELETE of their own, which must find
		// them all. A DELETE that finds none of a row cannot be told from a capture that
		// queued the row's DELETE before its INSERT (checkDeleteBeforeInsert): replayed row
		// by row, the batch stops on the row, or applies.
		n, err := w.deleteRun(ctx, r, opReplace, opReplace)
		if err != nil {
			return err
		}
		if n < int64(mustRep) {
			return fail(change.Delete, s.delSQL, errReplacedMissing)
		}
		ndel -= nrep
		mustDel -= mustRep
		if ndel > 0 {
			n, err := w.deleteRun(ctx, r, opDelete, opDelete)
			if err != nil {
				return err
			}
			if n < int64(mustDel) {
				w.a.log.Warn("rows to delete were missing on the target", "table", r.t.name.String(), "missing", int64(mustDel)-n, "deleted", n)
				w.noteRunKeys(&w.deleted, r, opDelete)
			}
		}
	} else if ndel > 0 {
		n, err := w.deleteRun(ctx, r, opDelete, opReplace)
		if err != nil {
			return err
		}
		if n < int64(mustDel) && w.a.merge != "" {
			return fail(change.Delete, s.delSQL, errMergeMismatch)
		} else if n < int64(mustDel) {
			w.a.log.Warn("rows to delete were missing on the target", "table", r.t.name.String(), "missing", int64(mustDel)-n, "deleted", n)
			w.noteRunKeys(&w.deleted, r, opDelete)
		}
	}
	// rowArgs returns the rows of the entries whose op is op1 or op2, one array parameter per
	// written column.
	rowArgs := func(op1, op2 uint8) *setArgs {
		sel := w.selected(r, op1, op2)
		return w.setArgs(len(s.write), func(m int) ([]byte, int16) {
			return r.appendRows(w.a.argBufs[m][:0], sel, s.write[m])
		})
	}
	if nupd > 0 && s.updSQL != "" {
		if err := w.planJoins(ctx, s, nupd); err != nil {
			return err
		}
		// Updates and upserts: an upsert's row that is found is overwritten here.
		tag, err := w.execSet(ctx, s.updSQL, rowArgs(opUpdate, opUpsert))
		if err != nil {
			return fail(change.Update, s.updSQL, err)
		}
		if n := tag.RowsAffected(); n < int64(mustUpd) && w.a.merge != "" {
			return fail(change.Update, s.updSQL, errMergeMismatch)
		} else if n < int64(mustUpd) {
			w.a.log.Warn("rows to update were missing on the target", "table", r.t.name.String(), "missing", int64(mustUpd)-n, "updated", n)
			w.noteRunKeys(&w.missed, r, opUpdate)
		}
	}
	if nups > 0 {
		// An upsert's row that was not found: inserted.
		if err := w.planJoins(ctx, s, nups); err != nil {
			return err
		}
		if _, err := w.execSet(ctx, s.upsSQL, rowArgs(opUpsert, opUpsert)); err != nil {
			return fail(change.Upsert, s.upsSQL, err)
		}
	}
	if nins == 1 {
		// One row: an INSERT is one round trip, COPY two (the statement, then its data).
		for k := range r.entries {
			e := &r.entries[k]
			if e.op != opInsert && e.op != opReplace {
				continue
			}
			args := make([]any, len(s.write))
			for n, i := range s.write {
				args[n] = textArg(r.arena[int(e.row)+i])
			}
			if _, err := w.tx.Exec(ctx, s.insRowSQL, args...); err != nil {
				return fail(change.Insert, s.insRowSQL, err)
			}
		}
	} else if nins > 0 {
		buf := appendCopyRows(w.a.copyBuf[:0], r, opInsert, opReplace)
		_, err := w.tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(buf), s.copySQL)
		if cap(buf) <= 64<<20 {
			w.a.copyBuf = buf[:0]
		}
		if err != nil {
			return fail(change.Insert, s.copySQL, err)
		}
	}
	return nil
}

// deleteRun deletes the keys of the run's entries whose op is op1 or op2, set-based, and
// returns how many rows it found.
func (w *writer) deleteRun(ctx context.Context, r *run, op1, op2 uint8) (int64, error) {
	s := r.shape
	sel := w.selected(r, op1, op2)
	if err := w.planJoins(ctx, s, len(sel)); err != nil {
		return 0, err
	}
	args := w.setArgs(len(s.key), func(j int) ([]byte, int16) {
		return r.appendKeys(w.a.argBufs[j][:0], sel, j)
	})
	tag, err := w.execSet(ctx, s.delSQL, args)
	if err != nil {
		return 0, &Error{Table: r.t.name, EventID: r.firstEv, Op: change.Delete, SQL: s.delSQL, Err: err, setBased: true}
	}
	return tag.RowsAffected(), nil
}

// keyOrder is an entry of a run and the value of its first key column, for sorting.
type keyOrder struct {
	k int64
	i int32
}

// selected returns the indexes of the run's entries whose op is op1 or op2, in the order a
// set-based statement sends them: when the key's first column is an integer (shape.intKey),
// in the order of its values, which is the order of the index the statement finds its rows
// by — consecutive lookups, and the index entries of the new row versions an UPDATE adds,
// then land on the same pages instead of all over the index (and the table) as the
// provider's order of the changes may have them. Else, and when a value does not read as an
// integer, in the order the keys first appeared. A run holds each key once (merge), so the
// order changes nothing of what the statement writes.
func (w *writer) selected(r *run, op1, op2 uint8) []int32 {
	sel := w.a.sel[:0]
	for i := range r.entries {
		if op := r.entries[i].op; op == op1 || op == op2 {
			sel = append(sel, int32(i))
		}
	}
	w.a.sel = sel
	if !r.shape.intKey || len(sel) < 2 {
		return sel
	}
	order, sorted := w.a.order[:0], true
	defer func() { w.a.order = order[:0] }()
	for _, i := range sel {
		v := r.arena[r.entries[i].key]
		k, err := strconv.ParseInt(v.Text, 10, 64)
		if !v.Valid || err != nil {
			return sel // e.g. " 12", which int8in reads too: left in its order
		}
		if len(order) > 0 && k < order[len(order)-1].k {
			sorted = false
		}
		order = append(order, keyOrder{k: k, i: i})
	}
	if sorted {
		return sel
	}
	slices.SortStableFunc(order, func(a, b keyOrder) int { return cmp.Compare(a.k, b.k) })
	for j := range order {
		sel[j] = order[j].i
	}
	return sel
}

// appendRows appends the array parameter of event column i of the rows of entries sel
// (appendArray).
func (r *run) appendRows(b []byte, sel []int32, i int) ([]byte, int16) {
	return appendArray(b, r.t.cols[r.shape.cols[i]], func(yield func(change.Value) bool) {
		for _, k := range sel {
			if !yield(r.arena[int(r.entries[k].row)+i]) {
				return
			}
		}
	})
}

// appendKeys appends the array parameter of key column j of the keys of entries sel.
func (r *run) appendKeys(b []byte, sel []int32, j int) ([]byte, int16) {
	return appendArray(b, r.t.cols[r.shape.key[j]], func(yield func(change.Value) bool) {
		for _, k := range sel {
			if !yield(r.arena[int(r.entries[k].key)+j]) {
				return
			}
		}
	})
}

// setArgs are the parameters of a set-based statement in their wire form: one array per
// column, made by the applier itself (no per-value allocation, no reflection) into buffers
// reused flush after flush.
type setArgs struct {
	vals    [][]byte
	formats []int16
}

// setArgs makes n array parameters, the j-th by col(j), which appends it to
// w.a.argBufs[j][:0] and returns it with its format (appendArray).
func (w *writer) setArgs(n int, col func(j int) ([]byte, int16)) *setArgs {
	a := w.a
	for len(a.argBufs) < n {
		a.argBufs = append(a.argBufs, nil)
	}
	args := &a.args
	args.vals, args.formats = args.vals[:0], args.formats[:0]
	for j := range n {
		b, format := col(j)
		if cap(b) <= 64<<20 {
			a.argBufs[j] = b[:0]
		} else {
			a.argBufs[j] = nil
		}
		args.vals, args.formats = append(args.vals, b), append(args.formats, format)
	}
	return args
}

// execSet runs a set-based statement with its array parameters (one round trip: parse, bind,
// execute; the parameters' types come from the statement's casts).
func (w *writer) execSet(ctx context.Context, sql string, args *setArgs) (pgconn.CommandTag, error) {
	return w.tx.Conn().PgConn().ExecParams(ctx, sql, args.vals, nil, args.formats, nil).Close()
}

// textOID is the oid of pg_catalog.text (fixed since PostgreSQL's bootstrap catalog).
const textOID = 25

// appendArray appends the parameter of a set-based statement for the values of one column:
// for a column of one of pg_catalog's types a text[] in binary format (what array_recv reads:
// dimensions, flags, element type, then each value's length and bytes, -1 for NULL), cast to
// the column's type on the server; for a typed column (targetCol.typed) the text of an array
// literal of them, which the statement reads as an array of the column's base type. It
// returns the parameter's format code: 1 (binary) or 0 (text).
func appendArray(b []byte, tc targetCol, vals iter.Seq[change.Value]) ([]byte, int16) {
	if tc.typed {
		b = append(b, '{')
		first := true
		for v := range vals {
			if !first {
				b = append(b, tc.delim)
			}
			first = false
			if !v.Valid {
				b = append(b, "NULL"...)
				continue
			}
			b = append(b, '"')
			for j := 0; j < len(v.Text); j++ {
				if c := v.Text[j]; c == '"' || c == '\\' {
					b = append(b, '\\')
				}
				b = append(b, v.Text[j])
			}
			b = append(b, '"')
		}
		return append(b, '}'), 0
	}
	// ndim 1, flags 0 (array_recv finds the NULLs itself), element type, length (set below),
	// lower bound 1.
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, textOID)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, 1)
	n := uint32(0)
	for v := range vals {
		n++
		if !v.Valid {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff) // -1
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v.Text)))
		b = append(b, v.Text...)
	}
	if n == 0 { // an empty array has no dimension
		b = binary.BigEndian.AppendUint32(b[:0], 0)
		b = binary.BigEndian.AppendUint32(b, 0)
		return binary.BigEndian.AppendUint32(b, textOID), 1
	}
	binary.BigEndian.PutUint32(b[12:], n)
	return b, 1
}

// appendCopyRows appends, in COPY's text format, the rows of the run's entries whose op is
// op1 or op2, in the order of the entries.
func appendCopyRows(buf []byte, r *run, op1, op2 uint8) []byte {
	s := r.shape
	for k := range r.entries {
		e := &r.entries[k]
		if e.op != op1 && e.op != op2 {
			continue
		}
		for n, i := range s.write {
			if n > 0 {
				buf = append(buf, '\t')
			}
			buf = appendCopyText(buf, r.arena[int(e.row)+i])
		}
		buf = append(buf, '\n')
	}
	return buf
}

// appendCopyText appends a value in COPY's text format: \N for NULL; backslash, newline,
// carriage return and tab escaped.
func appendCopyText(buf []byte, v change.Value) []byte {
	if !v.Valid {
		return append(buf, '\\', 'N')
	}
	s := v.Text
	plain := 0 // strings.IndexAny without the set it builds at every call
	for plain < len(s) {
		if c := s[plain]; c == '\\' || c == '\n' || c == '\r' || c == '\t' {
			break
		}
		plain++
	}
	buf = append(buf, s[:plain]...)
	for i := plain; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			buf = append(buf, '\\', '\\')
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, c)
		}
	}
	return buf
}

func textArg(v change.Value) any {
	if !v.Valid {
		return nil
	}
	return v.Text
}

// applyRow writes one event with one statement: the slow path that names the failing event.
func (w *writer) applyRow(ctx context.Context, s *shape, ev *change.Event) error {
	if err := w.settle(); err != nil {
		return err
	}
	var sql string
	var args []any
	keyArgs := func() []any {
		if ev.OldKey != nil {
			out := make([]any, len(ev.OldKey))
			for j, v := range ev.OldKey {
				out[j] = textArg(v)
			}
			return out
		}
		out := make([]any, len(s.keyIdx))
		for j, i := range s.keyIdx {
			out[j] = textArg(ev.Values[i])
		}
		return out
	}
	switch ev.Op {
	case change.Insert, change.Update, change.Upsert:
		for _, i := range s.write {
			args = append(args, textArg(ev.Values[i]))
		}
		sql = s.insRowSQL
		if ev.Op != change.Insert {
			sql = s.updRowSQL
			args = append(args, keyArgs()...)
		}
	case change.Delete, change.Remove:
		sql, args = s.delRowSQL, keyArgs()
	}
	if w.a.merge != "" && (ev.Op == change.Insert || ev.Op == change.Update || ev.Op == change.Delete) {
		return w.applyMergedRow(ctx, s, ev, sql, args, keyArgs)
	}
	tag, err := w.tx.Exec(ctx, sql, args...)
	if err != nil {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, SQL: sql, Err: err}
	}
	switch {
	case ev.Op == change.Upsert && tag.RowsAffected() == 0:
		// Not on the target (it moved into a consumer-side filter): inserted.
		sql, args = s.insRowSQL, args[:len(s.write)]
		if _, err := w.tx.Exec(ctx, sql, args...); err != nil {
			return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, SQL: sql, Err: err}
		}
	case (ev.Op == change.Update || ev.Op == change.Delete) && tag.RowsAffected() == 0:
		w.a.log.Warn("row to "+strings.ToLower(ev.Op.String())+" was missing on the target", "table", ev.Table.String(), "event_id", ev.ID)
		// What an INSERT of the key later in the batch is checked against (misorder.go); an
		// UPDATE changing the key has an old key, not the one it missed.
		if ev.Op == change.Update && ev.OldKey == nil && w.a.merge == "" {
			w.noteKey(&w.missed, s.t, s.rowKey(ev, nil), ev.ID)
		}
		if ev.Op == change.Delete && w.a.merge == "" {
			k := ev.OldKey
			if k == nil {
				k = s.rowKey(ev, nil) // a Delete lacking a key column fails before it runs
			}
			w.noteKey(&w.deleted, s.t, k, ev.ID)
		}
	}
	return nil
}

// keyText names an event's row by its key values, for messages: (k1=v1, k2=v2).
func keyText(ev *change.Event) string {
	vals := ev.KeyValues()
	parts := make([]string, len(ev.Key))
	for i, k := range ev.Key {
		v := "NULL"
		if i < len(vals) && vals[i].Valid {
			v = vals[i].Text
		}
		parts[i] = k + "=" + v
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
