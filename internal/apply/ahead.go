package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
)

// Flushing ahead: when a batch's pending rows reach the writer's limit (writer.addOne), the
// runs' statements are built, sent, and left running on the target while the writer goes on
// merging the next events; it waits for them (settle) before it builds the next flush's
// statements into the other of two buffer sets, before any other use of the batch's
// transaction, and before the batch's end. The target then writes one flush while the worker
// decodes and merges the next, instead of each waiting for the other.
//
// Only what needs no answer from the target before the writer goes on is sent ahead: runs of
// plain inserts (COPY, two rows or more), updates and deletes, on a subscription that is not
// merged. Everything else (upserts, rows deleted and inserted again, one-row inserts,
// truncates, skiff execute, row-by-row replays) settles first and is written as before. A
// statement sent ahead that finds fewer rows than its keys (the target lacks rows: the writer
// would warn and remember the keys, misorder.go) fails the attempt with errResync: Apply
// applies the batch again waiting for every statement, which warns and checks as ever.

// errResync: a statement flushed ahead found fewer rows than it had keys; the batch is applied
// again with every statement waited for (Applier.Apply).
var errResync = errors.New("a statement sent ahead found fewer rows than it had keys: applying the batch again, statement by statement")

// aheadStmt is one statement of a flush sent ahead, with its parameters (or COPY data) in
// buffers of its own: the runs it was built from are reused meanwhile.
type aheadStmt struct {
	sql     string
	copy    []byte // COPY data; nil for a statement with parameters
	vals    [][]byte
	formats []int16
	// must: rows the statement must find (an UPDATE's or DELETE's keys), -1 for a COPY.
	must    int64
	shape   *shape // planJoins before it (UPDATE, DELETE)
	rows    int
	table   change.Table
	firstEv int64
	op      change.Op
}

// aheadBufs are the buffers of one flush sent ahead; two sets alternate (Applier.ahead).
type aheadBufs struct {
	stmts []aheadStmt
	bufs  [][]byte
	used  int
}

func (b *aheadBufs) reset() {
	b.stmts = b.stmts[:0]
	b.used = 0
}

// buf returns an empty buffer of the set, reusing one of an earlier flush.
func (b *aheadBufs) buf() []byte {
	if b.used == len(b.bufs) {
		b.bufs = append(b.bufs, nil)
	}
	b.used++
	return b.bufs[b.used-1][:0]
}

// keep stores back a buffer buf returned, grown, for the next flush (unless it is huge).
func (b *aheadBufs) keep(buf []byte) []byte {
	if cap(buf) <= 64<<20 {
		b.bufs[b.used-1] = buf
	}
	return buf
}

// aheadable says whether a run can be flushed ahead (see the top of this file).
func (w *writer) aheadable(r *run) bool {
	if r.shape == nil || r.shape.rowOnly {
		return false
	}
	nins := 0
	for i := range r.entries {
		switch r.entries[i].op {
		case opInsert:
			nins++
		case opUpdate, opDelete, opNone:
		default:
			return false
		}
	}
	return nins != 1
}

// flushAhead writes every pending run (the writer's ahead is set; no TRUNCATE is pending at
// the size limit, addOne writes them before it merges a row): sent ahead when they all can
// be, else as flushAll.
func (w *writer) flushAhead(ctx context.Context) error {
	for _, r := range w.order {
		if !w.aheadable(r) {
			return w.flushAll(ctx)
		}
	}
	a := w.a
	// The set the flush before last used: that flush has been waited for.
	bufs := &a.ahead[a.aheadNext]
	a.aheadNext ^= 1
	bufs.reset()
	for _, r := range w.order {
		w.buildAhead(r, bufs)
		r.reset()
	}
	w.order = w.order[:0]
	w.orderTriggers = false
	w.rows, w.bytes = 0, 0
	if err := w.settle(); err != nil {
		return err
	}
	if len(bufs.stmts) == 0 {
		return nil
	}
	done := make(chan error, 1)
	tx := w.tx
	go func() { done <- w.runAhead(ctx, tx, bufs.stmts) }()
	w.inflight = done
	return nil
}

// buildAhead appends the statements of run r to bufs: deletes, updates, then inserts, as
// flushRun writes them.
func (w *writer) buildAhead(r *run, bufs *aheadBufs) {
	s := r.shape
	var ndel, nupd, nins int
	for i := range r.entries {
		switch r.entries[i].op {
		case opDelete:
			ndel++
		case opUpdate:
			nupd++
		case opInsert:
			nins++
		}
	}
	stmt := func(sql string, op change.Op, must int64, rows int) *aheadStmt {
		bufs.stmts = append(bufs.stmts, aheadStmt{sql: sql, op: op, must: must, shape: s, rows: rows, table: r.t.name, firstEv: r.firstEv})
		return &bufs.stmts[len(bufs.stmts)-1]
	}
	if ndel > 0 {
		sel := w.selected(r, opDelete, opDelete)
		mustDel := 0
		for _, i := range sel {
			if !r.entries[i].quiet {
				mustDel++
			}
		}
		st := stmt(s.delSQL, change.Delete, int64(mustDel), len(sel))
		for j := range s.key {
			b, format := r.appendKeys(bufs.buf(), sel, j)
			st.vals, st.formats = append(st.vals, bufs.keep(b)), append(st.formats, format)
		}
	}
	if nupd > 0 && s.updSQL != "" {
		sel := w.selected(r, opUpdate, opUpdate)
		st := stmt(s.updSQL, change.Update, int64(len(sel)), len(sel))
		for _, i := range s.write {
			b, format := r.appendRows(bufs.buf(), sel, i)
			st.vals, st.formats = append(st.vals, bufs.keep(b)), append(st.formats, format)
		}
	}
	if nins > 0 {
		buf := appendCopyRows(bufs.buf(), r, opInsert, opInsert)
		stmt(s.copySQL, change.Insert, -1, nins).copy = bufs.keep(buf)
	}
}

// runAhead executes a flush's statements in order; it runs in a goroutine of its own while
// the writer merges on, and is the only user of the transaction until settle.
func (w *writer) runAhead(ctx context.Context, tx pgx.Tx, stmts []aheadStmt) error {
	for i := range stmts {
		st := &stmts[i]
		fail := func(err error) error {
			return &Error{Table: st.table, EventID: st.firstEv, Op: st.op, SQL: st.sql, Err: err, setBased: true}
		}
		if st.copy != nil {
			if _, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(st.copy), st.sql); err != nil {
				return fail(err)
			}
			continue
		}
		if err := w.planJoins(ctx, st.shape, st.rows); err != nil {
			return err
		}
		tag, err := tx.Conn().PgConn().ExecParams(ctx, st.sql, st.vals, nil, st.formats, nil).Close()
		if err != nil {
			return fail(err)
		}
		if n := tag.RowsAffected(); n < st.must {
			return fmt.Errorf("%s of %s (%d rows, %d found): %w", st.op, st.table, st.must, n, errResync)
		}
	}
	return nil
}

// settle waits for the flush sent ahead, if any, and returns its error; after an error the
// attempt stops (the transaction is aborted).
func (w *writer) settle() error {
	if w.inflight == nil {
		return w.aheadErr
	}
	err := <-w.inflight
	w.inflight = nil
	if err != nil && w.aheadErr == nil {
		w.aheadErr = err
	}
	return w.aheadErr
}

// settle waits for the current batch's flush sent ahead, if any: every use of the batch's
// transaction outside the writer (backlogs, events set aside, routes) comes after it.
func (a *Applier) settle() error {
	if a.w == nil {
		return nil
	}
	return a.w.settle()
}
