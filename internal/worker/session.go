package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/logical"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/tabledef"
	"github.com/skiffdb/skiff/queue"
)

// session is one queue's connections: a source on the provider (trigger.Source) and an
// apply.Applier on the target. It reconnects both when either connection is lost: NextBatch,
// Position and Resume check them first, and a failure to reconnect (a database down, another
// worker holding the subscription) is the batch's failure, retried by the worker loop with its
// backoff.
type session struct {
	cfg       *Config
	queue     string
	consumer  string
	log       *slog.Logger
	prov, tgt *pgx.Conn
	src       consumer.Source // with the optional abilities the session forwards
	trig      *trigger.Source // src of a trigger queue (closed with the session: its read-ahead connection)
	app       *apply.Applier

	mu       sync.Mutex // guards what Backends, targetDesc and confirmed read from other goroutines
	pids     [2]uint32  // provider's and target's backend, 0 when not connected
	tgtDescr string
	logical  *logical.Source // src of a logical queue (closed with the session)
	// makers are the routes' handlers that create tables on demand, by the route's
	// destination (guarded by mu).
	makers map[change.Table]handlers.TableMaker
}

// handlers builds a route's handlers (the worker's Config.Handlers) and keeps those that
// create tables on demand for the applier (makeTable).
func (s *session) handlers(r change.Route) (consumer.Handler, error) {
	h, err := s.cfg.Registry.ForRoute(r)
	if err != nil {
		return nil, err
	}
	if m, ok := h.(handlers.TableMaker); ok {
		s.mu.Lock()
		if s.makers == nil {
			s.makers = map[change.Table]handlers.TableMaker{}
		}
		s.makers[r.Dest] = m
		s.mu.Unlock()
	}
	return h, nil
}

// makeTable creates table t in db (the batch's transaction) when a route's handler says how
// (apply.Config.MakeTable).
func (s *session) makeTable(ctx context.Context, db pg.DB, t change.Table) (bool, error) {
	s.mu.Lock()
	var nt handlers.NewTable
	var ok bool
	for dest, m := range s.makers {
		if nt, ok = m.MakeTable(dest, t); ok {
			break
		}
	}
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, tabledef.CreateLike(ctx, db, nt.Table, nt.Like, nt.Bound)
}

var (
	_ consumer.Source        = (*session)(nil)
	_ consumer.Resumer       = (*session)(nil)
	_ consumer.CopyPoints    = (*session)(nil)
	_ consumer.Applier       = (*session)(nil)
	_ consumer.ErrorRecorder = (*session)(nil)
	_ consumer.Heartbeater   = (*session)(nil)
	_ consumer.Backlogger    = (*session)(nil)
	_ consumer.DeadLetterer  = (*session)(nil)
	_ consumer.Conflicter    = (*session)(nil)
	_ consumer.Source        = (*trigger.Source)(nil)
	_ consumer.CopyPoints    = (*trigger.Source)(nil)
	_ consumer.Applier       = (*apply.Applier)(nil)
	_ consumer.Backlogger    = (*apply.Applier)(nil)
	_ consumer.Heartbeater   = (*apply.Applier)(nil)
	_ consumer.ErrorRecorder = (*apply.Applier)(nil)
	_ consumer.DeadLetterer  = (*apply.Applier)(nil)
	_ consumer.Conflicter    = (*apply.Applier)(nil)
)

func (s *session) connect(ctx context.Context) error {
	s.close()
	app := "skiff worker " + s.queue
	var err error
	if s.prov, err = pg.Connect(ctx, s.cfg.Provider, app); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	tcfg, err := pg.ParseConfig(s.cfg.Target, app)
	if err != nil {
		return err
	}
	desc := pg.Describe(tcfg)
	s.mu.Lock()
	s.tgtDescr = desc
	s.mu.Unlock()
	if s.tgt, err = pg.ConnectConfig(ctx, tcfg); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if s.app, err = apply.Open(ctx, s.tgt, apply.Config{Queue: s.queue, Consumer: s.consumer, Log: s.log, MaxPendingRows: s.cfg.MaxPendingRows,
		MakeTable: s.makeTable}); err != nil {
		return fmt.Errorf("target %s: %w", desc, err)
	}
	kind, err := queue.QueueKind(ctx, s.prov, s.queue)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	if kind.Logical() {
		if s.src, err = s.logicalSource(ctx, kind); err != nil {
			return err
		}
	} else {
		provider := s.cfg.Provider
		readAhead := func(ctx context.Context) (*pgx.Conn, error) { return pg.Connect(ctx, provider, app+" read-ahead") }
		src, err := trigger.New(ctx, s.prov, trigger.Config{Queue: s.queue, Consumer: s.consumer, MaxEvents: s.cfg.MaxEvents, Log: s.log,
			ReadAhead: readAhead})
		if err != nil {
			return fmt.Errorf("provider: %w", err)
		}
		s.src, s.trig = src, src
	}
	s.mu.Lock()
	s.pids = [2]uint32{s.prov.PgConn().PID(), s.tgt.PgConn().PID()}
	s.mu.Unlock()
	return nil
}

// logicalSource opens the source of a logical queue: the subscription's replication slot,
// streamed from the position the target has applied.
func (s *session) logicalSource(ctx context.Context, kind queue.Kind) (consumer.Source, error) {
	slot, err := queue.ConsumerSlot(ctx, s.prov, s.queue, s.consumer)
	if err != nil {
		if errors.Is(err, queue.ErrNotRegistered) {
			return nil, unregisteredError{err}
		}
		return nil, fmt.Errorf("provider: %w", err)
	}
	if slot.Name == "" {
		return nil, fmt.Errorf("provider: consumer %s of logical queue %s has no replication slot yet: run skiff subscribe", s.consumer, s.queue)
	}
	src, err := logical.New(logical.Config{Conn: s.cfg.Provider, AppName: "skiff worker " + s.queue, Slot: slot.Name,
		Plugin: kind.Plugin, Publication: kind.Publication, Queue: s.queue, MaxEvents: int(s.cfg.MaxEvents), Log: s.log,
		TruncateMarker: queue.TruncateMarkerTable, QueueID: slot.QueueID})
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	s.mu.Lock()
	s.logical = src
	s.mu.Unlock()
	pos, err := s.app.Position(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if err := src.Resume(ctx, pos); err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	return src, nil
}

func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.app != nil {
		_ = s.app.Close(ctx)
	}
	s.mu.Lock()
	src := s.logical
	s.logical = nil
	s.mu.Unlock()
	if src != nil {
		_ = src.Close(ctx)
	}
	if s.trig != nil {
		_ = s.trig.Close(ctx)
	}
	for _, c := range []*pgx.Conn{s.prov, s.tgt} {
		if c != nil {
			_ = c.Close(ctx)
		}
	}
	s.prov, s.tgt, s.src, s.trig, s.app = nil, nil, nil, nil, nil
	s.mu.Lock()
	s.pids = [2]uint32{}
	s.mu.Unlock()
}

// confirmed is the position the logical queue's stream has confirmed (logical.Source.Confirmed:
// everything before it applied, or of no concern to the queue); false when the session has no
// logical source (a trigger queue, or not connected). The table manager's goroutine calls it.
func (s *session) confirmed() (change.Position, bool) {
	s.mu.Lock()
	src := s.logical
	s.mu.Unlock()
	if src == nil {
		return change.Position{}, false
	}
	return src.Confirmed(), true
}

// backends returns the provider's and the target's backend pids (0 when not connected).
func (s *session) backends() (provider, target uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pids[0], s.pids[1]
}

// targetDesc describes the target (no password).
func (s *session) targetDesc() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tgtDescr
}

// ensure reconnects when a connection was lost.
func (s *session) ensure(ctx context.Context) error {
	if s.src != nil && s.app != nil && !s.prov.IsClosed() && !s.tgt.IsClosed() {
		return nil
	}
	s.log.Info("reconnecting")
	if err := s.connect(ctx); err != nil {
		s.close()
		return err
	}
	return nil
}

func (s *session) NextBatch(ctx context.Context) (change.Batch, error) {
	if err := s.ensure(ctx); err != nil {
		return change.Batch{}, err
	}
	b, err := s.src.NextBatch(ctx)
	if errors.Is(err, queue.ErrNotRegistered) {
		// Unsubscribed (or the queue dropped) under the worker: waiting cannot help.
		return b, unregisteredError{err}
	}
	return b, err
}

// unregisteredError: the consumer is no longer registered on the provider (skiff unsubscribe,
// skiff queue drop): the worker stops instead of retrying.
type unregisteredError struct{ err error }

func (e unregisteredError) Error() string {
	return e.err.Error() + " (removed by skiff unsubscribe or skiff queue drop?): the worker stops"
}

// Unwrap gives the provider's error and change.ErrPositionLost: the worker stops.
func (e unregisteredError) Unwrap() []error { return []error{e.err, change.ErrPositionLost} }

func (s *session) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	return s.src.Events(ctx, b, fn)
}

func (s *session) Finish(ctx context.Context, b change.Batch) error { return s.src.Finish(ctx, b) }

// Resume forwards to a source that restarts at the target's position (consumer.Resumer),
// once the connections are up; a re-readable source (the trigger queue) ignores it.
func (s *session) Resume(ctx context.Context, from change.Position) error {
	if err := s.ensure(ctx); err != nil {
		return err
	}
	if r, ok := s.src.(consumer.Resumer); ok {
		return r.Resume(ctx, from)
	}
	return nil
}

// CopyHolds forwards to the source's consumer.CopyPoints. It is called inside Apply's stream,
// where s.src is set.
func (s *session) CopyHolds(point string) (func(*change.Event) bool, error) {
	p, ok := s.src.(consumer.CopyPoints)
	if !ok {
		return nil, errors.New("the queue's source cannot read copy points")
	}
	return p.CopyHolds(point)
}

func (s *session) Position(ctx context.Context) (change.Position, error) {
	if err := s.ensure(ctx); err != nil {
		return change.Position{}, err
	}
	return s.app.Position(ctx)
}

func (s *session) Routes(ctx context.Context) ([]change.Route, error) { return s.app.Routes(ctx) }

func (s *session) Apply(ctx context.Context, b change.Batch, stream func(emit func([]change.Event) error) error) error {
	return s.app.Apply(ctx, b, stream)
}

// The copy backlog (consumer.Backlogger): called inside Apply's stream, where s.app is set.

func (s *session) AppendBacklog(ctx context.Context, src change.Table, evs []change.Event) error {
	return s.app.AppendBacklog(ctx, src, evs)
}

func (s *session) Backlogged(ctx context.Context) ([]change.Table, error) {
	return s.app.Backlogged(ctx)
}

func (s *session) DrainBacklog(ctx context.Context, src change.Table, fn func([]change.Event) error) (int, error) {
	return s.app.DrainBacklog(ctx, src, fn)
}

func (s *session) Heartbeat(ctx context.Context) error {
	if s.app == nil || s.tgt == nil || s.tgt.IsClosed() {
		return errors.New("not connected to the target")
	}
	return s.app.Heartbeat(ctx)
}

// LastConflicts forwards the applier's merge conflicts of the last batch (0 unconnected).
func (s *session) LastConflicts() int64 {
	if s.app == nil {
		return 0
	}
	return s.app.LastConflicts()
}

func (s *session) RecordError(ctx context.Context, err error) error {
	if s.app == nil || s.tgt == nil || s.tgt.IsClosed() {
		return errors.New("not connected to the target")
	}
	return s.app.RecordError(ctx, err)
}

func (s *session) SetAside(ctx context.Context, b change.Batch) ([]int64, error) {
	return s.app.SetAside(ctx, b)
}

func (s *session) MarkSetAside(ctx context.Context, b change.Batch, ids []int64) error {
	return s.app.MarkSetAside(ctx, b, ids)
}
