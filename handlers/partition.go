package handlers

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skiffdb/skiff/consumer/change"
)

// PartitionName is the name of the Partition handler in a Registry.
const PartitionName = "partition"

// Partition routes the rows of one table to child tables by the value of one column
// ("partition"), as Londiste's part handler does: by a time bucket (By: day, month or year of a
// date or timestamp column), by ranges, or by lists of values. Exactly one of By, Ranges and
// Lists is set.
//
// A bucket's child is named after the destination (the table the handlers before send the
// row to): <dest>_<yyyy> (year), <dest>_<yyyy>_<mm> (month), <dest>_<yyyy>_<mm>_<dd> (day),
// in the destination's schema; the date is the value's (timestamptz values are UTC, as the
// capture trigger writes them). Ranges and lists name their children (Table: "name" in the
// destination's schema, or "schema.name").
//
// With Create, a child the target lacks is created on demand, in the transaction that writes
// its first row (the batch's, or the initial copy's), from the destination's definition: a
// partition of it (FOR VALUES … of the child's bucket, range or list; DEFAULT for Default)
// when the destination is a partitioned table, else CREATE TABLE child (LIKE dest INCLUDING
// DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES). Without it a missing child fails the
// batch, naming the row's key and the child.
//
// An update is written to the child of its new row. One that changes the key, when the
// column is a key column (a partitioned table's key includes its partition column), and
// moves the row to another child, becomes a Remove of the old key from the old child and a
// write of the new row (Insert, or Upsert) to the new one (Split). A change of a column that
// is not a key column cannot be followed (an update carries only its new row): such a column
// must not change, or the old child keeps the row. A delete goes to the child of its old row.
// A TRUNCATE truncates the destination itself (every partition of a partitioned one).
type Partition struct {
	// Column is the source column (as the handlers before name it) whose value routes the row.
	Column string `json:"column"`
	// By is "day", "month" or "year": the bucket of a date or timestamp value.
	By string `json:"by,omitempty"`
	// Ranges route a value v to the first range with From <= v < To (From or To absent: no
	// bound). Bounds and values compare as numbers when both are numbers, else as text (ISO
	// dates and timestamps order so).
	Ranges []PartitionRange `json:"ranges,omitempty"`
	// Lists route a value to the child whose In holds its text.
	Lists []PartitionList `json:"lists,omitempty"`
	// Default is the child of a value no range or list holds (and of NULL); "" makes such a
	// row an error.
	Default string `json:"default,omitempty"`
	// Create creates a missing child from the destination's definition.
	Create bool `json:"create,omitempty"`

	children map[string]change.Table // a configured child by its Table text, parsed
}

// PartitionRange is one child of a range-partitioned table: values From <= v < To.
type PartitionRange struct {
	From  *Bound `json:"from,omitempty"`
	To    *Bound `json:"to,omitempty"`
	Table string `json:"table"`
}

// PartitionList is one child of a list-partitioned table: the values whose text is in In.
type PartitionList struct {
	In    []string `json:"in"`
	Table string   `json:"table"`
}

// Bound is a range bound: a JSON string or number, kept as its text.
type Bound struct{ Text string }

// UnmarshalJSON reads a string or a number.
func (b *Bound) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, &b.Text)
	}
	var n json.Number
	if err := json.Unmarshal(data, &n); err != nil {
		return fmt.Errorf("range bound %s: a string or a number", data)
	}
	b.Text = n.String()
	return nil
}

// MarshalJSON writes the bound as a string.
func (b Bound) MarshalJSON() ([]byte, error) { return json.Marshal(b.Text) }

// NewPartition checks a configuration and returns its handler.
func NewPartition(cfg json.RawMessage) (*Partition, error) {
	p := &Partition{}
	if err := decode(cfg, p); err != nil {
		return nil, err
	}
	if p.Column == "" {
		return nil, errors.New(`partition needs "column"`)
	}
	kinds := 0
	if p.By != "" {
		kinds++
		if !slices.Contains([]string{"day", "month", "year"}, p.By) {
			return nil, fmt.Errorf(`partition: "by" is day, month or year, not %q`, p.By)
		}
	}
	if len(p.Ranges) > 0 {
		kinds++
	}
	if len(p.Lists) > 0 {
		kinds++
	}
	if kinds != 1 {
		return nil, errors.New(`partition needs exactly one of "by" (day, month, year), "ranges" or "lists"`)
	}
	if p.By != "" && p.Default != "" {
		return nil, errors.New(`partition: a bucket ("by") has no "default"`)
	}
	p.children = map[string]change.Table{}
	names := []string{p.Default}
	for _, r := range p.Ranges {
		names = append(names, r.Table)
		if r.Table == "" {
			return nil, errors.New(`partition: every range needs "table"`)
		}
	}
	for _, l := range p.Lists {
		names = append(names, l.Table)
		if l.Table == "" {
			return nil, errors.New(`partition: every list needs "table"`)
		}
	}
	for _, n := range names {
		if n == "" {
			continue
		}
		t, err := change.ParseTableName(n)
		if err != nil {
			return nil, fmt.Errorf("partition: child %q: %w", n, err)
		}
		p.children[n] = t
	}
	return p, nil
}

var (
	_ Splitter   = (*Partition)(nil)
	_ TableMaker = (*Partition)(nil)
)

// Handle routes an event that stays one event (see Split).
func (p *Partition) Handle(ev *change.Event) (bool, error) { return handleOne(p, ev) }

// Split routes ev to its child; a key-changing update that moves the row to another child
// becomes a Remove from the old child and a write to the new one.
func (p *Partition) Split(ev *change.Event, out []change.Event) ([]change.Event, error) {
	if ev.Op == change.Truncate {
		return append(out, *ev), nil
	}
	dest := ev.Table
	v, ok := ev.Value(p.Column)
	if !ok {
		return out, fmt.Errorf("partition: table %s, row %s: no column %s in the event", dest, keyText(ev), change.QuoteIdent(p.Column))
	}
	child, err := p.child(dest, v)
	if err != nil {
		return out, fmt.Errorf("partition: table %s, row %s: %w", dest, keyText(ev), err)
	}
	if ev.OldKey != nil && (ev.Op == change.Update || ev.Op == change.Upsert || ev.Op == change.Remove) {
		if i := slices.Index(ev.Key, p.Column); i >= 0 && i < len(ev.OldKey) {
			old, err := p.child(dest, ev.OldKey[i])
			if err != nil {
				return out, fmt.Errorf("partition: table %s, row %s (old key): %w", dest, keyText(ev), err)
			}
			if old != child {
				out = append(out, change.Event{ID: ev.ID, TxID: ev.TxID, Op: change.Remove, Table: old,
					Columns: ev.Key, Values: ev.OldKey, Key: ev.Key})
				if ev.Op == change.Remove {
					return out, nil // the new row is not wanted (a filter before)
				}
				moved := *ev
				moved.Table, moved.OldKey = child, nil
				if moved.Op == change.Update {
					moved.Op = change.Insert
				}
				return append(out, moved), nil
			}
		}
	}
	ev.Table = child
	return append(out, *ev), nil
}

// child returns the table a value of Column goes to, for destination dest.
func (p *Partition) child(dest change.Table, v change.Value) (change.Table, error) {
	if p.By != "" {
		if !v.Valid {
			return change.Table{}, fmt.Errorf("column %s is NULL: no %s bucket", change.QuoteIdent(p.Column), p.By)
		}
		y, m, d, err := datePart(v.Text)
		if err != nil {
			return change.Table{}, fmt.Errorf("column %s: %w", change.QuoteIdent(p.Column), err)
		}
		return p.bucket(dest, y, m, d), nil
	}
	name, err := p.childName(v)
	if err != nil {
		return change.Table{}, err
	}
	return p.resolve(dest, name), nil
}

// resolve names a configured child in the destination's schema unless it has its own.
func (p *Partition) resolve(dest change.Table, name string) change.Table {
	t := p.children[name]
	if t.Schema == "" {
		t.Schema = dest.Schema
	}
	return t
}

// childName is the configured child (range, list, default) of a value.
func (p *Partition) childName(v change.Value) (string, error) {
	if v.Valid {
		for _, r := range p.Ranges {
			if (r.From == nil || compareValues(v.Text, r.From.Text) >= 0) && (r.To == nil || compareValues(v.Text, r.To.Text) < 0) {
				return r.Table, nil
			}
		}
		for _, l := range p.Lists {
			if slices.Contains(l.In, v.Text) {
				return l.Table, nil
			}
		}
	}
	if p.Default != "" {
		return p.Default, nil
	}
	if !v.Valid {
		return "", fmt.Errorf("column %s is NULL and the partition has no default", change.QuoteIdent(p.Column))
	}
	return "", fmt.Errorf("value %q of column %s is in no partition and there is no default", v.Text, change.QuoteIdent(p.Column))
}

// bucket names the child of a date: dest_yyyy[_mm[_dd]].
func (p *Partition) bucket(dest change.Table, y, m, d int) change.Table {
	name := fmt.Sprintf("%s_%04d", dest.Name, y)
	if p.By != "year" {
		name += fmt.Sprintf("_%02d", m)
	}
	if p.By == "day" {
		name += fmt.Sprintf("_%02d", d)
	}
	return change.Table{Schema: dest.Schema, Name: name}
}

// datePart reads the date at the start of a date or timestamp value in ISO form
// (yyyy-mm-dd…); BC dates and years beyond 9999 are refused.
func datePart(s string) (y, m, d int, err error) {
	if strings.HasSuffix(s, " BC") || len(s) < 10 || s[4] != '-' || s[7] != '-' || (len(s) > 10 && s[10] != ' ' && s[10] != 'T') {
		return 0, 0, 0, fmt.Errorf("value %q is not a date or timestamp from year 1 to 9999 (yyyy-mm-dd…)", s)
	}
	t, perr := time.Parse("2006-01-02", s[:10])
	if perr != nil {
		return 0, 0, 0, fmt.Errorf("value %q is not a date or timestamp from year 1 to 9999 (yyyy-mm-dd…)", s)
	}
	return t.Year(), int(t.Month()), t.Day(), nil
}

// compareValues compares two values as numbers when both are, else as text.
func compareValues(a, b string) int {
	// Integers (a key, a count) are the common case: compared without big.Rat's allocations.
	if x, err := strconv.ParseInt(a, 10, 64); err == nil {
		if y, err := strconv.ParseInt(b, 10, 64); err == nil {
			return cmp.Compare(x, y)
		}
	}
	x, okx := new(big.Rat).SetString(strings.TrimSpace(a))
	y, oky := new(big.Rat).SetString(strings.TrimSpace(b))
	if okx && oky {
		return x.Cmp(y)
	}
	return strings.Compare(a, b)
}

// keyText names a row by its key values, for messages: (k1=v1, k2=v2).
func keyText(ev *change.Event) string {
	parts := make([]string, 0, len(ev.Key))
	for _, k := range ev.Key {
		if v, ok := ev.Value(k); ok {
			s := "NULL"
			if v.Valid {
				s = v.Text
			}
			parts = append(parts, k+"="+s)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// TableMaker is an optional ability of a Handler that routes rows to tables it may create on
// demand (Partition with create): the worker's applier, and the initial copy, ask it about a
// table the handler sends rows to that the target lacks, and create it in the transaction
// that writes those rows (internal/tabledef.CreateLike).
type TableMaker interface {
	// MakeTable says how to create table t, to which the handler sends rows of a table whose
	// destination (the route's) is dest; ok is false when the handler does not create t.
	// It is called from another goroutine than Handle and must not depend on Handle's state.
	MakeTable(dest, t change.Table) (NewTable, bool)
}

// NewTable is a table a handler creates on demand: Table, from the definition of Like; a
// partition of it (FOR VALUES Bound) when Like is a partitioned table.
type NewTable struct {
	Table, Like change.Table
	// Bound is the partition bound after FOR VALUES: "FROM (…) TO (…)", "IN (…)" or
	// "DEFAULT" (SQL, literals quoted).
	Bound string
}

var _ TableMaker = Chain(nil)

// MakeTable asks the chain's handlers in order.
func (c Chain) MakeTable(dest, t change.Table) (NewTable, bool) {
	for _, h := range c {
		if m, ok := h.(TableMaker); ok {
			if nt, ok := m.MakeTable(dest, t); ok {
				return nt, true
			}
		}
	}
	return NewTable{}, false
}

// MakeTable says how to create child t of destination dest: a bucket's child named after
// dest, or a configured child, when Create is set.
func (p *Partition) MakeTable(dest, t change.Table) (NewTable, bool) {
	if !p.Create || t.Schema == "" {
		return NewTable{}, false
	}
	nt := NewTable{Table: t, Like: dest}
	if p.By != "" {
		rest, ok := strings.CutPrefix(t.Name, dest.Name+"_")
		if !ok || t.Schema != dest.Schema {
			return NewTable{}, false
		}
		layout := map[string]string{"year": "2006", "month": "2006_01", "day": "2006_01_02"}[p.By]
		from, err := time.Parse(layout, rest)
		if err != nil || from.Format(layout) != rest {
			return NewTable{}, false
		}
		to := from.AddDate(1, 0, 0)
		switch p.By {
		case "month":
			to = from.AddDate(0, 1, 0)
		case "day":
			to = from.AddDate(0, 0, 1)
		}
		const ts = "2006-01-02 15:04:05+00"
		nt.Bound = "FROM (" + change.QuoteLiteral(from.Format(ts)) + ") TO (" + change.QuoteLiteral(to.Format(ts)) + ")"
		return nt, true
	}
	for _, r := range p.Ranges {
		if p.resolve(dest, r.Table) == t {
			lo, hi := "MINVALUE", "MAXVALUE"
			if r.From != nil {
				lo = change.QuoteLiteral(r.From.Text)
			}
			if r.To != nil {
				hi = change.QuoteLiteral(r.To.Text)
			}
			nt.Bound = "FROM (" + lo + ") TO (" + hi + ")"
			return nt, true
		}
	}
	for _, l := range p.Lists {
		if p.resolve(dest, l.Table) == t {
			vals := make([]string, len(l.In))
			for i, v := range l.In {
				vals[i] = change.QuoteLiteral(v)
			}
			nt.Bound = "IN (" + strings.Join(vals, ", ") + ")"
			return nt, true
		}
	}
	if p.Default != "" && p.resolve(dest, p.Default) == t {
		nt.Bound = "DEFAULT"
		return nt, true
	}
	return NewTable{}, false
}

// Routing says whether handler h is, or chains, a Partition: the shape of its destination is
// what the handlers without it make of the rows (WithoutRouting).
func Routing(h Handler) bool {
	switch h := h.(type) {
	case *Partition:
		return true
	case Chain:
		return slices.ContainsFunc(h, Routing)
	}
	return false
}

// WithoutRouting returns h without its Partition handlers: what the rows look like in the
// destination the partition handler routes from (skiff subscribe checks, or creates, that
// table).
func WithoutRouting(h Handler) Handler {
	switch h := h.(type) {
	case *Partition:
		return Chain{}
	case Chain:
		var out Chain
		for _, m := range h {
			if !Routing(m) {
				out = append(out, m)
			} else if c, ok := m.(Chain); ok {
				out = append(out, WithoutRouting(c))
			}
		}
		return out
	}
	return h
}
