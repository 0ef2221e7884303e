package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/startstop"
)

// Defaults of Config.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	// DefaultHeartbeatEvery is well below skiff status's default stall threshold (30 s).
	DefaultHeartbeatEvery = 10 * time.Second
)

// Config is what a Worker needs.
type Config struct {
	// Name identifies the worker in logs (e.g. the queue).
	Name string
	// Source yields the batches; Applier writes them.
	Source  Source
	Applier Applier
	// Handlers builds the handler of each subscribed table (rename, filter, custom) from its
	// route; required. The handler is built once per route and reused while the route holds.
	// cmd wires handlers.Registry.ForRoute in.
	Handlers func(change.Route) (Handler, error)
	// Log receives the worker's messages; nil discards them.
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before a failed batch is retried; the wait
	// doubles at each failure (defaults 1 s and 1 min).
	MinBackoff, MaxBackoff time.Duration
	// Metrics, when set, counts what the worker does.
	Metrics *Metrics
	// OnBatch, when set, is called after each batch is applied and finished (tests, progress).
	OnBatch func(b change.Batch, events int)
	// HeartbeatEvery is how often a worker waiting to retry a failed batch shows it is alive
	// (Heartbeater); default DefaultHeartbeatEvery.
	HeartbeatEvery time.Duration
}

// Worker replays the batches of one subscription: NextBatch, check the target's position,
// handlers, Apply, Finish, again. A failed batch is rolled back and retried with exponential
// backoff; nothing is skipped, except the events an operator set aside (DeadLetterer).
//
// Its lifecycle is internal/startstop's: Start, Stop (finish the batch in hand),
// StopAndCancel (roll it back), Stopped, Err.
type Worker struct {
	life   startstop.Base
	cfg    Config
	log    *slog.Logger
	routes map[change.Route]Handler // handlers built per route, reused while the route holds
	// applied is the End of the last batch this worker applied and finished, zero after any
	// failure: the target's position then, without asking it.
	applied change.Position
	warned  map[change.Table]bool // tables not subscribed, warned once
}

// NewWorker checks cfg and returns a worker.
func NewWorker(cfg Config) (*Worker, error) {
	if cfg.Source == nil || cfg.Applier == nil || cfg.Handlers == nil {
		return nil, errors.New("worker: Source, Applier and Handlers are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	return &Worker{cfg: cfg, log: cfg.Log, routes: map[change.Route]Handler{}, warned: map[change.Table]bool{}}, nil
}

// Start starts replaying batches in the background and returns at once. Cancelling ctx stops
// the worker like Stop. A Worker is started once.
func (w *Worker) Start(ctx context.Context) error {
	if err := w.life.Start(ctx, nil, w.run); err != nil {
		return fmt.Errorf("worker %s: %w", w.cfg.Name, err)
	}
	return nil
}

// Stop asks the worker to finish the batch in hand (apply and finish it) and waits until it
// has stopped. It is idempotent.
func (w *Worker) Stop() { w.life.Stop() }

// StopAndCancel stops the worker and rolls the batch in hand back, and waits.
func (w *Worker) StopAndCancel() { w.life.StopAndCancel() }

// Stopped is closed once the worker has stopped: asked to, or because replication cannot go
// on by retrying (Err).
func (w *Worker) Stopped() <-chan struct{} { return w.life.Stopped() }

// Err is why the worker stopped: nil after a requested stop; an error wrapping
// change.ErrPositionLost when replication cannot go on by retrying.
func (w *Worker) Err() error { return w.life.Err() }

// run replays batches until ctx ends (the batch in hand is finished first, then run returns
// nil) or hard ends (the batch in hand is rolled back, run returns hard's error). It returns
// an error only when replication cannot go on by retrying: the position is lost.
func (w *Worker) run(ctx, hard context.Context) error {
	backoff := w.cfg.MinBackoff
	resumer, _ := w.cfg.Source.(Resumer)
	resume := resumer != nil // before the first batch, and after every failed one
	for {
		if ctx.Err() != nil {
			return nil
		}
		var b change.Batch
		var err error
		if resume {
			err = w.resume(ctx, resumer)
		}
		if err == nil {
			resume = false
			b, err = w.cfg.Source.NextBatch(ctx)
		}
		if err == nil {
			err = w.batch(hard, b)
		}
		if err == nil {
			backoff = w.cfg.MinBackoff
			continue
		}
		resume = resumer != nil
		if hard.Err() != nil {
			return hard.Err()
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil
		}
		if isPositionLost(err) {
			w.log.Error("replication stopped", pg.WithHint(err, "worker", w.cfg.Name, "batch_id", b.ID, "error", err.Error())...)
			w.record(hard, err)
			return err
		}
		if errors.Is(err, change.ErrCopyPending) {
			// Not a failure: a table's copy is about to publish its snapshot. Wait the
			// shortest backoff, without recording an error.
			w.log.Info("waiting for an initial copy's snapshot", "worker", w.cfg.Name, "batch_id", b.ID, "reason", err.Error())
			backoff = w.cfg.MinBackoff
		} else {
			w.cfg.Metrics.errorInc()
			w.log.Error("batch failed, retrying", pg.WithHint(err, "worker", w.cfg.Name, "batch_id", b.ID, "retry_in", backoff, "error", err.Error())...)
			w.record(hard, err)
		}
		if !w.wait(ctx, hard, backoff) {
			return nil
		}
		if !errors.Is(err, change.ErrCopyPending) {
			backoff = min(2*backoff, w.cfg.MaxBackoff)
		}
	}
}

// resume tells a Resumer source to start after the position the target has applied.
func (w *Worker) resume(ctx context.Context, r Resumer) error {
	pos, err := w.cfg.Applier.Position(ctx)
	if err != nil {
		return err
	}
	if err := r.Resume(ctx, pos); err != nil {
		return fmt.Errorf("resume the source at %s: %w", pos, err)
	}
	return nil
}

// wait waits d before a retry, keeping the worker's heartbeat on the target (Heartbeater)
// meanwhile: a worker in its retry backoff is alive, and status must not say otherwise. It
// returns false when ctx ended.
func (w *Worker) wait(ctx, hard context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	hb, _ := w.cfg.Applier.(Heartbeater)
	var beat <-chan time.Time
	if hb != nil {
		tk := time.NewTicker(w.cfg.HeartbeatEvery)
		defer tk.Stop()
		beat = tk.C
		w.heartbeat(hard, hb)
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-beat:
			w.heartbeat(hard, hb)
		}
	}
}

func (w *Worker) heartbeat(ctx context.Context, hb Heartbeater) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := hb.Heartbeat(hctx); err != nil && ctx.Err() == nil {
		w.log.Debug("cannot record the heartbeat on the target", "worker", w.cfg.Name, "error", err.Error())
	}
}

func (w *Worker) record(ctx context.Context, err error) {
	r, ok := w.cfg.Applier.(ErrorRecorder)
	if !ok {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e := r.RecordError(rctx, err); e != nil {
		w.log.Warn("cannot record the error on the target", "worker", w.cfg.Name, "error", e.Error())
	}
}

// isPositionLost says whether err stops the worker instead of being retried.
func isPositionLost(err error) bool { return errors.Is(err, change.ErrPositionLost) }

// batch applies one batch exactly once.
func (w *Worker) batch(ctx context.Context, b change.Batch) error {
	start := time.Now()
	// A batch that starts where this worker's last one ended (applied and finished, no
	// failure since) finds the target there: nothing else moves the position while the worker
	// holds the subscription, and Apply checks it anyway under the row's lock in the batch's
	// transaction. Only then is the read left out (a round trip on the lag path).
	pos := w.applied
	w.applied = change.Position{}
	if pos.IsZero() || pos != b.Prev {
		var err error
		if pos, err = w.cfg.Applier.Position(ctx); err != nil {
			return err
		}
	}
	// Exactly-once rests on exact positions, not on their order: the target holds every batch
	// up to pos and nothing else, so a batch is applied when it starts at pos, finished (not
	// applied again) when it ends at pos, and anything else stops the worker. The trigger
	// queue hands out the unfinished batch again with the same Prev and End; a stream source
	// is resumed at pos (Resumer) and starts its next batch there. Taking "pos at or past
	// End" as applied would finish, unapplied, the batches of a provider whose positions
	// started over (a provider schema reinstalled: tick ids restart, while an existing
	// subscription keeps its position; a provider restored from a backup) — silent loss where
	// the worker must stop. The order only says which way the position was lost.
	switch {
	case pos == b.End && !pos.IsZero():
		// Applied before a crash, not yet finished on the source.
		w.log.Info("batch already applied on the target, finishing it", "worker", w.cfg.Name, "batch_id", b.ID)
		return w.cfg.Source.Finish(ctx, b)
	case pos == b.Prev || pos.IsZero():
	default:
		return fmt.Errorf("%w: the target is at %s, batch %d goes from %s to %s (%s)", change.ErrPositionLost, pos, b.ID, b.Prev, b.End, lostHow(pos, b))
	}
	var events, skipped int
	err := w.cfg.Applier.Apply(ctx, b, func(emit func([]change.Event) error) error {
		events, skipped = 0, 0
		routes, err := w.cfg.Applier.Routes(ctx)
		if err != nil {
			return err
		}
		byTable, err := w.handlers(routes)
		if err != nil {
			return err
		}
		bl, _ := w.cfg.Applier.(Backlogger)
		if bl != nil {
			for _, rt := range byTable {
				rt.backlog = rt.state == change.StateCopying
			}
			if err := w.drain(ctx, bl, byTable, emit, &events); err != nil {
				return err
			}
		}
		dl, _ := w.cfg.Applier.(DeadLetterer)
		var aside setAside
		if dl != nil {
			ids, err := dl.SetAside(ctx, b)
			if err != nil {
				return err
			}
			aside.want = make(map[int64]bool, len(ids))
			for _, id := range ids {
				aside.want[id] = true
			}
		}
		if err := w.pipe(ctx, b, byTable, bl, &aside, emit, &events, &skipped); err != nil {
			return err
		}
		if len(aside.met) == 0 {
			return nil
		}
		for _, ev := range aside.met {
			w.log.Warn("event set aside by an operator, not applied", "worker", w.cfg.Name, "batch_id", b.ID,
				"event_id", ev.ID, "table", ev.Table.String(), "op", ev.Op.String())
		}
		ids := make([]int64, len(aside.met))
		for i, ev := range aside.met {
			ids[i] = ev.ID
		}
		return dl.MarkSetAside(ctx, b, ids)
	})
	if err != nil {
		return err
	}
	if err := w.cfg.Source.Finish(ctx, b); err != nil {
		return err // names the batch (Source contract)
	}
	w.applied = b.End
	w.cfg.Metrics.batch(events, b, time.Since(start))
	if c, ok := w.cfg.Applier.(Conflicter); ok {
		w.cfg.Metrics.conflictAdd(c.LastConflicts())
	}
	w.log.Debug("batch applied", "worker", w.cfg.Name, "batch_id", b.ID, "events", events, "skipped", skipped, "duration", time.Since(start))
	if w.cfg.OnBatch != nil {
		w.cfg.OnBatch(b, events)
	}
	return nil
}

// lostHow says how a target's position pos that is neither b.Prev nor b.End relates to b.
func lostHow(pos change.Position, b change.Batch) string {
	switch {
	case (pos.LSN != 0) != (b.End.LSN != 0):
		return "the target's position is of another kind of source"
	case pos.Compare(b.End) > 0:
		return "the target is past the batch: the source started over or was restored, or did not resume at the target's position"
	case pos.Compare(b.Prev) < 0:
		return "the target is behind the batch: the changes in between are not on the target"
	}
	return "the target's position is inside the batch"
}

// drain applies the copy backlog of every table whose copy has committed (no longer in state
// copying), before any event of the batch: the backlog holds the events of transactions
// that committed while the copy ran, which come before the batch's. Events the table's copy
// holds (the source's CopyHolds at the route's copy point) are dropped. The backlog is
// deleted in the batch's transaction.
func (w *Worker) drain(ctx context.Context, bl Backlogger, byTable map[change.Table]*tableRoute, emit func([]change.Event) error, events *int) error {
	tables, err := bl.Backlogged(ctx)
	if err != nil {
		return err
	}
	for _, t := range tables {
		rt, ok := byTable[t]
		if !ok || rt.state == change.StateCopying {
			continue // still copying: its backlog grows; a new copy attempt deletes it
		}
		var applied int
		n, err := bl.DrainBacklog(ctx, t, func(evs []change.Event) error {
			out := evs[:0]
			for i := range evs {
				if rt.holds != nil && rt.holds(&evs[i]) {
					continue
				}
				out = append(out, evs[i])
			}
			applied += len(out)
			if len(out) == 0 {
				return nil
			}
			return emit(out)
		})
		if err != nil {
			return fmt.Errorf("table %s: copy backlog: %w", t, err)
		}
		*events += applied
		w.log.Info("copy backlog applied", "worker", w.cfg.Name, "table", t.String(), "events", applied, "dropped", n-applied)
	}
	return nil
}

// pipeDepth is how many filtered chunks may wait between the reading and the applying side,
// and pipeBytes how many bytes of values they may hold (large rows).
const (
	pipeDepth = 4
	pipeBytes = 64 << 20
)

// pipe reads the batch's events in a goroutine (the provider's work) while emit writes them
// in this one (the target's), so that both servers work at once. The reader filters each
// chunk (table state, handlers) into a new slice and hands it over a small channel: memory
// stays bounded. When emit fails the rest of the batch is read and dropped, which keeps the
// source's connection usable for the retry.
//
// Events of a table being copied (tableRoute.backlog) go to the table's backlog instead
// (bl.AppendBacklog), from this goroutine too: the batch's transaction is used by one
// goroutine only.
func (w *Worker) pipe(ctx context.Context, b change.Batch, byTable map[change.Table]*tableRoute, bl Backlogger, aside *setAside, emit func([]change.Event) error, events, skipped *int) error {
	p := &pipeline{
		w:        w,
		byTable:  byTable,
		aside:    aside,
		ch:       make(chan piece, pipeDepth),
		inFlight: semaphore.NewWeighted(pipeBytes),
		sizes:    make(chan int64, pipeDepth+2),
		free:     make(chan []change.Event, pipeDepth+2),
	}
	go p.read(ctx, b)
	emitErr := p.write(ctx, bl, emit, events)
	*skipped += p.dropped
	if emitErr != nil {
		return emitErr
	}
	return p.readErr
}

// pipeline is one batch's pipe: the reading side (read, chunk, filter, send) and the applying
// side (write), joined by ch. readErr and dropped are written by the reading side and read
// once ch is closed.
type pipeline struct {
	w       *Worker
	byTable map[change.Table]*tableRoute
	aside   *setAside

	ch       chan piece
	inFlight *semaphore.Weighted // bytes of values in the chunks on their way
	sizes    chan int64          // each chunk's weight in inFlight, in the order of the chunks
	// free: chunk buffers go back and forth instead of being allocated for every chunk.
	free chan []change.Event

	readErr error
	dropped int
	many    []change.Event // what a Splitter made of the event in hand (reused)
}

// read streams the batch's events through chunk, then closes ch.
func (p *pipeline) read(ctx context.Context, b change.Batch) {
	defer close(p.ch)
	p.readErr = p.w.cfg.Source.Events(ctx, b, func(chunk []change.Event) error { return p.chunk(ctx, chunk) })
}

// chunk filters one chunk of the source into a buffer of its own and sends it to the
// applying side (or recycles the buffer when nothing is left of it).
func (p *pipeline) chunk(ctx context.Context, chunk []change.Event) error {
	var out []change.Event
	select {
	case out = <-p.free:
	default:
		out = make([]change.Event, 0, len(chunk))
	}
	out, held, err := p.filter(chunk, out)
	if err != nil {
		return err
	}
	if len(out) == 0 && len(held) == 0 {
		select {
		case p.free <- out[:0]:
		default:
		}
		return nil
	}
	return p.send(ctx, out, held)
}

// filter appends to out the events of chunk the batch applies, after their handlers, and
// returns those of tables being copied apart (held, for their backlogs). It drops the events
// set aside, those of tables not subscribed (warned once), those the table's state leaves out
// and those the handlers drop. An event needed but not decoded stops the batch.
func (p *pipeline) filter(chunk, out []change.Event) ([]change.Event, []heldEvent, error) {
	w := p.w
	var held []heldEvent
	for i := range chunk {
		ev := chunk[i]
		if p.aside.want[ev.ID] {
			p.aside.met = append(p.aside.met, change.Event{ID: ev.ID, Op: ev.Op, Table: ev.Table})
			p.dropped++
			continue
		}
		if ev.Op == change.Execute { // skiff execute: SQL run at this point of the stream
			keep, err := w.executeWanted(&ev, p.byTable)
			if err != nil {
				return out, nil, err
			}
			if keep {
				out = append(out, ev)
			} else {
				p.dropped++
			}
			continue
		}
		rt, ok := p.byTable[ev.Table]
		if !ok {
			if !w.warned[ev.Table] {
				w.warned[ev.Table] = true
				w.log.Warn("events of a table not subscribed on the target are ignored", "worker", w.cfg.Name, "table", ev.Table.String(), "event_id", ev.ID)
			}
			p.dropped++
			continue
		}
		if rt.skip {
			p.dropped++
			continue
		}
		want, err := rt.wants(&ev)
		if err != nil {
			return out, nil, err
		}
		if !want {
			p.dropped++
			continue
		}
		if ev.Err != nil {
			// Not decoded, and needed: the batch stops here until the cause is fixed or
			// an operator sets the event aside. Nothing is skipped by the worker itself.
			return out, nil, ev.Err
		}
		if sp, ok := rt.h.(Splitter); ok {
			// Several events (or none) of one: each goes where this one would have.
			many, err := sp.Split(&ev, p.many[:0])
			if err != nil {
				return out, nil, fmt.Errorf("handler of table %s, event %d: %w", ev.Table, ev.ID, err)
			}
			for _, e := range many {
				if rt.backlog {
					held = append(held, heldEvent{src: chunk[i].Table, ev: e})
				} else {
					out = append(out, e)
				}
			}
			if len(many) == 0 {
				p.dropped++
			}
			p.many = many[:0]
			continue
		}
		if rt.h != nil {
			keep, err := rt.h.Handle(&ev)
			if err != nil {
				return out, nil, fmt.Errorf("handler of table %s, event %d: %w", ev.Table, ev.ID, err)
			}
			if !keep {
				p.dropped++
				continue
			}
		}
		if rt.backlog {
			held = append(held, heldEvent{src: chunk[i].Table, ev: ev})
			continue
		}
		out = append(out, ev)
	}
	return out, held, nil
}

// send waits until the bytes of values in flight leave room for the piece (a piece larger
// than the bound waits for an empty pipe) and hands it to the applying side.
func (p *pipeline) send(ctx context.Context, out []change.Event, held []heldEvent) error {
	size := min(valueBytes(out)+heldBytes(held), pipeBytes)
	if err := p.inFlight.Acquire(ctx, size); err != nil {
		return err
	}
	p.sizes <- size // taken by the applying side, in the order of the chunks
	select {
	case p.ch <- piece{out: out, held: held}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write is the applying side: it emits each piece's events and appends its held events to
// their backlogs, in order. After a failure it keeps taking pieces (and drops them) until the
// reading side has read the whole batch. It counts the events it was handed in events.
func (p *pipeline) write(ctx context.Context, bl Backlogger, emit func([]change.Event) error, events *int) error {
	var emitErr error
	for pc := range p.ch {
		out := pc.out
		*events += len(out)
		if emitErr == nil && len(out) > 0 {
			emitErr = emit(out)
		}
		if emitErr == nil && len(pc.held) > 0 {
			emitErr = p.w.hold(ctx, bl, pc.held)
		}
		p.inFlight.Release(<-p.sizes)
		clear(out) // drop the rows' references; emit has copied what it keeps
		select {
		case p.free <- out[:0]:
		default:
		}
	}
	return emitErr
}

// valueBytes is the size of the events' values.
func valueBytes(evs []change.Event) int64 {
	var size int64
	for i := range evs {
		for _, v := range evs[i].Values {
			size += int64(len(v.Text))
		}
	}
	return size
}

// heldBytes is the size of the held events' values.
func heldBytes(held []heldEvent) int64 {
	var size int64
	for i := range held {
		for _, v := range held[i].ev.Values {
			size += int64(len(v.Text))
		}
	}
	return size
}

// setAside is what an operator set aside for the batch (DeadLetterer.SetAside) and which of
// those events the batch held (written by the reading goroutine, read after it ends).
type setAside struct {
	want map[int64]bool
	met  []change.Event // id, op and table of each
}

// piece is one filtered chunk on its way from the reading to the applying side: the events
// to write, and those of tables being copied, to append to their backlogs.
type piece struct {
	out  []change.Event
	held []heldEvent
}

// heldEvent is an event (after handlers) of source table src, which is being copied.
type heldEvent struct {
	src change.Table
	ev  change.Event
}

// hold appends events to their tables' backlogs, a run of one table at a time, in order.
func (w *Worker) hold(ctx context.Context, bl Backlogger, held []heldEvent) error {
	evs := make([]change.Event, 0, len(held))
	for i := 0; i < len(held); {
		j := i
		evs = evs[:0]
		for j < len(held) && held[j].src == held[i].src {
			evs = append(evs, held[j].ev)
			j++
		}
		if err := bl.AppendBacklog(ctx, held[i].src, evs); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// tableRoute is a subscribed table as the worker replays it.
type tableRoute struct {
	state change.TableState
	// holds says whether the table's copy holds an event (the source's CopyHolds at the
	// route's copy point), once a copy published its point; kept after in-sync.
	holds func(*change.Event) bool
	h     Handler
	route change.Route
	// backlog: the table is copying and the applier keeps a backlog: the events wants keeps
	// go to the backlog, not to the destination.
	backlog bool
	// skip: the handler drops every event (Skipper).
	skip bool
}

// wants says whether the worker applies an event of the table in its current state.
//
// While a table is copying, its copy holds the destination's lock from before its copy point
// until it commits: events the copy holds (the source says which) are skipped; the others
// are kept. Skipping them instead would lose the transactions that commit during a long
// copy. Kept events go to the table's backlog when the applier keeps one
// (tableRoute.backlog; applied by the first batch after the copy commits), else they are
// applied and wait on that lock, landing after the copied rows (the whole batch waits).
//
// Before the copy point is known (a copy about to publish it, or one that failed and waits
// for its next attempt) events go to the backlog as they come: the drain filters the backlog
// at the point the copy finally publishes, and a copy that starts over deletes it. Without a
// backlog the batch must wait (change.ErrCopyPending), and with it every other table of the
// subscription.
func (r *tableRoute) wants(ev *change.Event) (bool, error) {
	switch r.state {
	case change.StateInSync:
		return true, nil
	case change.StateCatchingUp:
		return r.holds == nil || !r.holds(ev), nil
	}
	if r.holds == nil {
		if r.backlog {
			return true, nil
		}
		return false, fmt.Errorf("table %s, event %d: %w", ev.Table, ev.ID, change.ErrCopyPending)
	}
	return !r.holds(ev), nil
}

func (w *Worker) handlers(routes []change.Route) (map[change.Table]*tableRoute, error) {
	points, _ := w.cfg.Source.(CopyPoints)
	out := make(map[change.Table]*tableRoute, len(routes))
	for _, r := range routes {
		h, ok := w.routes[r]
		if !ok {
			var err error
			if h, err = w.cfg.Handlers(r); err != nil {
				return nil, err
			}
			w.routes[r] = h
		}
		tr := &tableRoute{state: r.State, h: h, route: r}
		if sk, ok := h.(Skipper); ok && sk.SkipsAll() {
			tr.skip = true
		}
		// An in-sync table needs no copy point (its backlog, if any, is drained with it).
		if r.CopyPoint != "" && (points != nil || r.State != change.StateInSync) {
			if points == nil {
				return nil, fmt.Errorf("table %s is %s at copy point %q, which this source cannot read", r.Source, r.State, r.CopyPoint)
			}
			holds, err := points.CopyHolds(r.CopyPoint)
			if err != nil {
				return nil, fmt.Errorf("table %s: copy point: %w", r.Source, err)
			}
			tr.holds = holds
		}
		out[r.Source] = tr
	}
	return out, nil
}
