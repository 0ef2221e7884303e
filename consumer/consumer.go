// Package consumer replays batches of provider changes on a target: a Source yields batches,
// Handlers transform or route each table's events, an Applier writes a batch on the target in
// one transaction together with the batch's position. The package defines those contracts and
// the worker loop; it imports no implementation of them (the worker service wires a source of
// consumer/source, the PostgreSQL applier and the handler registry in).
package consumer

import (
	"context"

	"github.com/skiffdb/skiff/consumer/change"
)

// Source yields batches of whole provider transactions, in commit order.
//
// A batch is the source's until it is finished: Events may be called more than once for one
// batch (the applier replays a batch row by row to name the event that fails), and until
// Finish — or, after a failed batch, until the next NextBatch — the source must be able to
// hand out the same events again, in the same order. A source that cannot re-read what it
// streamed (a replication stream) keeps the batch itself; it also implements Resumer.
type Source interface {
	// NextBatch blocks until a batch is ready (or ctx ends). After a crash it returns the
	// unfinished batch again, with the same ID, Prev and End (a Resumer: a batch starting at
	// the position it was resumed from).
	NextBatch(ctx context.Context) (change.Batch, error)
	// Events streams the batch's events in replay order to fn, a chunk at a time; memory stays
	// bounded whatever the batch size. The chunk slice is reused after fn returns. It may be
	// called more than once per batch (see above).
	Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error
	// Finish tells the source the batch is durably applied; it will not be returned again.
	// Its error names the batch ("finish batch 96: ..."): the worker reports it as it is.
	Finish(ctx context.Context, b change.Batch) error
}

// Resumer is an optional ability of a Source: start from the position the target has applied.
// The worker calls Resume with Applier.Position before its first NextBatch and again before
// the NextBatch that follows a failed batch (rolled back on the target, or not read at all).
// The source then hands out every change after from, and none at or before it: its next
// batch has Prev == from (a zero from: nothing was applied yet, the source starts where its
// own bookkeeping says). A stream source (logical decoding) restarts its stream there; a
// re-readable source (the trigger queue, whose NextBatch returns the unfinished batch again)
// need not implement it. An error is the batch's failure: retried after the backoff.
type Resumer interface {
	Resume(ctx context.Context, from change.Position) error
}

// CopyPoints is an optional ability of a Source: it reads the copy points of its tables. A
// table's copy (initial copy, resync, a table added) is taken at a point the source's copy
// function writes (copier.Config.CopyPoint) and the target records (change.Route.CopyPoint);
// only the source knows what it means. The worker asks it which events the copy already
// holds, and drops those of a table copying or catching up. A Source without it cannot have
// tables copied under a running worker: a batch that meets a table copying or catching up at
// a copy point fails.
type CopyPoints interface {
	// CopyHolds returns a test of whether the copy taken at point already holds an event's
	// change (the event's transaction is in the copy). An error means the point cannot be
	// read. The test is called from one goroutine at a time, and must not keep ev.
	CopyHolds(point string) (func(ev *change.Event) bool, error)
}

// Handler transforms or routes the events of one source table.
//
// Handle is called once per event, in replay order, from one goroutine. It may change the
// event in place: its Table (route the row to another table), its Columns and Values (assign
// new slices: Columns is shared between the events of one layout and must not be modified in
// place; Values may be modified). It returns keep=false to drop the event (a consumer-side row
// filter), and an error to stop the batch: the batch is rolled back and retried, nothing is
// skipped. Key names the key columns the applier matches target rows on; a handler that
// renames key columns renames them in Key too.
//
// The initial copy, resync and skiff compare run the same handlers over the provider's rows,
// each row as an Insert event: set-based when the handler also implements
// handlers.SQLHandler, else row by row in Go. A handler should therefore treat an Insert the
// same whether it comes from the queue or from the copy.
type Handler interface {
	Handle(ev *change.Event) (keep bool, err error)
}

// Splitter is an optional ability of a Handler (handlers.Splitter): Split appends to out
// the events ev becomes — none, one, or several (a row split in two, an update moving a row
// from one table to another) — in the order they are applied. The worker calls it instead of
// Handle. The rules of Handle hold for every event appended.
type Splitter interface {
	Split(ev *change.Event, out []change.Event) ([]change.Event, error)
}

// Skipper is an optional ability of a Handler: SkipsAll reports that it drops every event
// of its table (handlers.Skip). The worker then leaves the table's events out before it looks
// at them: not decoded, not held for a copy, not handled.
type Skipper interface {
	SkipsAll() bool
}

// Applier writes batches on the target.
type Applier interface {
	// Position returns the position the target has recorded for the subscription; a zero
	// Position means nothing was applied yet.
	Position(ctx context.Context) (change.Position, error)
	// Routes returns the subscribed tables. Called from inside Apply's stream it reads them
	// in the batch's transaction, after the subscription row is locked, so that a table
	// changing state (initial copy) cannot race the batch.
	Routes(ctx context.Context) ([]change.Route, error)
	// Apply is atomic and records the batch position in the same transaction: it begins a
	// target transaction, checks that the recorded position is b.Prev (else an error wrapping
	// change.ErrPositionLost), writes every event stream hands to emit, in order, records b.End and
	// commits. On error nothing of the batch stays on the target. stream may be called more
	// than once (the applier may replay a batch row by row to name the event that fails).
	// emit must not keep the slice it is given after it returns (the caller reuses it); the
	// events' Values and strings stay valid.
	Apply(ctx context.Context, b change.Batch, stream func(emit func([]change.Event) error) error) error
}

// ErrorRecorder is an optional ability of an Applier: keep the last error of a failed batch
// where `skiff status` can show it.
type ErrorRecorder interface {
	RecordError(ctx context.Context, err error) error
}

// Conflicter is an optional ability of an Applier that merges several providers into shared
// tables (skiff subscribe --merge): how many merge conflicts the last applied batch met and
// settled (counted in the worker's metrics).
type Conflicter interface {
	LastConflicts() int64
}

// Heartbeater is an optional ability of an Applier: show that the worker is alive (on the
// target, where `skiff status` looks) while it waits to retry a failed batch.
type Heartbeater interface {
	Heartbeat(ctx context.Context) error
}

// Backlogger is an optional ability of an Applier: hold the events of a table being copied in
// a backlog on the target instead of writing them to the destination, whose lock the copy
// holds until it commits (writing them would make the whole batch, and every other table of
// the subscription, wait for the end of the copy). All three are called inside Apply's
// stream, in the batch's transaction. Without it the worker writes those events to the
// destination (they wait on the copy's lock).
type Backlogger interface {
	// AppendBacklog appends the events of source table src to its backlog, in order.
	AppendBacklog(ctx context.Context, src change.Table, evs []change.Event) error
	// Backlogged lists the source tables that have a backlog.
	Backlogged(ctx context.Context) ([]change.Table, error)
	// DrainBacklog hands the backlog of src to fn in order, a chunk at a time (no query open
	// while fn runs), then deletes it; it returns how many events it read.
	DrainBacklog(ctx context.Context, src change.Table, fn func([]change.Event) error) (int, error)
}

// DeadLetterer is an optional ability of an Applier: leave out of a batch the events an
// operator set aside (skiff event skip), and record that they were, exactly once. Both are
// called inside Apply's stream, in the batch's transaction. Without it nothing is ever left
// out: an event that cannot be applied stops its batch until its cause is fixed.
type DeadLetterer interface {
	// SetAside returns the ids of batch b's events an operator set aside.
	SetAside(ctx context.Context, b change.Batch) ([]int64, error)
	// MarkSetAside records that these events of batch b were left out.
	MarkSetAside(ctx context.Context, b change.Batch, ids []int64) error
}
