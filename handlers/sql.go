package handlers

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// Select is what a table's handlers make of its rows, as one query over the provider table:
//
//	SELECT Columns[0].Expr AS Columns[0].Name, … FROM Source WHERE Where[0] AND …
//
// whose rows go to table Table. The initial copy runs it inside COPY (…) TO STDOUT and skiff
// compare checksums it, so that both read set-based what replication writes event by event.
// A handler that can say what it does in these terms implements SQLHandler.
type Select struct {
	// Source is the provider table the rows are read from.
	Source change.Table
	// Table is where the rows go (the handlers' ev.Table).
	Table change.Table
	// Columns are the columns written, in order (the handlers' ev.Columns).
	Columns []SelectColumn
	// Key names the key columns among Columns (the handlers' ev.Key).
	Key []string
	// Where holds boolean SQL conditions over Source's columns, all of which a row must
	// meet; a NULL result counts as false.
	Where []string
	// Only reads Source without its inheritance children (FROM ONLY): a table whose capture
	// covers its own rows only. A partitioned table, or one captured with its children, is
	// read whole.
	Only bool
}

// SelectColumn is one column of a Select.
type SelectColumn struct {
	// Name is the column's name where the rows go.
	Name string
	// Expr is SQL over the source table's columns that gives the column's value; a source
	// column written unchanged is its quoted name.
	Expr string
	// Text is SQL that gives the value as an event carries it: the text of the type's output
	// function, which is what the capture trigger's record literal holds (Value.Text). A
	// handler that compares values as text, as Filter does, compares this.
	Text string
	// Source is the source column Expr reads unchanged, "" for a computed value; Type is
	// that column's type name (pg_type.typname, the base type's for a domain), "" for a
	// computed value. A handler that changes Expr sets both to "" and Text to the new
	// value's text.
	Source, Type string
}

// SourceColumn describes a column of the provider table for NewSelect.
type SourceColumn struct {
	Name string
	// Type is the type's name (pg_type.typname; the base type's for a domain).
	Type string
	// Output is the type's output function, schema-qualified and quoted
	// (e.g. "pg_catalog"."boolout"). Give it: "" falls back on a cast to text, which differs
	// from the output for some types (bool, inet, char(n)) and may run a cast function that
	// the type's owner created (docs/security.md).
	Output string
}

// NewSelect returns the Select of a provider table's rows as the capture queues them: every
// column under its own name, in order, keyed by key, into the table itself.
func NewSelect(source change.Table, columns []SourceColumn, key []string) Select {
	s := Select{Source: source, Table: source, Key: slices.Clone(key)}
	for _, c := range columns {
		id := change.QuoteIdent(c.Name)
		text := "(" + id + ")::text"
		if c.Output != "" {
			text = "pg_catalog.textin(" + c.Output + "(" + id + "))"
		}
		s.Columns = append(s.Columns, SelectColumn{Name: c.Name, Expr: id, Text: text, Source: c.Name, Type: c.Type})
	}
	return s
}

// Clone returns a copy of s that shares no slice with it.
func (s Select) Clone() Select {
	s.Columns = slices.Clone(s.Columns)
	s.Key = slices.Clone(s.Key)
	s.Where = slices.Clone(s.Where)
	return s
}

// Column returns the column called name and whether there is one.
func (s *Select) Column(name string) (SelectColumn, bool) {
	for _, c := range s.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return SelectColumn{}, false
}

// ColumnNames returns the names of the columns, in order.
func (s *Select) ColumnNames() []string {
	out := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		out[i] = c.Name
	}
	return out
}

// Plain reports whether the Select reads source columns unchanged, without a condition: a
// plain COPY of those columns of the table does the same.
func (s *Select) Plain() bool {
	if len(s.Where) > 0 {
		return false
	}
	for _, c := range s.Columns {
		if c.Source == "" || c.Expr != change.QuoteIdent(c.Source) {
			return false
		}
	}
	return true
}

// SourceColumns returns the source columns the Select reads unchanged, in order (for a Plain
// Select: every column it writes).
func (s *Select) SourceColumns() []string {
	var out []string
	for _, c := range s.Columns {
		if c.Source != "" {
			out = append(out, c.Source)
		}
	}
	return out
}

// Condition returns the WHERE condition of the Select ("" when it has none).
func (s *Select) Condition() string {
	if len(s.Where) == 0 {
		return ""
	}
	parts := make([]string, len(s.Where))
	for i, w := range s.Where {
		parts[i] = "coalesce((" + w + "), false)"
	}
	return strings.Join(parts, " AND ")
}

// SQL returns the query: SELECT expr AS name, … FROM source [WHERE …]. Names are quoted;
// expressions and conditions are the handlers' SQL.
func (s *Select) SQL() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range s.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Expr + " AS " + change.QuoteIdent(c.Name))
	}
	b.WriteString(" FROM ")
	if s.Only {
		b.WriteString("ONLY ")
	}
	b.WriteString(s.Source.String())
	if w := s.Condition(); w != "" {
		b.WriteString(" WHERE " + w)
	}
	return b.String()
}

// SQLHandler is an optional ability of a Handler (found by type assertion, as the copy and
// compare look for it): its effect on a table's rows expressed in SQL, so that the initial
// copy and skiff compare read the provider set-based instead of running every row through
// Handle.
//
// SelectSQL rewrites s, which describes the rows Handle receives (a row of the provider
// table as an Insert event, after the handlers before this one), into the rows Handle
// returns: for every row r that s yields, the rewritten s must yield the row Handle makes of
// r (its Table, Columns, Key and values) and no row for which Handle returns keep=false. Rows
// of one table must all go to one Table. It returns ErrNoSQL when this configuration has no
// SQL form (the copy and compare then run the rows through Handle in Go), and another error
// where Handle would fail for every row (e.g. a column that does not exist).
type SQLHandler interface {
	SelectSQL(s *Select) error
}

// ErrNoSQL is returned by SQLHandler.SelectSQL when a handler's configuration has no SQL form.
var ErrNoSQL = errors.New("handler has no SQL form")

// SelectOf applies handler h to the Select s (which it leaves unchanged) and returns the
// result. ok is false when h, or a handler it chains, has no SQL form.
func SelectOf(h Handler, s Select) (_ Select, ok bool, err error) {
	out := s.Clone()
	if h == nil {
		return out, true, nil
	}
	sh, isSQL := h.(SQLHandler)
	if !isSQL {
		return s, false, nil
	}
	if err := sh.SelectSQL(&out); err != nil {
		if errors.Is(err, ErrNoSQL) {
			return s, false, nil
		}
		return s, false, err
	}
	return out, true, nil
}

var (
	_ SQLHandler = Chain(nil)
	_ SQLHandler = Rename{}
	_ SQLHandler = (*Columns)(nil)
	_ SQLHandler = Filter{}
)

// SelectSQL applies the chain's handlers in order; ErrNoSQL when one of them has no SQL form.
func (c Chain) SelectSQL(s *Select) error {
	for _, h := range c {
		sh, ok := h.(SQLHandler)
		if !ok {
			return ErrNoSQL
		}
		if err := sh.SelectSQL(s); err != nil {
			return err
		}
	}
	return nil
}

// SelectSQL renames the destination table.
func (r Rename) SelectSQL(s *Select) error {
	if r.Schema != "" {
		s.Table.Schema = r.Schema
	}
	if r.Name != "" {
		s.Table.Name = r.Name
	}
	return nil
}

// SelectSQL drops the excluded columns and renames the others.
func (c *Columns) SelectSQL(s *Select) error {
	out := s.Columns[:0:0]
	for _, col := range s.Columns {
		if slices.Contains(c.Exclude, col.Name) {
			if slices.Contains(s.Key, col.Name) {
				return fmt.Errorf("table %s: key column %s cannot be excluded", s.Source, change.QuoteIdent(col.Name))
			}
			continue
		}
		col.Name = c.name(col.Name)
		out = append(out, col)
	}
	s.Columns = out
	key := make([]string, len(s.Key))
	for i, k := range s.Key {
		key[i] = c.name(k)
	}
	s.Key = key
	return nil
}

// SelectSQL keeps the rows whose column's text is one of In.
func (f Filter) SelectSQL(s *Select) error {
	col, ok := s.Column(f.Column)
	if !ok {
		return fmt.Errorf("filter: table %s has no column %s", s.Source, change.QuoteIdent(f.Column))
	}
	if len(f.In) == 0 {
		s.Where = append(s.Where, "false")
		return nil
	}
	vals := make([]string, len(f.In))
	for i, v := range f.In {
		vals[i] = change.QuoteLiteral(v)
	}
	s.Where = append(s.Where, col.Text+" IN ("+strings.Join(vals, ", ")+")")
	return nil
}
