package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/metrics"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// WorkerCmd is `skiff worker`: replay the batches of one or more queues on the target.
type WorkerCmd struct {
	Provider    string        `help:"Provider database: libpq connection string or URI." required:""`
	Target      string        `help:"Target database: libpq connection string or URI." required:""`
	Queue       []string      `help:"Queue to replay; repeat for several (each runs in its own goroutine with its own connections). All start or none: a queue that cannot start (no subscription, another worker holding it, a database refusing) stops the worker before any queue replays a batch, naming the queue and the cause." required:"" sep:"none"`
	Consumer    string        `help:"Consumer name on the provider (default: the one of the queue's subscription on the target)."`
	MaxEvents   int64         `help:"Merge ticks into batches of about this many events when behind." default:"20000"`
	MinBackoff  time.Duration `help:"First wait before a failed batch is retried; doubles at each failure." default:"1s"`
	MaxBackoff  time.Duration `help:"Longest wait between retries of a failed batch." default:"1m"`
	MetricsAddr string        `help:"Serve Prometheus metrics on this address (e.g. :9188); empty disables."`
	// CopyParallel: tables in state copying (resync, added tables, copies cut short by a
	// crash) are copied by the worker's table manager (issue 5).
	CopyParallel int `help:"Tables the worker copies at once (tables in state copying: resync, added tables)." default:"2"`
	// CopyLockTimeout bounds a copy's wait for its destination's lock while the copy's
	// barrier holds the subscription's batches back.
	CopyLockTimeout time.Duration `help:"How long a copy waits for its destination's lock (the subscription's batches wait meanwhile) before it fails, naming the holder, and is tried again later." default:"5s"`
}

// workerMemoryLimit is the Go heap's soft limit (debug.SetMemoryLimit) per queue a worker
// replays, unless GOMEMLIMIT is set: what a batch holds live is bounded (runs of 50k rows or
// 64 MiB, a few chunks in flight), the rest is garbage GOGC 400 lets pile up.
const workerMemoryLimit = 160 << 20

// Run replays the queues until a signal: the first finishes the batches in hand, the second
// rolls them back.
func (c *WorkerCmd) Run(rt *Runtime) error {
	names, err := c.consumers(rt.Ctx)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// Decoding and applying allocate per row; a batch's memory is bounded (chunks and runs),
		// so collect less often: measured, GC was half of the worker's CPU at the default 100.
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// GOGC 400 lets the heap grow to five times what is live: a large batch (50k pending
		// rows a run, four chunks in the pipe) then took the RSS near 500 MB. A soft limit
		// per queue makes the collector run more often as the heap nears it, and only then.
		debug.SetMemoryLimit(int64(len(c.Queue)) * workerMemoryLimit)
	}
	reg := metrics.NewRegistry()
	m := consumer.NewMetrics(reg)
	// All queues start or none: each queue's connections, subscription lock and parts are
	// set up before any of them replays a batch. A queue that cannot start (no
	// subscription, another worker holding it, a database refusing) stops the command,
	// naming the queue, with the queues set up so far closed, not left running beside it.
	type part struct {
		queue string
		s     *session
		w     *consumer.Worker
		mgr   *copier.Manager
		log   *slog.Logger
	}
	parts := make([]part, 0, len(c.Queue))
	fail := func(q string, err error) error {
		for _, p := range parts {
			p.s.close()
		}
		return fmt.Errorf("queue %s: %w (no queue started)", q, err)
	}
	for _, q := range c.Queue {
		name := names[q]
		// Every message of the queue's parts carries queue and consumer once: the parts
		// (source, applier, worker, table manager) add none of their own.
		log := rt.Log.With("queue", q, "consumer", name)
		s := &session{cmd: c, queue: q, consumer: name, log: log}
		// The first connection fails fast (e.g. another worker holds the subscription);
		// later reconnections are retried by the worker loop.
		if err := s.connect(rt.Ctx); err != nil {
			s.close()
			return fail(q, err)
		}
		w, err := consumer.NewWorker(consumer.Config{
			Name: q, Source: s, Applier: s, Handlers: func(r change.Route) (consumer.Handler, error) { return rt.Registry.ForRoute(r) }, Log: log,
			MinBackoff: c.MinBackoff, MaxBackoff: c.MaxBackoff, Metrics: m.For(q),
		})
		if err != nil {
			s.close()
			return fail(q, err)
		}
		ccfg, err := copyConfig(c.Provider, c.Target, "skiff worker copy "+q, c.CopyParallel, log, nil, rt.Registry)
		if err != nil {
			s.close()
			return fail(q, err)
		}
		ccfg.LockTimeout = c.CopyLockTimeout
		parts = append(parts, part{queue: q, s: s, w: w, mgr: tableManager(ccfg, q, name, log), log: log})
	}
	g, ctx := errgroup.WithContext(rt.Ctx)
	g.Go(func() error { return metrics.Serve(ctx, c.MetricsAddr, reg, rt.Log) })
	for _, p := range parts {
		g.Go(func() error { return p.mgr.Run(ctx) })
		g.Go(func() error {
			defer p.s.close()
			p.log.Info("worker started", "target", p.s.targetDesc)
			err := p.w.Run(ctx, rt.Hard)
			if err != nil {
				return fmt.Errorf("queue %s: %w", p.queue, err)
			}
			p.log.Info("worker stopped")
			return nil
		})
	}
	return g.Wait()
}

// consumers checks that both databases have skiff's schema and names the consumer of each
// queue's subscription on the target: --consumer, or the subscription the target records for
// the queue, however its URL is spelt.
func (c *WorkerCmd) consumers(ctx context.Context) (map[string]string, error) {
	prov, err := pg.Connect(ctx, c.Provider, "skiff worker")
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	if err := requireSchema(ctx, prov, migrate.Provider); err != nil {
		return nil, err
	}
	tgt, err := pg.Connect(ctx, c.Target, "skiff worker")
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := migrate.Require(ctx, tgt, migrate.Target, pg.Describe(tgt.Config()), identityVersion); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, q := range c.Queue {
		name, found, err := consumerFor(ctx, tgt, c.Consumer, q, c.Target)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("the target %s has no subscription of queue %s (consumer %s): run skiff subscribe first",
				pg.Describe(tgt.Config()), q, name)
		}
		out[q] = name
	}
	return out, nil
}

// session is one queue's connections: a queue.Source on the provider and an apply.Applier on
// the target. It reconnects both when either connection is lost.
type session struct {
	cmd        *WorkerCmd
	queue      string
	consumer   string
	log        *slog.Logger
	prov, tgt  *pgx.Conn
	src        *queue.Source
	app        *apply.Applier
	targetDesc string
}

var (
	_ consumer.Source        = (*session)(nil)
	_ consumer.Applier       = (*session)(nil)
	_ consumer.ErrorRecorder = (*session)(nil)
	_ consumer.Heartbeater   = (*session)(nil)
	_ consumer.Backlogger    = (*session)(nil)
	_ consumer.DeadLetterer  = (*session)(nil)
	_ consumer.Source        = (*queue.Source)(nil)
	_ consumer.Applier       = (*apply.Applier)(nil)
	_ consumer.Backlogger    = (*apply.Applier)(nil)
	_ consumer.Heartbeater   = (*apply.Applier)(nil)
	_ consumer.ErrorRecorder = (*apply.Applier)(nil)
)

func (s *session) connect(ctx context.Context) error {
	s.close()
	var err error
	if s.prov, err = pg.Connect(ctx, s.cmd.Provider, "skiff worker "+s.queue); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	tcfg, err := pg.ParseConfig(s.cmd.Target, "skiff worker "+s.queue)
	if err != nil {
		return err
	}
	s.targetDesc = pg.Describe(tcfg)
	if s.tgt, err = pg.ConnectConfig(ctx, tcfg); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if s.app, err = apply.Open(ctx, s.tgt, apply.Config{Queue: s.queue, Consumer: s.consumer, Log: s.log}); err != nil {
		return fmt.Errorf("target %s: %w", s.targetDesc, err)
	}
	if s.src, err = queue.NewSource(ctx, s.prov, queue.SourceConfig{Queue: s.queue, Consumer: s.consumer, MaxEvents: s.cmd.MaxEvents, Log: s.log}); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	return nil
}

func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.app != nil {
		_ = s.app.Close(ctx)
	}
	for _, c := range []*pgx.Conn{s.prov, s.tgt} {
		if c != nil {
			_ = c.Close(ctx)
		}
	}
	s.prov, s.tgt, s.src, s.app = nil, nil, nil, nil
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
