// Package ticker is the ticker daemon: it cuts every queue of one or many provider databases
// into batches by calling skiff.ticker(queue) often enough that lag stays well under a second
// (the thresholds that decide whether a tick is due live per queue in the database), and runs
// queue maintenance on cron schedules: rotation of event tables, retry events, cleanup of old
// ticks and VACUUM of the small hot tables.
//
// One loop per database, each on its own connection: a database that goes down is retried with
// exponential backoff and jitter while the others keep ticking. On each database, a
// session-level advisory lock held by the ticker's connection decides which of several tickers
// ticks; the others stand by and take over when it goes away.
package ticker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/startstop"
)

// LockKey is the session-level advisory lock (pg_try_advisory_lock(bigint)) a ticker holds on
// each provider database while it ticks: "skiff" in ASCII followed by 't'. Advisory locks are
// per database, so one key serves every database.
const LockKey int64 = 0x736b696666<<8 | 't'

// Config configures a Ticker. Zero durations take the defaults documented on each field.
type Config struct {
	// DBs are the provider databases, as libpq connection strings or URIs.
	DBs []string
	// AllDatabases makes each of DBs an entry point to its server: every database of the
	// server that has skiff's provider schema is ticked, and databases created (or given the
	// schema) later are picked up at the next rescan.
	AllDatabases bool
	// Poll is how often each database's queues are offered a tick (default 100ms), measured
	// from the start of one poll to the start of the next. A queue ticks only when its
	// thresholds say so; Poll bounds the lag the ticker adds. The poll after a tick is placed
	// by the database's clock where the tick is ticker_max_lag old (pace), so that a queue
	// with events pending ticks every max_lag (100ms by default), not every max_lag plus a
	// round trip, or plus a Poll when a poll reaches the server a hair early.
	Poll time.Duration
	// Rescan is how often the list of queues (and with AllDatabases the list of databases) is
	// read again, and the pending-events gauges refreshed (default 30s).
	Rescan time.Duration
	// MaintSchedule runs event-table rotation for every queue, then VACUUM of the tables
	// skiff.maint_tables_to_vacuum() names; and, as a step of its own, gives new partitions
	// and inheritance children of tables captured with their children their capture triggers
	// (queue.AdoptChildren). Nil disables both.
	MaintSchedule Schedule
	// RetrySchedule moves due retry events back into their queues. Nil disables it.
	RetrySchedule Schedule
	// CleanupSchedule deletes ticks no consumer needs any more. Nil disables it.
	CleanupSchedule Schedule
	// QueryTimeout bounds every statement but VACUUM (default 10s); a statement that runs
	// longer closes the connection, which is then reopened with backoff.
	QueryTimeout time.Duration
	// VacuumTimeout bounds one VACUUM (default 5m).
	VacuumTimeout time.Duration
	// LockRetry is how often a standby ticker tries to take a database's ticker lock
	// (default 5s): the longest a database goes without ticks after its ticker dies.
	LockRetry time.Duration
	// BackoffMin and BackoffMax bound the delay between reconnection attempts to a database
	// that is down (defaults 250ms and 30s); the delay doubles per failed attempt, with jitter.
	BackoffMin, BackoffMax time.Duration
	// AppName is the application_name of the ticker's connections (default "skiff ticker").
	AppName string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Poll, 100*time.Millisecond)
	def(&c.Rescan, 30*time.Second)
	def(&c.QueryTimeout, 10*time.Second)
	def(&c.VacuumTimeout, 5*time.Minute)
	def(&c.LockRetry, 5*time.Second)
	def(&c.BackoffMin, 250*time.Millisecond)
	def(&c.BackoffMax, 30*time.Second)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.AppName == "" {
		c.AppName = "skiff ticker"
	}
}

// Ticker is the ticker daemon over a set of provider databases. Start it with Start, stop it
// with Stop (finish the step in hand) or StopAndCancel (abandon it): internal/startstop.
type Ticker struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics
	dbs  []*pgx.ConnConfig
	open func(*pgx.Conn) provider
	now  func() time.Time

	life startstop.Base
	hard context.Context // cancelled by StopAndCancel: statements in flight are abandoned

	mu     sync.Mutex
	active map[string]bool // databases with a loop running, by pg.Describe name
}

// New checks cfg, fills in its defaults and returns a Ticker that registers its metrics with
// reg (nil: no metrics).
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Ticker, error) {
	if len(cfg.DBs) == 0 {
		return nil, errors.New("ticker: no database given")
	}
	cfg.setDefaults()
	t := &Ticker{
		cfg:    cfg,
		log:    log,
		m:      newMetrics(reg),
		open:   openQueue,
		now:    time.Now,
		active: map[string]bool{},
	}
	seen := map[string]bool{}
	for _, s := range cfg.DBs {
		pc, err := pg.ParseConfig(s, cfg.AppName)
		if err != nil {
			return nil, fmt.Errorf("ticker: %w", err)
		}
		name := pg.Describe(pc)
		if seen[name] {
			return nil, fmt.Errorf("ticker: database %s given twice", name)
		}
		seen[name] = true
		t.dbs = append(t.dbs, pc)
	}
	return t, nil
}

// Start starts the ticker in the background and returns at once. Cancelling ctx stops it like
// Stop. Starting a Ticker twice is an error.
func (t *Ticker) Start(ctx context.Context) error {
	err := t.life.Start(ctx, nil, func(soft, hard context.Context) error {
		t.hard = hard
		return t.run(soft)
	})
	if err != nil {
		return fmt.Errorf("ticker: %w", err)
	}
	return nil
}

// Stop asks every database loop to finish its step in hand (a tick, a maintenance statement)
// and waits until all have. It is idempotent and safe to call on a ticker never started.
func (t *Ticker) Stop() { t.life.Stop() }

// StopAndCancel stops like Stop but also cancels the statements in flight (the server rolls
// them back). It is idempotent.
func (t *Ticker) StopAndCancel() { t.life.StopAndCancel() }

// Stopped is closed once a started ticker has stopped.
func (t *Ticker) Stopped() <-chan struct{} { return t.life.Stopped() }

// Err is why the ticker stopped: nil after a requested stop.
func (t *Ticker) Err() error { return t.life.Err() }

// run runs one loop per database (or one discovery loop per server) until ctx ends.
func (t *Ticker) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, pc := range t.dbs {
		if t.cfg.AllDatabases {
			g.Go(func() error { return t.discover(gctx, pc) })
			continue
		}
		d := t.newDatabase(pc, false)
		if !t.claim(d.name) {
			continue
		}
		g.Go(func() error {
			defer t.release(d.name)
			return d.run(gctx)
		})
	}
	return g.Wait()
}

// claim marks a database as served; false when a loop already serves it.
func (t *Ticker) claim(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active[name] {
		return false
	}
	t.active[name] = true
	return true
}

func (t *Ticker) release(name string) {
	t.mu.Lock()
	delete(t.active, name)
	t.mu.Unlock()
	t.m.forgetDB(name)
}

// stepCtx bounds one step: it survives the soft stop (the step in hand finishes) but not
// StopAndCancel.
func (t *Ticker) stepCtx(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.hard, timeout)
}

// backoff returns the delay before reconnection attempt n (0-based): BackoffMin doubled n
// times, capped at BackoffMax, with "equal jitter" (uniform in [d/2, d]) so that tickers
// restarted together do not reconnect in lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}
