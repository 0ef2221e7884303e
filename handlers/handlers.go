// Package handlers holds the built-in per-table transforms of skiff's worker (rename, column
// map and exclude, row filter, partition routing, skip) and the Registry through which custom
// handlers, written in Go, are chosen per table by name in the subscription's configuration.
// docs/handlers.md is the guide; handlers/handlerstest checks a handler against its rules.
//
// A handler satisfies consumer.Handler: Handle(ev) (keep, err), called once per event in
// replay order. It may change the event in place (Table, Columns, Values, Key, Op) but must
// not modify the Columns and Key slices it received: they are shared between events; assign
// new ones. A handler that makes several events of one (or none) also implements Splitter;
// Run calls whichever a handler has. One that routes rows to tables the target may lack says
// how to create them (TableMaker).
//
// The initial copy and skiff compare honour the same handlers: a handler that can say what
// it does to a whole table in SQL implements the optional SQLHandler (rename, columns and
// filter do) and the copy and compare read the provider set-based; the rows of a table whose
// handlers cannot are run through them in Go, one Insert event per row.
package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// Handler transforms or routes one table's events: the contract of consumer.Handler.
type Handler interface {
	Handle(ev *change.Event) (keep bool, err error)
}

// Func is a function used as a Handler.
type Func func(ev *change.Event) (bool, error)

// Handle calls f.
func (f Func) Handle(ev *change.Event) (bool, error) { return f(ev) }

// Chain runs handlers in order; an event dropped by one is not seen by the next. A chain
// holding a Splitter splits (Chain.Split); its Handle then fails with ErrSplit for an event
// that becomes several.
type Chain []Handler

// Handle runs the chain.
func (c Chain) Handle(ev *change.Event) (bool, error) {
	if c.splits() {
		return handleOne(c, ev)
	}
	for _, h := range c {
		keep, err := h.Handle(ev)
		if err != nil || !keep {
			return keep, err
		}
	}
	return true, nil
}

// Rename sends events to another table: a non-empty Schema replaces the schema, a non-empty
// Name the table's name (`subscribe --table T:DEST`).
type Rename struct {
	Schema string `json:"schema"`
	Name   string `json:"table"`
}

// Handle renames the event's table.
func (r Rename) Handle(ev *change.Event) (bool, error) {
	if r.Schema != "" {
		ev.Table.Schema = r.Schema
	}
	if r.Name != "" {
		ev.Table.Name = r.Name
	}
	return true, nil
}

// Columns renames and drops columns. Layouts are rewritten once and cached, so that events of
// one layout keep sharing their column slices.
type Columns struct {
	// Rename maps a source column name to the target's.
	Rename map[string]string `json:"rename"`
	// Exclude lists source columns not written on the target (key columns cannot be excluded).
	Exclude []string `json:"exclude"`

	cache map[*string]*columnMap
}

type columnMap struct {
	in, key []string // the layout this was built for
	cols    []string
	keep    []int // source indexes kept
	newKey  []string
}

// Handle rewrites the event's columns.
func (c *Columns) Handle(ev *change.Event) (bool, error) {
	if len(ev.Columns) == 0 {
		return true, nil
	}
	if c.cache == nil {
		c.cache = map[*string]*columnMap{}
	}
	m := c.cache[&ev.Columns[0]]
	if m == nil || len(m.in) != len(ev.Columns) || !slices.Equal(m.key, ev.Key) {
		var err error
		if m, err = c.build(ev.Columns, ev.Key); err != nil {
			return false, fmt.Errorf("table %s: %w", ev.Table, err)
		}
		c.cache[&ev.Columns[0]] = m
	}
	if len(m.keep) != len(ev.Columns) {
		vals := make([]change.Value, len(m.keep))
		for i, k := range m.keep {
			vals[i] = ev.Values[k]
		}
		ev.Values = vals
	}
	ev.Columns, ev.Key = m.cols, m.newKey
	return true, nil
}

func (c *Columns) build(cols, key []string) (*columnMap, error) {
	m := &columnMap{in: cols, key: key}
	for i, col := range cols {
		if slices.Contains(c.Exclude, col) {
			if slices.Contains(key, col) {
				return nil, fmt.Errorf("key column %s cannot be excluded", change.QuoteIdent(col))
			}
			continue
		}
		m.keep = append(m.keep, i)
		m.cols = append(m.cols, c.name(col))
	}
	for _, k := range key {
		m.newKey = append(m.newKey, c.name(k))
	}
	return m, nil
}

func (c *Columns) name(col string) string {
	if to, ok := c.Rename[col]; ok && to != "" {
		return to
	}
	return col
}

// Filter keeps only the rows whose column Column has one of the values In (compared as text;
// a NULL never matches). Inserts are filtered by their new row, deletes by their old row. An
// update carries only its new row, so the filter cannot tell whether the row was kept before:
// it may have moved into the filter (the target lacks it) or out of it (the target holds it).
// An update whose new row is kept becomes an Upsert (written whether or not the target holds
// the row), one whose new row is not a Remove (deleted if the target holds it). A delete
// without the column (logical decoding sends only the key by default) is a Remove too.
type Filter struct {
	Column string   `json:"column"`
	In     []string `json:"in"`
}

// Handle drops the rows Filter does not keep and turns updates into upserts and removals.
func (f Filter) Handle(ev *change.Event) (bool, error) {
	if ev.Op == change.Truncate || ev.Op == change.Remove {
		return true, nil
	}
	v, ok := ev.Value(f.Column)
	if !ok {
		if ev.Op == change.Delete {
			ev.Op = change.Remove
			return true, nil
		}
		return false, fmt.Errorf("filter: table %s has no column %s", ev.Table, change.QuoteIdent(f.Column))
	}
	keep := v.Valid && slices.Contains(f.In, v.Text)
	switch ev.Op {
	case change.Update, change.Upsert:
		if keep {
			ev.Op = change.Upsert
		} else {
			ev.Op = change.Remove
		}
		return true, nil
	}
	return keep, nil
}

// Skip is the handler of a table whose events the target does not want ("skip"): the
// worker drops them all (even events it could not decode), the initial copy and resync copy
// nothing and leave the destination alone (it need not exist), and skiff compare leaves the
// table out. skiff status shows the table as skipped. Find it with Skips.
type Skip struct{}

// Handle drops the event.
func (Skip) Handle(*change.Event) (bool, error) { return false, nil }

// SkipsAll says that every event is dropped: the worker leaves the table's events out before
// it looks at them (consumer.Skipper).
func (Skip) SkipsAll() bool { return true }

// Skips says whether handler h drops every event of its table: it is Skip, or a Chain holding
// one.
func Skips(h Handler) bool {
	switch h := h.(type) {
	case Skip, *Skip:
		return true
	case Chain:
		return slices.ContainsFunc(h, Skips)
	}
	return false
}

// SkipName is the name of the Skip handler in a Registry (subscribe --skip T is --handler
// T=skip).
const SkipName = "skip"

// Factory builds a handler for one table from its configuration (JSON; empty when none).
type Factory func(table change.Table, config json.RawMessage) (Handler, error)

// Registry maps handler names to factories. Build one in cmd/ with NewRegistry, register
// custom handlers on it, hand it to the worker; there is no package-level registry.
type Registry struct {
	factories map[string]Factory
}

// NewRegistry returns a registry holding the built-in handlers: "rename" ({"schema": …,
// "table": …}), "columns" ({"rename": {…}, "exclude": […]}), "filter" ({"column": …,
// "in": […]}), "partition" (Partition: {"column": …, "by": "month", "create": true}, or
// "ranges"/"lists") and "skip" (no configuration).
func NewRegistry() *Registry {
	r := &Registry{factories: map[string]Factory{}}
	r.factories["rename"] = func(_ change.Table, cfg json.RawMessage) (Handler, error) {
		var h Rename
		return h, decode(cfg, &h)
	}
	r.factories["columns"] = func(_ change.Table, cfg json.RawMessage) (Handler, error) {
		h := &Columns{}
		return h, decode(cfg, h)
	}
	r.factories["filter"] = func(_ change.Table, cfg json.RawMessage) (Handler, error) {
		var h Filter
		if err := decode(cfg, &h); err != nil {
			return nil, err
		}
		if h.Column == "" {
			return nil, errors.New(`filter needs {"column": …, "in": […]}`)
		}
		return h, nil
	}
	r.factories[PartitionName] = func(_ change.Table, cfg json.RawMessage) (Handler, error) {
		return NewPartition(cfg)
	}
	r.factories[SkipName] = func(_ change.Table, cfg json.RawMessage) (Handler, error) {
		var none struct{}
		if err := decode(cfg, &none); err != nil {
			return nil, fmt.Errorf("skip takes no configuration: %w", err)
		}
		return Skip{}, nil
	}
	return r
}

func decode(cfg json.RawMessage, v any) error {
	if len(cfg) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(cfg)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Register adds a custom handler under name; names are unique.
func (r *Registry) Register(name string, f Factory) error {
	if name == "" || strings.ContainsAny(name, ", ") {
		return fmt.Errorf("handler name %q: must be non-empty, without spaces or commas", name)
	}
	if _, ok := r.factories[name]; ok {
		return fmt.Errorf("handler %q is already registered", name)
	}
	r.factories[name] = f
	return nil
}

// Names lists the registered handlers, sorted.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.factories))
	for n := range r.factories {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// New builds the handler called name for a table. config is its JSON configuration ("" for
// none).
func (r *Registry) New(name string, table change.Table, config string) (Handler, error) {
	f, ok := r.factories[name]
	if !ok {
		return nil, fmt.Errorf("table %s: unknown handler %q (registered: %s)", table, name, strings.Join(r.Names(), ", "))
	}
	h, err := f(table, json.RawMessage(config))
	if err != nil {
		return nil, fmt.Errorf("table %s: handler %q: %w", table, name, err)
	}
	return h, nil
}

// ForRoute builds the handler chain of a subscribed table: the rename to its destination
// (when it differs from the source), then its configured handler, if any. A skipped table's
// handler is Skip alone.
func (r *Registry) ForRoute(route change.Route) (Handler, error) {
	if route.Handler == SkipName {
		return r.New(route.Handler, route.Source, route.Config)
	}
	var chain Chain
	if route.Dest != route.Source && route.Dest != (change.Table{}) {
		chain = append(chain, Rename{Schema: route.Dest.Schema, Name: route.Dest.Name})
	}
	if route.Handler != "" {
		h, err := r.New(route.Handler, route.Source, route.Config)
		if err != nil {
			return nil, err
		}
		chain = append(chain, h)
	}
	if len(chain) == 1 {
		return chain[0], nil
	}
	return chain, nil
}
