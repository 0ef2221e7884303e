package copier

import (
	"errors"
	"fmt"

	"github.com/skiffdb/skiff/change"
)

// ErrCopyPending is returned by a CatchUp filter for an event of a table whose copy has not
// yet published its snapshot: the worker cannot know whether the copy will contain the event,
// so the batch must wait (the worker rolls it back and retries). The window is short: the copy
// publishes its snapshot right after taking it.
var ErrCopyPending = errors.New("initial copy has not published its snapshot yet")

// CatchUp is the per-table filter the worker runs while a table is being copied or is
// catching up: it drops every event of a transaction the copy's snapshot sees (the copied rows
// already hold it) and keeps the rest, in order.
//
// Why this is exact: the copy's snapshot is taken after the consumer's position, and the copy
// takes its target transaction's lock on the destination (TRUNCATE) before taking the snapshot.
// A transaction the snapshot sees is in the copy; one it does not see committed after the
// snapshot and reaches the target through the queue. While the copy runs, an applied event
// waits on the destination's lock and lands on top of the copied rows.
type CatchUp struct {
	table change.Table
	snap  Snapshot
	known bool
}

// NewCatchUp builds the filter of a route in state copying or catching-up. A copying route
// without a snapshot yields a filter that refuses the table's events with ErrCopyPending.
func NewCatchUp(r change.Route) (*CatchUp, error) {
	c := &CatchUp{table: r.Source}
	if r.CopySnapshot == "" {
		if r.State == change.StateCatchingUp {
			return nil, fmt.Errorf("table %s is catching up without a copy snapshot", r.Source)
		}
		return c, nil
	}
	snap, err := ParseSnapshot(r.CopySnapshot)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", r.Source, err)
	}
	c.snap, c.known = snap, true
	return c, nil
}

// Snapshot returns the copy's snapshot and whether it is known yet.
func (c *CatchUp) Snapshot() (Snapshot, bool) { return c.snap, c.known }

// Handle keeps an event unless the copy already holds it. TRUNCATE events follow the same
// rule: one the snapshot sees happened before the copy's rows were read.
func (c *CatchUp) Handle(ev *change.Event) (bool, error) {
	if !c.known {
		return false, fmt.Errorf("table %s, event %d: %w", c.table, ev.ID, ErrCopyPending)
	}
	if ev.TxID == 0 {
		return false, fmt.Errorf("table %s, event %d: no transaction id: cannot tell whether the initial copy holds it", c.table, ev.ID)
	}
	return !c.snap.Visible(ev.TxID), nil
}
