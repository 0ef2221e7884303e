package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/startstop"
)

// Manager runs beside a subscription's worker: it copies the tables the target records in
// state copying (a resync, a table added to the subscription, a copy cut short by a crash),
// and moves catching-up tables to in-sync once the applied position has passed their copy.
// Set its fields, then Start it; its lifecycle is internal/startstop's.
type Manager struct {
	// Sub is the subscription on the target.
	Sub Subscription
	// Copy configures the copies (Provider, Target, Parallel, Log, Display); Hooks and
	// LockKey are set by the manager.
	Copy Config
	// Passed reports whether the source's stream, applied on the target up to applied, has
	// passed the copy taken at point: no batch after applied can hold a change the copy
	// holds, so the table's events need no filtering any more and it may go in-sync. The
	// source provides it (the trigger queue's: trigger.Passed, tick snapshots); false when it
	// cannot tell yet. applied is zero while the target has recorded no position (a logical
	// subscription before its first batch: its slot may still have passed the copy). Required.
	Passed func(ctx context.Context, point string, applied change.Position) (bool, error)
	// Sequences, when set, returns the provider's sequences the queue carries that belong on
	// this target, with their last values (queue.GetSequences): those the subscription's
	// source tables draw from, given, and those no table of the queue draws from (another
	// target's tables' sequences are not this target's). The manager moves each target
	// sequence of the same name forward to at least that value, so that after catch-up the
	// target's sequences are not behind the provider's.
	Sequences func(ctx context.Context, sources []change.Table) ([]SequenceValue, error)
	// Interval is how often the target is looked at; 0 means 2 s.
	Interval time.Duration
	// Log receives the manager's messages; nil discards them.
	Log *slog.Logger

	life startstop.Base
}

// Start starts looking after the subscription's tables in the background and returns at
// once. Errors are logged and retried at the next interval (a table whose copy failed waits
// 10 s, doubling up to 5 min, before it is copied again, unless it is set to copying anew
// meanwhile: skiff table resync copies it at once). Cancelling ctx stops it like Stop.
func (m *Manager) Start(ctx context.Context) error {
	setup := func(context.Context) error {
		if m.Passed == nil {
			return errors.New("Passed is required")
		}
		return nil
	}
	if err := m.life.Start(ctx, setup, func(soft, _ context.Context) error { return m.run(soft) }); err != nil {
		return fmt.Errorf("table manager: %w", err)
	}
	return nil
}

// Stop stops the manager and waits. The copies in hand are rolled back (a copy may take
// hours; the next start copies those tables again), as with StopAndCancel: the work in hand
// that Stop lets finish is the manager's step between two looks at the target.
func (m *Manager) Stop() { m.life.Stop() }

// StopAndCancel stops the manager like Stop and waits.
func (m *Manager) StopAndCancel() { m.life.StopAndCancel() }

// Stopped is closed once the manager has stopped.
func (m *Manager) Stopped() <-chan struct{} { return m.life.Stopped() }

// Err is nil after a requested stop (the manager never stops by itself).
func (m *Manager) Err() error { return m.life.Err() }

// run looks after the subscription's tables until ctx ends, and returns nil once the copies
// in hand were rolled back.
func (m *Manager) run(ctx context.Context) error {
	if m.Interval <= 0 {
		m.Interval = 2 * time.Second
	}
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
	parallel := m.Copy.Parallel
	if parallel <= 0 {
		parallel = 2
	}
	r := &managerRun{running: map[change.Table]bool{}, retry: map[change.Table]retryAt{}, slots: make(chan struct{}, parallel)}
	defer r.wg.Wait()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	for {
		if conn == nil || conn.IsClosed() {
			c, err := pg.ConnectConfig(ctx, m.Copy.Target.Copy())
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				m.Log.Warn("table manager: cannot connect to the target", "error", err.Error())
			} else {
				conn = c
			}
		}
		if conn != nil {
			if err := m.step(ctx, conn, r); err != nil && ctx.Err() == nil {
				m.Log.Warn("table manager", "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// managerRun is the state of one Run: the copies in hand and the failed ones' next try.
type managerRun struct {
	mu      sync.Mutex
	running map[change.Table]bool
	retry   map[change.Table]retryAt
	slots   chan struct{} // one per table copied at once
	wg      sync.WaitGroup
}

type retryAt struct {
	at    time.Time
	wait  time.Duration
	since time.Time // the table's state_changed_at when its copy failed
}

// step starts copies of the tables in state copying that no copy of ours is running, moves
// the sequences forward, and promotes caught-up tables.
func (m *Manager) step(ctx context.Context, conn *pgx.Conn, r *managerRun) error {
	tables, err := m.Sub.ToCopy(ctx, conn)
	if err != nil {
		return err
	}
	since, err := m.Sub.copyingSince(ctx, conn)
	if err != nil {
		return err
	}
	cfg := m.Copy
	if cfg.SplitJobs <= 0 {
		// A split table's ranges: as many at once as tables (Parallel), not the one table
		// each Copy call below is given.
		cfg.SplitJobs = cap(r.slots)
	}
	cfg.Parallel = 1
	cfg.LockKey = func(t Table) int32 { return m.Sub.TableLockKey(t.Source) }
	cfg.Hooks = m.Sub.Hooks()
	now := time.Now()
	r.mu.Lock()
	for _, t := range tables {
		if rt, ok := r.retry[t.Source]; ok && !rt.since.Equal(since[t.Source]) {
			// Set to copying again since it failed (skiff table resync, e.g. after the
			// target was fixed): copy it now.
			delete(r.retry, t.Source)
		}
		if r.running[t.Source] || now.Before(r.retry[t.Source].at) {
			continue
		}
		failedSince := since[t.Source]
		r.running[t.Source] = true
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			select {
			case r.slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			res, _ := Copy(ctx, cfg, []Table{t})
			<-r.slots
			r.mu.Lock()
			defer r.mu.Unlock()
			delete(r.running, t.Source)
			switch err := res[0].Err; {
			case err == nil:
				delete(r.retry, t.Source)
				m.Log.Info("table copied, catching up", "table", t.String(), "rows", res[0].Rows)
			case errors.Is(err, ErrBusy), errors.Is(err, ErrNotCopying), ctx.Err() != nil:
				m.Log.Debug("table copied by another process (or stopping)", "table", t.String())
			default:
				next := r.retry[t.Source]
				next.wait = min(max(2*next.wait, 10*time.Second), 5*time.Minute)
				next.at = time.Now().Add(next.wait)
				next.since = failedSince
				r.retry[t.Source] = next
				m.Log.Warn("table copy failed, will copy again", pg.WithHint(err, "table", t.String(), "retry_in", next.wait, "error", err.Error())...)
			}
		}()
	}
	r.mu.Unlock()

	if m.Sequences != nil {
		if err := m.syncSequences(ctx, conn); err != nil && ctx.Err() == nil {
			m.Log.Warn("table manager: sequences", "error", err.Error())
		}
	}

	// A zero applied position (nothing applied yet) is asked about too: a logical queue's
	// slot may have passed a copy while its tables were not written (Passed says; the
	// trigger queue's never passes at zero).
	applied, err := m.Sub.Position(ctx, conn)
	if err != nil {
		return err
	}
	promoted, err := m.Sub.Promote(ctx, conn, func(point string) (bool, error) {
		return m.Passed(ctx, point, applied)
	})
	for _, t := range promoted {
		m.Log.Info("table in sync", "table", t.String(), "position", applied.String())
	}
	return err
}

// SequenceValue is a provider sequence and its last value.
type SequenceValue struct {
	Sequence  change.Table
	LastValue int64
}

// syncSequences moves every target sequence forward to the provider's last value. It never
// moves one back: values the target handed out stay unique.
func (m *Manager) syncSequences(ctx context.Context, conn *pgx.Conn) error {
	sources, err := m.Sub.Sources(ctx, conn)
	if err != nil {
		return err
	}
	seqs, err := m.Sequences(ctx, sources)
	if err != nil {
		return err
	}
	schemaMap, err := m.Sub.SchemaMap(ctx, conn)
	if err != nil {
		return err
	}
	var errs []error
	for _, sq := range seqs {
		if s, ok := schemaMap[sq.Sequence.Schema]; ok {
			sq.Sequence.Schema = s // subscribe --schema-map
		}
		var last int64
		var called bool
		err := conn.QueryRow(ctx, "SELECT last_value, is_called FROM "+sq.Sequence.String()).Scan(&last, &called)
		if err != nil {
			errs = append(errs, fmt.Errorf("target sequence %s: %w", sq.Sequence, err))
			continue
		}
		if last > sq.LastValue || (last == sq.LastValue && called) {
			continue
		}
		if _, err := conn.Exec(ctx, "SELECT setval(CAST($1::text AS regclass), $2)", sq.Sequence.String(), sq.LastValue); err != nil {
			errs = append(errs, fmt.Errorf("target sequence %s: %w", sq.Sequence, err))
			continue
		}
		m.Log.Debug("sequence moved forward", "sequence", sq.Sequence.String(), "from", last, "to", sq.LastValue)
	}
	return errors.Join(errs...)
}
