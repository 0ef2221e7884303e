package handlers

import (
	"fmt"

	"github.com/skiffdb/skiff/consumer/change"
)

// Splitter is an optional ability of a Handler that turns one event into several (or none):
// a row split into two target rows, or an update that moves a row from one table to another
// (a delete there, a write here). The worker, the initial copy, resync and skiff compare call
// Split instead of Handle when a handler has it (Run does so).
//
// Split appends to out the events ev becomes, in the order they are applied, and returns
// out: none drops ev, one rewrites it, several emit several. Each event appended is a value
// of its own (ev itself may be appended, changed or not); the rules of Handle hold for each:
// never modify the Columns or Key slices ev carries, assign new ones. The events keep ev's ID
// and TxID (they belong to ev's transaction: the initial copy's snapshot decides them
// together). Rows of the initial copy come as Insert events, and what Split makes of one
// must be Inserts too.
type Splitter interface {
	Split(ev *change.Event, out []change.Event) ([]change.Event, error)
}

// Run runs handler h over ev and appends what it makes of it to out: Split when h is a
// Splitter, else Handle (ev appended when kept).
func Run(h Handler, ev *change.Event, out []change.Event) ([]change.Event, error) {
	if s, ok := h.(Splitter); ok {
		return s.Split(ev, out)
	}
	keep, err := h.Handle(ev)
	if err != nil || !keep {
		return out, err
	}
	return append(out, *ev), nil
}

// ErrSplit is returned by the Handle of a Splitter (or a Chain holding one) for an event it
// would turn into several: call Split (Run).
var ErrSplit = fmt.Errorf("the handler turns this event into several: call Split (handlers.Run)")

var _ Splitter = Chain(nil)

// Split runs the chain's handlers in order over ev and over every event the ones before
// made of it.
func (c Chain) Split(ev *change.Event, out []change.Event) ([]change.Event, error) {
	if !c.splits() {
		keep, err := c.Handle(ev)
		if err != nil || !keep {
			return out, err
		}
		return append(out, *ev), nil
	}
	cur := []change.Event{*ev}
	var next []change.Event
	for _, h := range c {
		next = next[:0]
		for i := range cur {
			var err error
			if next, err = Run(h, &cur[i], next); err != nil {
				return out, err
			}
		}
		cur, next = next, cur
	}
	return append(out, cur...), nil
}

// splits says whether a handler of the chain is a Splitter.
func (c Chain) splits() bool {
	for _, h := range c {
		if _, ok := h.(Splitter); ok {
			return true
		}
	}
	return false
}

// handleOne is Handle for a Splitter: the one event Split makes of ev, ErrSplit for several.
func handleOne(s Splitter, ev *change.Event) (bool, error) {
	var buf [2]change.Event
	out, err := s.Split(ev, buf[:0])
	switch {
	case err != nil:
		return false, err
	case len(out) == 0:
		return false, nil
	case len(out) > 1:
		return false, fmt.Errorf("table %s, event %d: %w", ev.Table, ev.ID, ErrSplit)
	}
	*ev = out[0]
	return true, nil
}
