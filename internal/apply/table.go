package apply

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// table is what the applier knows of one target table: its columns and their types, looked up
// once per batch attempt, and the statements built for each event layout.
type table struct {
	name     change.Table
	sql      string               // the quoted name
	cols     map[string]targetCol // target columns by name
	shapes   map[string]*shape    // by layout signature
	leading  []string             // columns some valid index of the table starts with
	unique   [][]string           // key columns of each valid, non-partial, immediate unique index without expressions
	triggers bool                 // the table has triggers (foreign keys' too) or rules
	// ownersKnown, superuserOwned: catalog.SuperuserOwned, read once; ownersChecked: such a
	// table passed catalog.ForeignCode (writer.guard).
	ownersKnown, superuserOwned, ownersChecked bool
	last                                       struct { // the last layout seen, the common case
		cols, key []string
		shape     *shape
	}
}

type targetCol struct {
	// typ is the column's type without its modifier, spelled as a cast target: an explicit
	// cast to varchar(3) or bit(4) would truncate silently, while the assignment to the column
	// checks the modifier and fails on a value that does not fit, as COPY does.
	typ       string
	generated bool // a generated column (12+): never written
	// escape: a bytea column (or a domain over bytea) of a target that reads only bytea's
	// escape format (before 9.0): values in hex format ("\x…", what 9.0+ providers capture)
	// are converted before they are written.
	escape bool
	// typed: the column's type (under its domains) is not one of pg_catalog's, so its owner
	// may have made a cast from text with a function of its own (CREATE CAST needs only the
	// type's ownership), which a "::type" of a text value would run with the worker's
	// rights. Such values never meet a cast: they travel as parameters typed as the column's
	// type (array) and are read by the type's input function (docs/security.md).
	typed bool
	// arrayOf: the parameter type of an array of the column's values, for a typed column
	// (its base type with "[]"), empty when the base type is itself an array: a batch of
	// such values has no array parameter, so the layout is applied row by row.
	arrayOf string
	delim   byte // the base type's array delimiter
	// integer: the column's type (under its domains) is smallint, integer or bigint, whose
	// text form a key sort can read (shape.intKey).
	integer bool
}

// shape is one event layout (column list and key) of a table, with the statements that write
// rows of that layout.
type shape struct {
	t      *table
	cols   []string // event columns
	write  []int    // indexes in cols of the columns written
	types  []string // target type of each event column ("" when not written)
	key    []string
	keyIdx []int // index in cols of each key column, -1 when the layout lacks it
	// escape: indexes in cols, and in key, of the values to convert to bytea's escape format
	// (targetCol.escape).
	escape, escapeKey []int
	// indexed: an index of the target starts with the first key column, so the set-based
	// UPDATE and DELETE find their rows by index lookups (nested loop), never by a hash join
	// over a scan of the whole table.
	indexed bool

	// rowOnly: a typed column has no array parameter (targetCol.arrayOf): events of this
	// layout are written row by row.
	rowOnly bool
	// partial: the layout writes only some of the target's columns (logical decoding leaves
	// an unchanged TOASTed value out of an UPDATE; a handler may drop columns). An update
	// that changes the key is then written as one UPDATE … WHERE old key, not as the old
	// key's delete and the new key's insert, which would leave the other columns NULL (or
	// their defaults).
	partial bool
	// intKey: the first key column is an integer (targetCol.integer): the set-based UPDATE and
	// DELETE send their rows in the order of its values (writer.selected), the order of the
	// index that finds them, so that consecutive lookups (and the new row versions' index
	// entries) land on the same pages.
	intKey bool
	// unique: a unique index of the target has exactly the key's columns, so an insert of a
	// key the table holds fails (and ON CONFLICT can name it): what a merged table needs.
	unique bool

	copySQL, delSQL, updSQL, upsSQL, insRowSQL, updRowSQL, delRowSQL string
	// hasRowSQL (merged tables, row by row) finds whether the target holds a key, locking it.
	hasRowSQL string
}

func (a *Applier) table(ctx context.Context, q pg.DB, name change.Table) (*table, error) {
	if t, ok := a.tables[name]; ok {
		return t, nil
	}
	if err := a.settle(); err != nil {
		return nil, err
	}
	schema := name.Schema
	if schema == "" {
		schema = "public"
	}
	oid, err := catalog.Lookup(ctx, q, change.Table{Schema: schema, Name: name.Name}, "rpf")
	if errors.Is(err, pgx.ErrNoRows) && a.cfg.MakeTable != nil && name.Schema != "" {
		made, merr := a.cfg.MakeTable(ctx, q, name)
		if merr != nil {
			return nil, merr
		}
		if made {
			a.log.Info("table created on demand", "table", name.String())
			oid, err = catalog.Lookup(ctx, q, name, "rpf")
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("table %s does not exist on the target", name)
	}
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	cols, err := catalog.Columns(ctx, q, oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s does not exist on the target", name)
	}
	t := &table{name: name, sql: name.String(), cols: map[string]targetCol{}, shapes: map[string]*shape{}}
	for _, c := range cols {
		// A cast to a domain is the cast to its base type: PostgreSQL ignores casts created
		// for domains, so what matters is the base type's schema.
		tc := targetCol{typ: c.BareType, generated: c.Generated != 0, escape: c.Base.OID == byteaOID && a.byteaEscape,
			integer: c.Base.OID == int8OID || c.Base.OID == int2OID || c.Base.OID == int4OID}
		if c.Base.Schema != "pg_catalog" {
			tc.typed, tc.delim = true, c.Base.Delim
			if !c.Base.Array {
				tc.arrayOf = c.Base.Format + "[]"
			}
		}
		t.cols[c.Name] = tc
	}
	idxs, err := catalog.Indexes(ctx, q, oid)
	if err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", name, err)
	}
	for _, x := range idxs {
		if x.Valid && !x.Partial && x.Columns[0] != "" && !slices.Contains(t.leading, x.Columns[0]) {
			t.leading = append(t.leading, x.Columns[0])
		}
		if x.Unique && x.Valid && !x.Partial && x.Immediate && !slices.Contains(x.Columns[:x.NKey], "") {
			t.unique = append(t.unique, x.Columns[:x.NKey])
		}
	}
	// Triggers (foreign keys' included) and rules: what makes the order across tables matter
	// when the role cannot set session_replication_role.
	if t.triggers, err = catalog.HasTriggers(ctx, q, oid); err != nil {
		return nil, fmt.Errorf("read triggers of %s: %w", name, err)
	}
	a.tables[name] = t
	return t, nil
}

// The oids of pg_catalog.bytea, int8, int2 and int4 (fixed since PostgreSQL's bootstrap
// catalog).
const (
	byteaOID = 17
	int8OID  = 20
	int2OID  = 21
	int4OID  = 23
)

func sameSlice(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// shapeOf returns the layout of an event, checking that its columns exist on the target.
func (t *table) shapeOf(ev *change.Event) (*shape, error) {
	if l := t.last.shape; l != nil && sameSlice(l.cols, ev.Columns) && sameSlice(l.key, ev.Key) {
		return l, nil
	}
	sig := strings.Join(ev.Columns, "\x00") + "\x01" + strings.Join(ev.Key, "\x00")
	s, ok := t.shapes[sig]
	if !ok {
		var err error
		if s, err = t.newShape(ev.Columns, ev.Key); err != nil {
			return nil, err
		}
		t.shapes[sig] = s
	}
	t.last.cols, t.last.key, t.last.shape = ev.Columns, ev.Key, s
	return s, nil
}

func (t *table) newShape(cols, key []string) (*shape, error) {
	s := &shape{t: t, cols: cols, key: key, types: make([]string, len(cols)), keyIdx: make([]int, len(key))}
	for i, c := range cols {
		tc, ok := t.cols[c]
		if !ok {
			return nil, fmt.Errorf("column %s of table %s does not exist on the target", change.QuoteIdent(c), t.name)
		}
		if tc.generated {
			continue
		}
		s.types[i] = tc.typ
		s.write = append(s.write, i)
		if tc.escape {
			s.escape = append(s.escape, i)
		}
	}
	for j, k := range key {
		s.keyIdx[j] = -1
		for i, c := range cols {
			if c == k {
				s.keyIdx[j] = i
			}
		}
		tc, ok := t.cols[k]
		if !ok {
			return nil, fmt.Errorf("key column %s of table %s does not exist on the target", change.QuoteIdent(k), t.name)
		}
		if s.keyIdx[j] >= 0 && s.types[s.keyIdx[j]] == "" {
			s.types[s.keyIdx[j]] = tc.typ
			if tc.escape {
				s.escape = append(s.escape, s.keyIdx[j])
			}
		}
		if tc.escape {
			s.escapeKey = append(s.escapeKey, j)
		}
	}
	for _, l := range t.leading {
		if len(key) > 0 && l == key[0] {
			s.indexed = true
		}
	}
	s.intKey = len(key) > 0 && t.cols[key[0]].integer
	for i, c := range cols {
		if tc := t.cols[c]; tc.typed && tc.arrayOf == "" && (s.types[i] != "" || slices.Contains(key, c)) {
			s.rowOnly = true
		}
	}
	writable := 0
	for _, tc := range t.cols {
		if !tc.generated {
			writable++
		}
	}
	s.partial = len(s.write) < writable
	for _, u := range t.unique {
		if len(u) == len(key) && !slices.ContainsFunc(u, func(c string) bool { return !slices.Contains(key, c) }) {
			s.unique = true
		}
	}
	s.build()
	return s, nil
}

func (s *shape) keyType(j int) string { return s.t.cols[s.key[j]].typ }

// unnest is the SELECT item of a set-based statement that makes rows of the n-th array
// parameter for column c: an array of text cast to the column's type afterwards (setValue),
// or for a typed column an array of its base type, read by the type's input function.
func (s *shape) unnest(n int, c string, alias string) string {
	if tc := s.t.cols[c]; tc.typed {
		return fmt.Sprintf("unnest($%d::%s) AS %s", n, tc.arrayOf, alias)
	}
	return fmt.Sprintf("unnest($%d::text[]) AS %s", n, alias)
}

// value is the expression of an unnested column c as the column's type.
func (s *shape) value(c, alias string) string {
	if tc := s.t.cols[c]; !tc.typed {
		return alias + "::" + tc.typ
	}
	return alias
}

// build writes the statements of the layout. Values travel in text form and are read by the
// target column type's input function: one parameter typed as the column's type per value for
// the row-by-row statements, COPY's text format for inserts, and for the set-based updates and
// deletes arrays unnested on the server — of text cast to the column's type where the type is
// one of pg_catalog's (no role but a superuser can add a cast to it), of the column's base type
// otherwise (targetCol.typed).
func (s *shape) build() {
	q := change.QuoteIdent
	isKey := map[int]bool{}
	for _, i := range s.keyIdx {
		isKey[i] = true
	}
	// The pieces the statements share.
	var cols, unnested, values, params, sets, rowSets []string
	for n, i := range s.write {
		v := "s.v" + strconv.Itoa(i)
		cols = append(cols, q(s.cols[i]))
		unnested = append(unnested, s.unnest(n+1, s.cols[i], "v"+strconv.Itoa(i)))
		values = append(values, s.value(s.cols[i], v))
		params = append(params, fmt.Sprintf("$%d::%s", n+1, s.types[i]))
		rowSets = append(rowSets, fmt.Sprintf("%s = $%d::%s", q(s.cols[i]), n+1, s.types[i]))
		if !isKey[i] {
			sets = append(sets, q(s.cols[i])+" = "+s.value(s.cols[i], v))
		}
	}
	var delKeys, delMatch, rowMatch []string
	for j, k := range s.key {
		delKeys = append(delKeys, s.unnest(j+1, k, "k"+strconv.Itoa(j)))
		delMatch = append(delMatch, "t."+q(k)+" = "+s.value(k, "s.k"+strconv.Itoa(j)))
		rowMatch = append(rowMatch, "t."+q(k)+" = "+s.value(k, "s.v"+strconv.Itoa(s.keyIdx[j])))
	}
	list, and := func(x []string) string { return strings.Join(x, ", ") }, func(x []string) string { return strings.Join(x, " AND ") }

	s.copySQL = "COPY " + s.t.sql + " (" + list(cols) + ") FROM STDIN"

	// DELETE … USING (unnest of the keys)
	s.delSQL = "DELETE FROM " + s.t.sql + " AS t USING (SELECT " + list(delKeys) + ") AS s WHERE " + and(delMatch)

	// UPDATE … FROM (unnest of the rows), the non-key columns only
	if len(sets) > 0 {
		s.updSQL = "UPDATE " + s.t.sql + " AS t SET " + list(sets) +
			" FROM (SELECT " + list(unnested) + ") AS s WHERE " + and(rowMatch)
	}

	// INSERT … SELECT (unnest of the rows) WHERE NOT EXISTS: the upserts the UPDATE did not
	// find (change.Upsert). The values become the column's type without modifier (a cast of
	// text for pg_catalog's types, the input function otherwise: unnest, value), and are
	// assigned to the column, which checks the modifier as COPY does.
	s.upsSQL = "INSERT INTO " + s.t.sql + " (" + list(cols) + ") SELECT " + list(values) +
		" FROM (SELECT " + list(unnested) + ") AS s WHERE NOT EXISTS (SELECT 1 FROM " + s.t.sql + " AS t WHERE " + and(rowMatch) + ")"

	// Row by row.
	s.insRowSQL = "INSERT INTO " + s.t.sql + " (" + list(cols) + ") VALUES (" + list(params) + ")"
	s.updRowSQL = "UPDATE " + s.t.sql + " SET " + list(rowSets) + " WHERE " + s.keyWhere(len(s.write)+1)
	s.delRowSQL = "DELETE FROM " + s.t.sql + " WHERE " + s.keyWhere(1)
	s.hasRowSQL = "SELECT 1 FROM " + s.t.sql + " WHERE " + s.keyWhere(1) + " FOR UPDATE"
}

func (s *shape) keyWhere(first int) string {
	var b strings.Builder
	for j, k := range s.key {
		if j > 0 {
			b.WriteString(" AND ")
		}
		b.WriteString(change.QuoteIdent(k) + " = $" + strconv.Itoa(first+j) + "::" + s.keyType(j))
	}
	return b.String()
}

// escapeBytea rewrites the event's bytea values in hex format into escape format, for a
// target before 9.0 (shape.escape).
func (s *shape) escapeBytea(ev *change.Event) error {
	for _, i := range s.escape {
		out, err := hexToEscape(ev.Values[i])
		if err != nil {
			return fmt.Errorf("column %s: %w", change.QuoteIdent(s.cols[i]), err)
		}
		ev.Values[i] = out
	}
	if ev.OldKey == nil {
		return nil
	}
	for _, j := range s.escapeKey {
		if j >= len(ev.OldKey) {
			continue
		}
		out, err := hexToEscape(ev.OldKey[j])
		if err != nil {
			return fmt.Errorf("old key column %s: %w", change.QuoteIdent(s.key[j]), err)
		}
		ev.OldKey[j] = out
	}
	return nil
}

// hexToEscape converts a bytea value in hex format (\x0a2f…) into escape format, which every
// version reads: printable ASCII as itself, a backslash doubled, every other byte as \ooo.
// NULL and values already in escape format pass unchanged.
func hexToEscape(v change.Value) (change.Value, error) {
	if !v.Valid || !strings.HasPrefix(v.Text, `\x`) {
		return v, nil
	}
	raw, err := hex.DecodeString(v.Text[2:])
	if err != nil {
		return v, fmt.Errorf("bytea value in hex format: %w", err)
	}
	var b strings.Builder
	b.Grow(len(raw) * 2)
	for _, c := range raw {
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20 || c > 0x7e:
			b.Write([]byte{'\\', '0' + c>>6, '0' + c>>3&7, '0' + c&7})
		default:
			b.WriteByte(c)
		}
	}
	return change.Text(b.String()), nil
}
