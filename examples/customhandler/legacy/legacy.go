// Package legacy is the custom handler of examples/customhandler: it replays the tables of
// a legacy schema into a new one, and splits one column of a table out into a table of its
// own, so that one provider row becomes two target rows. It shows the whole handler API
// (docs/handlers.md): the event's table, operation, key, old key and values; rewrite, route
// to another table, emit several (handlers.Splitter), and never modify the slices an event
// shares with others.
package legacy

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
)

// Name is the handler's name in the registry (subscribe --handler T=legacy).
const Name = "legacy"

// Config is the handler's configuration (subscribe --handler-config 'T={...}').
type Config struct {
	// From and To: a table of schema From goes to schema To ("legacy" and "app" by default).
	From string `json:"from"`
	To   string `json:"to"`
	// SplitColumn, when set, leaves that column out of the row and writes it, with the row's
	// key, to table SplitTable (in schema To): {"split_column": "email", "split_table":
	// "user_emails"}. Every event of the table becomes two, one per table.
	SplitColumn string `json:"split_column"`
	SplitTable  string `json:"split_table"`
}

// New is the handler's factory (handlers.Factory): table is the provider table it serves.
func New(table change.Table, config json.RawMessage) (handlers.Handler, error) {
	cfg := Config{From: "legacy", To: "app"}
	if len(config) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(config)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, err
		}
	}
	if (cfg.SplitColumn == "") != (cfg.SplitTable == "") {
		return nil, errors.New(`legacy: give both "split_column" and "split_table", or neither`)
	}
	return &Handler{cfg: cfg, layouts: map[*string]*layout{}}, nil
}

// Handler is the legacy handler. Split does the work; Handle serves a table without a split.
type Handler struct {
	cfg Config
	// layouts caches the rewritten column lists per source layout (keyed by the first
	// element of the layout's shared Columns slice), so that the events of one layout share
	// their new slices too.
	layouts map[*string]*layout
}

var (
	_ handlers.Handler  = (*Handler)(nil)
	_ handlers.Splitter = (*Handler)(nil)
)

// layout is what the handler makes of one source column list.
type layout struct {
	in        []string // the source columns it was made for
	rest      []string // the row's columns without the split column
	keep      []int    // indexes of rest's columns in the source columns
	split     []string // the split table's columns: the key, then the split column
	splitFrom []int    // indexes of split's columns in the source columns (-1: absent)
}

// Handle routes the event; a table with a split makes two events of each, which only Split
// can return.
func (h *Handler) Handle(ev *change.Event) (bool, error) {
	if h.cfg.SplitColumn != "" {
		return false, handlers.ErrSplit
	}
	h.route(ev)
	return true, nil
}

// Split appends what the event becomes: the row in schema To, and (with a split) its split
// column's row in SplitTable, keyed like the row. The operation, the key and the old key of
// an update that changed it stay the same in both; a TRUNCATE empties both tables.
func (h *Handler) Split(ev *change.Event, out []change.Event) ([]change.Event, error) {
	h.route(ev)
	if h.cfg.SplitColumn == "" {
		return append(out, *ev), nil
	}
	split := *ev // same ID, TxID, Op, Key and OldKey
	split.Table = change.Table{Schema: ev.Table.Schema, Name: h.cfg.SplitTable}
	if ev.Op == change.Truncate {
		return append(out, *ev, split), nil
	}
	l := h.layout(ev.Columns, ev.Key)
	// New slices: ev.Columns and ev.Key are shared with every event of the layout, and
	// ev.Values must not be cut up in place either (the two rows share no slice).
	rowVals := make([]change.Value, len(l.keep))
	for i, k := range l.keep {
		rowVals[i] = ev.Values[k]
	}
	var splitCols []string
	var splitVals []change.Value
	for i, k := range l.splitFrom {
		if k >= 0 { // a delete from logical decoding carries only the key
			splitCols = append(splitCols, l.split[i])
			splitVals = append(splitVals, ev.Values[k])
		}
	}
	if len(splitCols) == len(l.split) {
		splitCols = l.split // the layout's shared slice
	}
	row := *ev
	row.Columns, row.Values = l.rest, rowVals
	split.Columns, split.Values = splitCols, splitVals
	return append(out, row, split), nil
}

// route sends a table of schema From to schema To.
func (h *Handler) route(ev *change.Event) {
	if ev.Table.Schema == h.cfg.From {
		ev.Table.Schema = h.cfg.To
	}
}

// layout returns the rewrite of a source column list, made once per layout.
func (h *Handler) layout(cols, key []string) *layout {
	if len(cols) > 0 {
		if l := h.layouts[&cols[0]]; l != nil && slices.Equal(l.in, cols) {
			return l
		}
	}
	l := &layout{in: cols}
	for i, c := range cols {
		if c != h.cfg.SplitColumn {
			l.rest = append(l.rest, c)
			l.keep = append(l.keep, i)
		}
	}
	l.split = append(append(l.split, key...), h.cfg.SplitColumn)
	for _, c := range l.split {
		l.splitFrom = append(l.splitFrom, slices.Index(cols, c))
	}
	if len(cols) > 0 {
		h.layouts[&cols[0]] = l
	}
	return l
}
