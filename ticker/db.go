package ticker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/skiffdb/skiff/internal/pg"
)

// errNotInstalled ends the session of a database without skiff's provider schema.
var errNotInstalled = errors.New("skiff's provider schema is not installed")

// problemRepeat is how often a problem that persists is logged again.
const problemRepeat = time.Minute

// database is the loop of one provider database.
type database struct {
	t          *Ticker
	cfg        *pgx.ConnConfig
	name       string // pg.Describe: the db label of logs and metrics
	log        *slog.Logger
	discovered bool // found by AllDatabases: ends when the schema is missing

	// state of the current session
	conn *pgx.Conn
	p    provider
	pace *pace // places the polls

	queues   map[string]*queueState // as of the last successful rescan, kept across sessions
	names    []string               // sorted keys of queues
	problems map[string]time.Time   // step → when last logged, while it keeps failing
}

type queueState struct {
	lastTick time.Time // local clock; zero when unknown
}

func (t *Ticker) newDatabase(pc *pgx.ConnConfig, discovered bool) *database {
	name := pg.Describe(pc)
	return &database{
		t:          t,
		cfg:        pc,
		name:       name,
		log:        t.log.With("db", name),
		discovered: discovered,
		problems:   map[string]time.Time{},
	}
}

// run keeps a session open on the database until ctx ends, reconnecting with backoff.
func (d *database) run(ctx context.Context) error {
	m := d.t.m
	m.up.WithLabelValues(d.name).Set(0)
	m.leader.WithLabelValues(d.name).Set(0)
	failures := 0
	for {
		healthy, err := d.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNotInstalled) {
			if d.discovered {
				d.log.Debug("no provider schema: not ticking this database")
				return nil
			}
			d.warn("schema", err, "retry_in", d.t.cfg.Rescan)
			if !sleep(ctx, d.t.cfg.Rescan) {
				return nil
			}
			continue
		}
		if healthy {
			failures = 0
		}
		delay := backoff(failures, d.t.cfg.BackoffMin, d.t.cfg.BackoffMax)
		failures++
		d.log.Warn("database unavailable, reconnecting", "error", err, "attempt", failures, "retry_in", delay.Round(time.Millisecond))
		if !sleep(ctx, delay) {
			return nil
		}
	}
}

// session connects, takes the ticker lock and ticks until ctx ends or the connection breaks.
// healthy says the session got as far as ticking, which resets the backoff.
func (d *database) session(ctx context.Context) (healthy bool, err error) {
	m, cfg := d.t.m, d.t.cfg
	sctx, cancel := d.t.stepCtx(cfg.QueryTimeout)
	pc := d.cfg.Copy()
	// A statement that times out is cancelled on the server too (a cancel request, then the
	// socket's deadline a second later if the server does not answer): otherwise its backend
	// would go on waiting, holding the ticker lock, after the ticker has reconnected.
	pc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: time.Second}
	}
	conn, err := pg.ConnectConfig(sctx, pc)
	cancel()
	if err != nil {
		m.errors.WithLabelValues(d.name, "connect").Inc()
		return false, err
	}
	d.conn, d.p, d.pace = conn, d.t.open(conn), newPace(cfg.Poll)
	if d.queues == nil {
		// Kept across sessions: a reconnection does not announce every queue again, and the
		// seconds-since-last-tick gauges resume from what this ticker knew.
		d.queues = map[string]*queueState{}
	}
	m.up.WithLabelValues(d.name).Set(1)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = conn.Close(cctx) // closing the session releases the advisory lock
		cancel()
		d.conn, d.p, d.pace = nil, nil, nil
		m.up.WithLabelValues(d.name).Set(0)
		m.leader.WithLabelValues(d.name).Set(0)
	}()
	d.log.Debug("connected", "server_version", pg.ServerVersion(conn))

	sctx, cancel = d.t.stepCtx(cfg.QueryTimeout)
	ok, err := d.p.Installed(sctx)
	cancel()
	if err != nil {
		m.errors.WithLabelValues(d.name, "schema").Inc()
		return false, fmt.Errorf("check provider schema: %w", err)
	}
	if !ok {
		return false, errNotInstalled
	}

	if err := d.lock(ctx); err != nil {
		return false, err
	}
	m.leader.WithLabelValues(d.name).Set(1)

	if err := d.refresh(); err != nil && d.broken(err) {
		return false, err
	}

	// Maintenance runs once right after the first poll of the session, then on schedule: a
	// ticker restarted more often than a schedule's period would otherwise never run it.
	js := d.jobs()
	js.plan(d.t.now())
	atStart := len(js) > 0
	// The poll's timer: reset after every poll to the start pace gives the next one.
	poll := time.NewTimer(cfg.Poll)
	defer poll.Stop()
	rescan := time.NewTicker(cfg.Rescan)
	defer rescan.Stop()
	maint := time.NewTimer(time.Hour)
	defer maint.Stop()
	resetMaint := func() {
		if next := js.nextDue(); !next.IsZero() {
			maint.Reset(max(next.Sub(d.t.now()), 0))
		} else {
			maint.Stop()
		}
	}
	resetMaint()

	for {
		// A stop request wins over any timer that is ready at the same time.
		if ctx.Err() != nil {
			return true, nil
		}
		var err error
		select {
		case <-ctx.Done():
			return true, nil
		case <-poll.C:
			start := time.Now()
			var ticks []tickResult
			ticks, err = d.poll()
			next := start.Add(cfg.Poll)
			if err == nil {
				next = d.pace.polled(start, time.Now(), ticks)
			}
			poll.Reset(max(time.Until(next), 0))
			if err == nil {
				healthy = true
				if atStart {
					atStart = false
					err = d.runJobs(ctx, js)
					js.plan(d.t.now())
					resetMaint()
				}
			}
		case <-rescan.C:
			err = d.refresh()
		case <-maint.C:
			err = d.runJobs(ctx, js.due(d.t.now()))
			resetMaint()
		}
		if err != nil && d.broken(err) {
			return healthy, err
		}
	}
}

// lock takes the database's ticker lock, waiting while another ticker holds it.
func (d *database) lock(ctx context.Context) error {
	standby := false
	for {
		sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
		var ok bool
		err := d.conn.QueryRow(sctx, "SELECT pg_try_advisory_lock($1)", LockKey).Scan(&ok)
		cancel()
		if err != nil {
			d.t.m.errors.WithLabelValues(d.name, "lock").Inc()
			return fmt.Errorf("take ticker lock: %w", err)
		}
		if ok {
			if standby {
				d.log.Info("ticker lock taken over: ticking")
			} else {
				d.log.Info("ticking")
			}
			return nil
		}
		if !standby {
			d.log.Info("another ticker holds this database's ticker lock: standing by", "retry_every", d.t.cfg.LockRetry)
			standby = true
		}
		if !sleep(ctx, d.t.cfg.LockRetry) {
			return ctx.Err()
		}
	}
}

// refresh reads the queue list and the pending-events gauges.
func (d *database) refresh() error {
	sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
	infos, err := d.p.Queues(sctx)
	cancel()
	if err != nil {
		d.fail("queues", err)
		return err
	}
	d.ok("queues")
	now := d.t.now()
	seen := map[string]bool{}
	for _, qi := range infos {
		seen[qi.Name] = true
		qs, known := d.queues[qi.Name]
		if !known {
			qs = &queueState{}
			d.queues[qi.Name] = qs
			d.log.Info("queue found", "queue", qi.Name)
		}
		if qi.SinceTick >= 0 {
			qs.lastTick = now.Add(-qi.SinceTick)
		}
		if d.pace != nil {
			d.pace.setMaxLag(qi.Name, qi.MaxLag)
		}
		d.t.m.pending.WithLabelValues(d.name, qi.Name).Set(float64(qi.Pending))
	}
	for q := range d.queues {
		if !seen[q] {
			delete(d.queues, q)
			if d.pace != nil {
				d.pace.forget(q)
			}
			d.t.m.forgetQueue(d.name, q)
			d.log.Info("queue gone", "queue", q)
		}
	}
	d.names = d.names[:0]
	for q := range d.queues {
		d.names = append(d.names, q)
	}
	slices.Sort(d.names)
	d.updateSinceTick(now)
	return nil
}

// poll offers every queue a tick and returns the ticks cut.
func (d *database) poll() (ticks []tickResult, err error) {
	now := d.t.now()
	if len(d.names) > 0 {
		sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
		ticks, err = d.p.Tick(sctx, d.names)
		cancel()
		d.t.m.pollSeconds.WithLabelValues(d.name).Observe(time.Since(now).Seconds())
		if err != nil {
			if !d.broken(err) {
				// Most likely a queue was dropped since the last rescan: read the list again,
				// and if one is gone that was it (the next poll ticks the others).
				before := len(d.queues)
				if d.refresh() == nil && len(d.queues) < before {
					d.log.Debug("a queue was dropped during the poll", "error", err)
					return nil, nil
				}
			}
			d.fail("tick", err)
			return nil, err
		}
		d.ok("tick")
		for _, tk := range ticks {
			if qs, ok := d.queues[tk.Queue]; ok {
				qs.lastTick = now
			}
			d.t.m.ticks.WithLabelValues(d.name, tk.Queue).Inc()
			d.log.Debug("tick", "queue", tk.Queue, "tick_id", tk.TickID)
		}
	}
	d.updateSinceTick(now)
	return ticks, nil
}

func (d *database) updateSinceTick(now time.Time) {
	for q, qs := range d.queues {
		if !qs.lastTick.IsZero() {
			d.t.m.sinceTick.WithLabelValues(d.name, q).Set(now.Sub(qs.lastTick).Seconds())
		}
	}
}

// jobs lists the maintenance steps that have a schedule.
func (d *database) jobs() jobs {
	cfg := d.t.cfg
	var js jobs
	add := func(name string, s Schedule, run func() error) {
		if s != nil {
			js = append(js, &job{name: name, sched: s, run: run})
		}
	}
	add("retry", cfg.RetrySchedule, d.retry)
	add("rotate", cfg.MaintSchedule, d.rotateAndVacuum)
	add("children", cfg.MaintSchedule, d.adoptChildren)
	add("captures", cfg.MaintSchedule, d.checkCaptures)
	add("cleanup", cfg.CleanupSchedule, d.cleanup)
	return js
}

// runJobs runs maintenance steps in order until a stop request or a broken connection; it
// returns the last step's error.
func (d *database) runJobs(ctx context.Context, list []*job) error {
	var err error
	for _, j := range list {
		if ctx.Err() != nil {
			break
		}
		if err = d.runJob(j); err != nil && d.broken(err) {
			break
		}
	}
	return err
}

func (d *database) runJob(j *job) error {
	start := time.Now()
	err := j.run()
	if err != nil {
		return err
	}
	d.log.Debug("maintenance done", "step", j.name, "duration", time.Since(start).Round(time.Microsecond))
	return nil
}

// perQueue runs fn for every queue, each under its own timeout; a queue's SQL error does not
// stop the others, a broken connection does.
func (d *database) perQueue(step string, fn func(ctx context.Context, queue string) error) error {
	var first error
	for _, q := range slices.Clone(d.names) {
		sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
		err := fn(sctx, q)
		cancel()
		if err != nil {
			err = fmt.Errorf("queue %s: %w", q, err)
			d.fail(step, err)
			if d.broken(err) {
				return err
			}
			if first == nil {
				first = err
			}
			continue
		}
	}
	if first == nil {
		d.ok(step)
		d.t.m.maintenance.WithLabelValues(d.name, step).Inc()
	}
	return first
}

func (d *database) rotateAndVacuum() error {
	err := d.perQueue("rotate", func(ctx context.Context, q string) error {
		rotated, err := d.p.RotateTables(ctx, q)
		if err != nil {
			return fmt.Errorf("rotate tables: %w", err)
		}
		if rotated {
			d.t.m.rotations.WithLabelValues(d.name, q).Inc()
			d.log.Debug("event tables rotated", "queue", q)
		}
		return nil
	})
	if err != nil && d.broken(err) {
		return err
	}
	if verr := d.vacuum(); verr != nil {
		return verr
	}
	return err
}

func (d *database) vacuum() error {
	sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
	tables, err := d.p.TablesToVacuum(sctx)
	cancel()
	if err != nil {
		err = fmt.Errorf("tables to vacuum: %w", err)
		d.fail("vacuum", err)
		return err
	}
	for _, tbl := range tables {
		sctx, cancel := d.t.stepCtx(d.t.cfg.VacuumTimeout)
		start := time.Now()
		err := d.p.Vacuum(sctx, tbl)
		cancel()
		if err != nil {
			err = fmt.Errorf("vacuum %s: %w", tbl, err)
			d.fail("vacuum", err)
			return err
		}
		d.log.Debug("vacuumed", "table", tbl, "duration", time.Since(start).Round(time.Microsecond))
	}
	d.ok("vacuum")
	d.t.m.maintenance.WithLabelValues(d.name, "vacuum").Inc()
	return nil
}

// adoptChildren gives new partitions and inheritance children of captured tables their
// capture triggers (and queues the rows they got before), and takes them back from tables
// that left; each is logged.
func (d *database) adoptChildren() error {
	// A child adopted with many rows queues them all: bounded as a VACUUM is.
	sctx, cancel := d.t.stepCtx(max(d.t.cfg.QueryTimeout, d.t.cfg.VacuumTimeout))
	done, err := d.p.AdoptChildren(sctx)
	cancel()
	var failed error
	for _, a := range done {
		attrs := []any{"queue", a.Queue, "table", a.Parent.String(), "child", a.Child.String(), "triggers", a.Triggers}
		switch {
		case a.Err != nil:
			if failed == nil {
				failed = fmt.Errorf("capture child %s of %s: %w", a.Child, a.Parent, a.Err)
			}
		case a.Released:
			d.log.Info("table no longer a child of a captured table: its capture triggers dropped", attrs...)
		case a.Uncovered:
			if failed == nil {
				failed = fmt.Errorf("queue %s captures %s without its inheritance children, and the rows of its child %s are not replicated: "+
					"run `skiff table add --refresh --key-not-unique %s` (once you know the key is unique across the children) to capture them", a.Queue, a.Parent, a.Child, a.Parent)
			}
		default:
			d.log.Info("new child of a captured table: capture triggers created", append(attrs, "rows_queued", a.Rows)...)
		}
	}
	if err == nil {
		err = failed
	}
	if err != nil {
		err = fmt.Errorf("capture new children: %w", err)
		d.fail("children", err)
		return err
	}
	d.ok("children")
	d.t.m.maintenance.WithLabelValues(d.name, "children").Inc()
	return nil
}

// checkCaptures fails, with the tables and the fix, while a captured table has a capture
// trigger disabled or dropped (queue.CaptureGaps): its writes reach no queue, and nothing else
// would say so. Logged once a minute while it lasts (fail), counted in the step's errors.
func (d *database) checkCaptures() error {
	sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
	gaps, err := d.p.CaptureGaps(sctx)
	cancel()
	if err == nil && len(gaps) > 0 {
		msgs := make([]string, len(gaps))
		for i, g := range gaps {
			msgs[i] = g.Problem()
		}
		err = fmt.Errorf("writes not captured: %s", strings.Join(msgs, " | "))
	}
	if err != nil {
		err = fmt.Errorf("check capture triggers: %w", err)
		d.fail("captures", err)
		return err
	}
	d.ok("captures")
	d.t.m.maintenance.WithLabelValues(d.name, "captures").Inc()
	return nil
}

func (d *database) retry() error {
	sctx, cancel := d.t.stepCtx(d.t.cfg.QueryTimeout)
	n, err := d.p.RetryEvents(sctx)
	cancel()
	if err != nil {
		err = fmt.Errorf("retry events: %w", err)
		d.fail("retry", err)
		return err
	}
	d.ok("retry")
	d.t.m.maintenance.WithLabelValues(d.name, "retry").Inc()
	if n > 0 {
		d.log.Debug("retry events requeued", "events", n)
	}
	return nil
}

func (d *database) cleanup() error {
	return d.perQueue("cleanup", func(ctx context.Context, q string) error {
		n, err := d.p.CleanupTicks(ctx, q)
		if err != nil {
			return fmt.Errorf("cleanup ticks: %w", err)
		}
		if n > 0 {
			d.log.Debug("old ticks deleted", "queue", q, "ticks", n)
		}
		return nil
	})
}

// broken says whether err means the session is lost: the connection closed (pgx closes it
// on a network error and when a statement times out or is cancelled) or the server is
// shutting down. Other errors are the statement's own and leave the session usable.
func (d *database) broken(err error) bool {
	if d.conn == nil || d.conn.IsClosed() {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57"))
}

// fail counts a failed step and logs it, once per problemRepeat while it keeps failing. A
// broken connection is logged by run, when it reconnects.
func (d *database) fail(step string, err error) {
	d.t.m.errors.WithLabelValues(d.name, step).Inc()
	if d.broken(err) {
		return
	}
	d.warn(step, err)
}

func (d *database) warn(step string, err error, args ...any) {
	now := d.t.now()
	if last, ok := d.problems[step]; ok && now.Sub(last) < problemRepeat {
		return
	}
	d.problems[step] = now
	d.log.Warn("step failed", append([]any{"step", step, "error", err}, args...)...)
}

// ok notes that a step succeeded, and says so when it had been failing.
func (d *database) ok(step string) {
	if _, ok := d.problems[step]; ok {
		delete(d.problems, step)
		d.log.Info("step recovered", "step", step)
	}
}
