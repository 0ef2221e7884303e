// Package worker is the worker service: what `skiff worker` runs, as a library type that the
// command, the end-to-end tests and a custom binary share. For each queue it runs a
// consumer.Worker over a session (a queue.Source on the provider and an apply.Applier on the
// target, reconnected when a connection is lost, retried while another worker holds the
// subscription), and the queue's table manager (copier.Manager: copies of tables in state
// copying, promotion to in-sync, sequences); and one metrics server for all of them.
//
// Its lifecycle is internal/startstop's: Start connects every queue and returns once all
// run (all start or none), Stop lets each worker finish the batch in hand, StopAndCancel
// rolls it back.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/metrics"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/startstop"
)

// Queue is one queue the service replays and the consumer whose subscription it applies.
type Queue struct {
	// Name is the queue on the provider.
	Name string
	// Consumer is the consumer registered on the provider, whose subscription the target
	// records (skiff subscribe).
	Consumer string
}

// Config configures a Service. Zero values take the defaults documented on each field.
type Config struct {
	// Provider and Target are the databases, as libpq connection strings or URIs; required.
	// Each connection is opened from them with its own application_name ("skiff worker Q",
	// "skiff worker copy Q").
	Provider, Target string
	// Queues are the queues to replay, each on connections of its own; at least one, each
	// queue once.
	Queues []Queue
	// Registry holds the handlers the subscriptions' tables name (subscribe --handler), for
	// the workers and the table managers' copies. Nil means handlers.NewRegistry(): the
	// built-in ones.
	Registry *handlers.Registry
	// MaxEvents merges ticks into batches of about this many events when behind
	// (queue.SourceConfig.MaxEvents; 0: its default, 50000).
	MaxEvents int64
	// MaxPendingRows bounds the rows the applier holds per table before it writes them
	// (apply.Config.MaxPendingRows; 0: its default).
	MaxPendingRows int
	// MinBackoff and MaxBackoff bound the wait before a failed batch is retried, doubling at
	// each failure (defaults consumer.DefaultMinBackoff and DefaultMaxBackoff, 1 s and 1 min).
	// A lost connection, and a subscription another worker holds after a reconnection, are
	// failures of this kind: the batch is retried on new connections.
	MinBackoff, MaxBackoff time.Duration
	// WaitForLock makes a queue whose subscription another worker holds at Start wait for it
	// (retried like a failed batch, MinBackoff…MaxBackoff) instead of failing Start: a standby
	// that takes over when that worker stops. `skiff worker` leaves it false: all queues
	// start or none.
	WaitForLock bool
	// CopyParallel is how many tables each queue's table manager copies at once (default 2).
	CopyParallel int
	// CopyLockTimeout bounds a copy's wait for its destination's lock while the copy's
	// barrier holds the subscription's batches back (copier.Config.LockTimeout; 0: its
	// default, 5 s).
	CopyLockTimeout time.Duration
	// CopySplitRows splits the copy of a table estimated at more rows than this into key
	// ranges copied at once (copier.Config.SplitRows; 0: never).
	CopySplitRows int64
	// ManagerInterval is how often each table manager looks at the target (default 2 s).
	ManagerInterval time.Duration
	// NoTableManager runs no table manager: tables in state copying wait for another process
	// to copy them (tests that drive copies themselves).
	NoTableManager bool
	// MetricsAddr serves Metrics on this address (e.g. ":9188"); empty serves nothing.
	MetricsAddr string
	// Metrics receives the workers' metrics (consumer.Metrics) and the replication slots' of
	// the logical queues, read from the provider at each scrape (skiff_worker_slot_active,
	// skiff_worker_slot_retained_wal_bytes, skiff_worker_slot_lag_bytes). Nil means a registry
	// of the service's own (metrics.NewRegistry: with the Go runtime and process collectors).
	Metrics *prometheus.Registry
	// Log receives the service's messages, each queue's with "queue" and "consumer"
	// attributes; nil discards them.
	Log *slog.Logger
	// OnBatch, when set, is called after each batch is applied and finished, from the
	// queue's worker goroutine (tests, progress).
	OnBatch func(queue string, b change.Batch, events int)
}

func (c *Config) validate() error {
	if c.Provider == "" || c.Target == "" {
		return errors.New("worker: Provider and Target are required")
	}
	if len(c.Queues) == 0 {
		return errors.New("worker: no queue given")
	}
	seen := map[string]bool{}
	for _, q := range c.Queues {
		if q.Name == "" || q.Consumer == "" {
			return fmt.Errorf("worker: queue %q: Name and Consumer are required", q.Name)
		}
		if seen[q.Name] {
			return fmt.Errorf("worker: queue %s given twice", q.Name)
		}
		seen[q.Name] = true
	}
	for _, s := range []string{c.Provider, c.Target} {
		if _, err := pg.ParseConfig(s, ""); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	}
	if c.Registry == nil {
		c.Registry = handlers.NewRegistry()
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = consumer.DefaultMinBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(consumer.DefaultMaxBackoff, c.MinBackoff)
	}
	if c.CopyParallel <= 0 {
		c.CopyParallel = 2
	}
	if c.ManagerInterval <= 0 {
		c.ManagerInterval = 2 * time.Second
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewRegistry()
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Service is the worker service over the queues of one provider and one target.
type Service struct {
	cfg     Config
	life    startstop.Base
	metrics *metrics.Server
	workerM *consumer.Metrics
	slotM   *slotMetrics // the logical queues' slots, read at each scrape

	mu    sync.Mutex
	parts []*part // once started
}

// part is one queue's share of the service.
type part struct {
	queue Queue
	log   *slog.Logger
	s     *session
	w     *consumer.Worker
	mgr   *copier.Manager // nil with NoTableManager
}

// New checks cfg, fills in its defaults and returns a service, not started.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:     cfg,
		metrics: metrics.NewServer(cfg.MetricsAddr, cfg.Metrics, cfg.Log),
		workerM: consumer.NewMetrics(cfg.Metrics),
	}
	slotM, err := newSlotMetrics(cfg.Provider, cfg.Log, s.startedParts)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if err := cfg.Metrics.Register(slotM); err != nil {
		return nil, fmt.Errorf("worker: slot metrics: %w", err)
	}
	s.slotM = slotM
	return s, nil
}

// startedParts returns the queues' parts once started (none before).
func (s *Service) startedParts() []*part {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parts
}

// Start connects every queue (provider and target, the subscription's lock taken) and, once
// all are connected, starts their workers, table managers and the metrics server in the
// background. All queues start or none: a queue that cannot start (no subscription, another
// worker holding it — unless WaitForLock —, a database refusing) fails Start, naming the
// queue and the cause, with the queues connected so far closed and nothing applied.
// Cancelling ctx stops the service like Stop.
func (s *Service) Start(ctx context.Context) error {
	return s.life.Start(ctx, s.setup, s.run)
}

// Stop asks every queue's worker to finish the batch in hand, stops the table managers (their
// copies in hand are rolled back and taken up again at the next start) and the metrics
// server, and waits. It is idempotent.
func (s *Service) Stop() { s.life.Stop() }

// StopAndCancel stops like Stop but rolls the batches in hand back, and waits.
func (s *Service) StopAndCancel() { s.life.StopAndCancel() }

// Stopped is closed once the service has stopped: asked to, or because a queue cannot go on
// (Err).
func (s *Service) Stopped() <-chan struct{} { return s.life.Stopped() }

// Err is why the service stopped: nil after a requested stop; otherwise the errors of the
// queues that could not go on (each naming its queue; change.ErrPositionLost for a
// subscription whose position is lost or that was removed) or of the metrics server. Every
// other queue was stopped softly then.
func (s *Service) Err() error { return s.life.Err() }

// Backends returns the server process ids of the queue's current provider and target
// connections (0 while it has none; both 0 for a queue the service does not run).
func (s *Service) Backends(queue string) (provider, target uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.parts {
		if p.queue.Name == queue {
			return p.s.backends()
		}
	}
	return 0, 0
}

// setup is Start's synchronous part: connect every queue, then start the parts.
func (s *Service) setup(ctx context.Context) error {
	parts := make([]*part, 0, len(s.cfg.Queues))
	fail := func(q string, err error) error {
		for _, p := range parts {
			p.s.close()
		}
		return fmt.Errorf("queue %s: %w (no queue started)", q, err)
	}
	for _, q := range s.cfg.Queues {
		p, err := s.newPart(ctx, q)
		if err != nil {
			return fail(q.Name, err)
		}
		parts = append(parts, p)
	}
	// Only now, with every queue connected: start them.
	if err := s.metrics.Start(context.WithoutCancel(ctx)); err != nil {
		for _, p := range parts {
			p.s.close()
		}
		return err
	}
	bg := context.WithoutCancel(ctx) // the parts are stopped by run, softly or not
	for _, p := range parts {
		if p.mgr != nil {
			_ = p.mgr.Start(bg) // a new manager: its only error is "already started"
		}
		p.log.Info("worker started", "target", p.s.targetDesc())
		_ = p.w.Start(bg) // likewise
	}
	s.mu.Lock()
	s.parts = parts
	s.mu.Unlock()
	return nil
}

// newPart connects a queue's session and builds its worker and table manager.
func (s *Service) newPart(ctx context.Context, q Queue) (*part, error) {
	// Every message of the queue's parts carries queue and consumer once: the parts (source,
	// applier, worker, table manager) add none of their own.
	log := s.cfg.Log.With("queue", q.Name, "consumer", q.Consumer)
	ss := &session{cfg: &s.cfg, queue: q.Name, consumer: q.Consumer, log: log}
	// The first connection fails fast (e.g. another worker holds the subscription); later
	// reconnections are retried by the worker loop.
	if err := ss.connect(ctx); err != nil {
		ss.close()
		if !s.cfg.WaitForLock || !errors.Is(err, apply.ErrLocked) {
			return nil, err
		}
		log.Info("waiting for the worker that holds the subscription", "reason", err.Error())
	}
	wcfg := consumer.Config{
		Name:       q.Name,
		Source:     ss,
		Applier:    ss,
		Handlers:   ss.handlers,
		Log:        log,
		MinBackoff: s.cfg.MinBackoff,
		MaxBackoff: s.cfg.MaxBackoff,
		Metrics:    s.workerM.For(q.Name),
	}
	if on := s.cfg.OnBatch; on != nil {
		wcfg.OnBatch = func(b change.Batch, events int) { on(q.Name, b, events) }
	}
	w, err := consumer.NewWorker(wcfg)
	if err != nil {
		ss.close()
		return nil, err
	}
	p := &part{queue: q, log: log, s: ss, w: w}
	if !s.cfg.NoTableManager {
		if p.mgr, err = s.tableManager(q, log, ss.confirmed); err != nil {
			ss.close()
			return nil, err
		}
	}
	return p, nil
}

// run waits for a stop, or for a queue (or the metrics server) that cannot go on, then
// stops every part: softly, or at once when hard ends meanwhile.
func (s *Service) run(soft, hard context.Context) error {
	s.mu.Lock()
	parts := s.parts
	s.mu.Unlock()
	ended := make(chan struct{}, len(parts)+1)
	watch := func(c <-chan struct{}) {
		go func() {
			select {
			case <-c:
				ended <- struct{}{}
			case <-hard.Done(): // hard ends once run returns
			}
		}()
	}
	for _, p := range parts {
		watch(p.w.Stopped())
	}
	watch(s.metrics.Stopped())
	select {
	case <-soft.Done():
	case <-ended:
	}

	var wg sync.WaitGroup
	var errs []error
	var mu sync.Mutex
	stop := func(sv service, after func()) {
		wg.Go(func() {
			stopService(sv, hard)
			if after != nil {
				after()
			}
		})
	}
	for _, p := range parts {
		if p.mgr != nil {
			stop(p.mgr, nil)
		}
		stop(p.w, func() {
			p.s.close()
			if err := p.w.Err(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("queue %s: %w", p.queue.Name, err))
				mu.Unlock()
				return
			}
			p.log.Info("worker stopped")
		})
	}
	wg.Wait()
	stopService(s.metrics, hard)
	s.slotM.close()
	if err := s.metrics.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// service is the lifecycle of a part (internal/startstop).
type service interface {
	Stop()
	StopAndCancel()
	Stopped() <-chan struct{}
}

// stopService stops sv softly, or at once when hard ends first, and waits.
func stopService(sv service, hard context.Context) {
	done := make(chan struct{})
	go func() {
		sv.Stop()
		close(done)
	}()
	select {
	case <-done:
	case <-hard.Done():
		sv.StopAndCancel()
		<-done
	}
}
