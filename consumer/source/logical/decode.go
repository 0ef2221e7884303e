package logical

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/skiffdb/skiff/consumer/change"
)

// relation is what the source knows of a decoded table: its columns in the stream's order and
// its key. From pgoutput's relation messages (sent before a table's first change and again
// after DDL), or for test_decoding from the catalog.
type relation struct {
	table change.Table
	cols  []string
	types []uint32 // pgoutput: the columns' type oids
	// ident is the replica identity: 'd' default (primary key), 'i' index, 'f' full,
	// 'n' nothing.
	ident byte
	// key is the replica identity's columns: the primary key ('d'), the index's columns
	// ('i'), or for FULL the primary key when the table has one. fullNoKey: FULL without a
	// primary key; an event's key is then the old row's non-NULL columns.
	key       []string
	fullNoKey bool
	// generated columns (test_decoding prints stored generated columns; pgoutput does not
	// send them) and the live columns seen in the catalog.
	generated map[string]bool
	known     map[string]bool
	// missing: test_decoding names a table the catalog no longer has (dropped since): its
	// rows decode without a key.
	missing bool

	layouts map[string][]string
}

// intern returns a shared slice equal to cols: events of one layout share it.
func (r *relation) intern(cols []string) []string {
	if r.layouts == nil {
		r.layouts = map[string][]string{}
	}
	k := strings.Join(cols, "\x00")
	if l, ok := r.layouts[k]; ok && len(l) == len(cols) {
		return l
	}
	l := slices.Clone(cols)
	r.layouts[k] = l
	return l
}

// field is one column of a decoded tuple.
type field = tdField

func find(fs []field, name string) (field, bool) {
	for _, f := range fs {
		if f.Name == name {
			return f, true
		}
	}
	return field{}, false
}

// errNoIdentity explains an update or delete of a table that has no key to find the row by.
func errNoIdentity(t change.Table) error {
	return fmt.Errorf("%s has no replica identity (REPLICA IDENTITY NOTHING, or DEFAULT without a primary key): "+
		"its updates and deletes cannot be replicated; add a primary key or set REPLICA IDENTITY USING INDEX or FULL", t)
}

// rowEvent makes the change event of a row change. old is the old tuple (the key, or with
// REPLICA IDENTITY FULL the whole old row; nil when not sent), new the new row.
//
// Unchanged TOASTed values of an UPDATE (not in the record) are taken from the old row when
// it holds them (FULL), else left out of the event: the applier then leaves the column as it
// is on the target, never overwriting it with NULL.
func (r *relation) rowEvent(op change.Op, old, new []field) change.Event {
	ev := change.Event{Op: op, Table: r.table}
	var names []string
	var vals []change.Value
	row := new
	if op == change.Delete {
		row = old
	}
	for _, f := range row {
		if r.generated[f.Name] {
			continue
		}
		if f.Toast {
			o, ok := find(old, f.Name)
			if op == change.Delete || !ok || o.Toast {
				continue
			}
			f = o
		}
		names = append(names, f.Name)
		vals = append(vals, f.Value)
	}
	if op == change.Delete && old == nil {
		ev.Err = errNoIdentity(r.table)
		return ev
	}
	ev.Columns = r.intern(names)
	ev.Values = vals
	if r.fullNoKey {
		// No primary key: the row is found by every non-NULL column of the old row (an
		// insert's key: those of the new row).
		var key []string
		var oldKey []change.Value
		src := old
		if op == change.Insert {
			src = new
		}
		for _, f := range src {
			if f.Toast || !f.Value.Valid || r.generated[f.Name] {
				continue
			}
			key = append(key, f.Name)
			oldKey = append(oldKey, f.Value)
		}
		if len(key) == 0 && op != change.Insert {
			ev.Err = errNoIdentity(r.table)
			return ev
		}
		ev.Key = r.intern(key)
		if op == change.Update {
			ev.OldKey = oldKey
		}
		return ev
	}
	ev.Key = r.key
	if op == change.Insert {
		return ev
	}
	if len(r.key) == 0 {
		ev.Err = errNoIdentity(r.table)
		return ev
	}
	if op == change.Update && old != nil {
		oldKey := make([]change.Value, len(r.key))
		changed := false
		for i, k := range r.key {
			if f, ok := find(old, k); ok && !f.Toast {
				oldKey[i] = f.Value
			}
			if nv, ok := ev.Value(k); !ok || nv != oldKey[i] {
				changed = true
			}
		}
		if changed {
			ev.OldKey = oldKey
		}
	}
	return ev
}

// decoded is what one message of the stream is.
type decoded struct {
	begin, commit bool
	xid           uint32 // begin (and commit for test_decoding)
	end           LSN    // commit: end of the commit record
	// final is the start of the commit record (pgoutput: begin and commit; 0 for
	// test_decoding, whose begin does not tell it).
	final LSN
	time  time.Time // commit; pgoutput's begin too
}

// decoder turns a plugin's messages into events.
type decoder interface {
	// decode reads one message and hands the row changes it holds to emit.
	decode(ctx context.Context, w wal, emit func(change.Event) error) (decoded, error)
	// reset forgets what was learnt from the stream (a new stream resends relation messages).
	reset()
}

// identityLookup returns a table's replica identity and its columns (catalog.ReplicaIdentity).
type identityLookup func(ctx context.Context, oid uint32) (byte, []string, error)

// pgoutputDecoder reads pgoutput's protocol version 1.
type pgoutputDecoder struct {
	rels     map[uint32]*relation
	identity identityLookup
}

func (d *pgoutputDecoder) reset() { d.rels = map[uint32]*relation{} }

func (d *pgoutputDecoder) rel(id uint32) (*relation, error) {
	r, ok := d.rels[id]
	if !ok {
		return nil, fmt.Errorf("pgoutput: change of relation %d before its relation message", id)
	}
	return r, nil
}

func (d *pgoutputDecoder) tuple(r *relation, t *pglogrepl.TupleData) ([]field, error) {
	if t == nil {
		return nil, nil
	}
	if len(t.Columns) != len(r.cols) {
		return nil, fmt.Errorf("pgoutput: %s: tuple of %d columns, relation message has %d", r.table, len(t.Columns), len(r.cols))
	}
	out := make([]field, len(t.Columns))
	for i, c := range t.Columns {
		out[i].Name = r.cols[i]
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			out[i].Value = change.Null
		case pglogrepl.TupleDataTypeToast:
			out[i].Toast = true
		case pglogrepl.TupleDataTypeText:
			out[i].Value = change.Text(string(c.Data))
		default:
			return nil, fmt.Errorf("pgoutput: %s column %s: tuple data of type %q", r.table, r.cols[i], c.DataType)
		}
	}
	return out, nil
}

// keyOnly keeps the columns of an old tuple sent with the key only ('K': pgoutput sends the
// other columns as NULL).
func keyOnly(r *relation, fs []field) []field {
	out := fs[:0:0]
	for _, f := range fs {
		if slices.Contains(r.key, f.Name) {
			out = append(out, f)
		}
	}
	return out
}

func (d *pgoutputDecoder) decode(ctx context.Context, w wal, emit func(change.Event) error) (decoded, error) {
	msg, err := pglogrepl.Parse(w.data)
	if err != nil {
		return decoded{}, fmt.Errorf("pgoutput: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		return decoded{begin: true, xid: m.Xid, final: m.FinalLSN, time: m.CommitTime}, nil
	case *pglogrepl.CommitMessage:
		return decoded{commit: true, end: m.TransactionEndLSN, final: m.CommitLSN, time: m.CommitTime}, nil
	case *pglogrepl.RelationMessage:
		r := &relation{table: change.Table{Schema: m.Namespace, Name: m.RelationName}, ident: m.ReplicaIdentity}
		for _, c := range m.Columns {
			r.cols = append(r.cols, c.Name)
			r.types = append(r.types, c.DataType)
			if c.Flags&1 != 0 && m.ReplicaIdentity != 'f' {
				r.key = append(r.key, c.Name)
			}
		}
		if m.ReplicaIdentity == 'f' {
			_, pk, err := d.identity(ctx, m.RelationID)
			if err != nil {
				return decoded{}, fmt.Errorf("replica identity of %s: %w", r.table, err)
			}
			for _, k := range pk {
				if !slices.Contains(r.cols, k) {
					pk = nil
					break
				}
			}
			r.key, r.fullNoKey = pk, len(pk) == 0
		}
		r.key = r.intern(r.key)
		d.rels[m.RelationID] = r
	case *pglogrepl.InsertMessage:
		r, err := d.rel(m.RelationID)
		if err != nil {
			return decoded{}, err
		}
		row, err := d.tuple(r, m.Tuple)
		if err != nil {
			return decoded{}, err
		}
		return decoded{}, emit(r.rowEvent(change.Insert, nil, row))
	case *pglogrepl.UpdateMessage:
		r, err := d.rel(m.RelationID)
		if err != nil {
			return decoded{}, err
		}
		old, err := d.tuple(r, m.OldTuple)
		if err != nil {
			return decoded{}, err
		}
		if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey {
			old = keyOnly(r, old)
		}
		row, err := d.tuple(r, m.NewTuple)
		if err != nil {
			return decoded{}, err
		}
		return decoded{}, emit(r.rowEvent(change.Update, old, row))
	case *pglogrepl.DeleteMessage:
		r, err := d.rel(m.RelationID)
		if err != nil {
			return decoded{}, err
		}
		old, err := d.tuple(r, m.OldTuple)
		if err != nil {
			return decoded{}, err
		}
		if m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey {
			old = keyOnly(r, old)
		}
		return decoded{}, emit(r.rowEvent(change.Delete, old, nil))
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			r, err := d.rel(id)
			if err != nil {
				return decoded{}, err
			}
			if err := emit(change.Event{Op: change.Truncate, Table: r.table}); err != nil {
				return decoded{}, err
			}
		}
	}
	// Type, origin and logical messages carry nothing skiff replays.
	return decoded{}, nil
}

// tableInfo is what the catalog says of a table, for test_decoding.
type tableInfo struct {
	missing   bool // the table is gone
	ident     byte
	key       []string
	columns   []string
	generated []string
}

// tableLookup reads a table's catalog (for test_decoding).
type tableLookup func(ctx context.Context, t change.Table) (tableInfo, error)

// testDecodingDecoder reads test_decoding's text (include-xids, include-timestamp,
// skip-empty-xacts). The key is not in the output: it comes from the catalog, read again when
// a row holds a column the catalog did not have or lacks a key column (DDL).
type testDecodingDecoder struct {
	rels   map[change.Table]*relation
	lookup tableLookup
}

func (d *testDecodingDecoder) reset() { d.rels = map[change.Table]*relation{} }

func (d *testDecodingDecoder) load(ctx context.Context, t change.Table) (*relation, error) {
	info, err := d.lookup(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("catalog of %s: %w", t, err)
	}
	r := &relation{table: t, ident: info.ident, missing: info.missing, generated: map[string]bool{}, known: map[string]bool{}}
	for _, g := range info.generated {
		r.generated[g] = true
	}
	for _, c := range info.columns {
		r.known[c] = true
	}
	r.cols = info.columns
	r.key = info.key
	if info.ident == 'f' && len(r.key) == 0 {
		r.fullNoKey = true
	}
	r.key = r.intern(r.key)
	d.rels[t] = r
	return r, nil
}

// current returns the relation of t, read again from the catalog when the row's columns show
// that the cached one is out of date.
func (d *testDecodingDecoder) current(ctx context.Context, t change.Table, row []field) (*relation, error) {
	r, ok := d.rels[t]
	if ok && fresh(r, row) {
		return r, nil
	}
	return d.load(ctx, t)
}

func fresh(r *relation, row []field) bool {
	if r.missing {
		return true
	}
	for _, f := range row {
		if !r.known[f.Name] {
			return false
		}
	}
	return true
}

func (d *testDecodingDecoder) decode(ctx context.Context, w wal, emit func(change.Event) error) (decoded, error) {
	l, err := parseTestDecoding(string(w.data))
	if err != nil {
		return decoded{}, err
	}
	switch l.Kind {
	case tdBegin:
		return decoded{begin: true, xid: l.Xid}, nil
	case tdCommit:
		// The message of a COMMIT is written at the end of the commit record.
		return decoded{commit: true, xid: l.Xid, end: w.start, time: l.CommitTime}, nil
	case tdTruncate:
		for _, t := range l.Tables {
			if err := emit(change.Event{Op: change.Truncate, Table: t}); err != nil {
				return decoded{}, err
			}
		}
	case tdChange:
		t := l.Tables[0]
		r, err := d.current(ctx, t, append(slices.Clip(l.New), l.Old...))
		if err != nil {
			return decoded{}, err
		}
		if !fresh(r, l.New) || !fresh(r, l.Old) {
			// A column the row has was dropped since: the row cannot be told right. The
			// event stops its batch only if the worker would apply it.
			return decoded{}, emit(change.Event{Op: l.Op, Table: t, Err: fmt.Errorf(
				"test_decoding: a row of %s holds columns the table no longer has (dropped or renamed since it was written)", t)})
		}
		var old []field
		if l.HasOld {
			old = l.Old
			if old == nil {
				old = []field{} // an old key of NULLs only
			}
		}
		return decoded{}, emit(r.rowEvent(l.Op, old, l.New))
	}
	return decoded{}, nil
}

var errNotResumed = errors.New("logical source: Resume was not called")
