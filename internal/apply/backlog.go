package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/target"
)

// backlogPage is how many backlog rows DrainBacklog reads at a time.
const backlogPage = 5000

var errNoBatch = errors.New("backlog: only inside Apply's stream")

// AppendBacklog appends the events of source table src (in state copying: its copy holds the
// destination's lock) to the table's backlog on the target (skiff.copy_backlog), in order and
// in the batch's transaction, instead of writing them to the destination. Call it only inside
// Apply's stream. The events are stored as given (after handlers: ev.Table is the table they
// are written to).
func (a *Applier) AppendBacklog(ctx context.Context, src change.Table, evs []change.Event) error {
	if a.tx == nil {
		return errNoBatch
	}
	if err := a.settle(); err != nil {
		return err
	}
	if len(evs) == 0 {
		return nil
	}
	if err := target.AppendBacklog(ctx, a.tx, a.subID, src, evs); err != nil {
		return fmt.Errorf("append %d events of %s to its copy backlog: %w", len(evs), src, err)
	}
	return nil
}

// Backlogged lists the subscribed source tables that have a copy backlog. Call it inside
// Apply's stream (it reads in the batch's transaction).
func (a *Applier) Backlogged(ctx context.Context) ([]change.Table, error) {
	if a.tx == nil {
		return nil, errNoBatch
	}
	if err := a.settle(); err != nil {
		return nil, err
	}
	if a.read.backlogged {
		a.read.backlogged = false
		return a.read.Backlogged, nil
	}
	out, err := target.Backlogged(ctx, a.tx, a.subID)
	if err != nil {
		return nil, fmt.Errorf("tables with a copy backlog: %w", err)
	}
	return out, nil
}

// DrainBacklog reads the copy backlog of source table src in order, a page at a time, hands
// each page's events to fn (which may write in the batch's transaction: no query is open
// while it runs), then deletes the backlog. Call it inside Apply's stream: the backlog is
// applied and deleted in the batch's transaction.
func (a *Applier) DrainBacklog(ctx context.Context, src change.Table, fn func([]change.Event) error) (int, error) {
	if a.tx == nil {
		return 0, errNoBatch
	}
	if err := a.settle(); err != nil {
		return 0, err
	}
	// Events of one layout share their Columns and Key slices, as a source's do.
	layouts := map[string][]string{}
	intern := func(s []string) []string {
		if s == nil {
			return nil
		}
		k := fmt.Sprintf("%q", s)
		if v, ok := layouts[k]; ok {
			return v
		}
		layouts[k] = s
		return s
	}
	var n int
	last := int64(-1)
	for {
		if err := a.settle(); err != nil { // fn may have flushed ahead
			return n, err
		}
		page, err := target.ReadBacklog(ctx, a.tx, a.subID, src, last, backlogPage)
		var bad *target.BadOpError
		if errors.As(err, &bad) {
			return n, fmt.Errorf("copy backlog of %s: %w", src, err)
		}
		if err != nil {
			return n, fmt.Errorf("read copy backlog of %s: %w", src, err)
		}
		evs := make([]change.Event, len(page))
		for i := range page {
			ev := &evs[i]
			*ev = page[i].Event
			ev.Columns, ev.Key = intern(ev.Columns), intern(ev.Key)
			last = page[i].Seq
		}
		if len(evs) == 0 {
			break
		}
		n += len(evs)
		if err := fn(evs); err != nil {
			return n, err
		}
		if len(evs) < backlogPage {
			break
		}
	}
	if err := a.settle(); err != nil {
		return n, err
	}
	if err := target.DeleteBacklog(ctx, a.tx, a.subID, src); err != nil {
		return n, fmt.Errorf("delete copy backlog of %s: %w", src, err)
	}
	return n, nil
}
