// Package status gathers what `skiff status` shows: per queue and consumer the lag in seconds
// and in events, the last tick, the batch in progress; from the target, per subscription the
// position, counters, last error and per-table state and copy progress; and, for a stalled
// component, what it is waiting for: a ticker that does not tick, a long provider transaction
// that holds back rotation, a worker not seen for a while.
//
// The report is a plain struct with stable JSON field names (see Report); Text renders it
// for humans.
package status

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// Config says where to look and when to call something stalled.
type Config struct {
	// Provider is required; Target is optional (without it no subscription or table state).
	Provider, Target *pgx.ConnConfig
	// StallAfter is how long a component may stay silent before it is reported: no tick for
	// the queue's idle period plus StallAfter, a consumer not seen for StallAfter; 0 means 30 s.
	StallAfter time.Duration
	// LongTransaction is the age from which a provider transaction is reported as holding
	// back the queue's rotation; 0 means 5 minutes.
	LongTransaction time.Duration
	// AbandonedAfter is how long a consumer may go unseen on the provider before it is
	// reported as abandoned, holding back the queue's event table rotation, with the command
	// that unregisters it; 0 means 1 hour.
	AbandonedAfter time.Duration
	// MaxRetainedWAL is how much WAL a logical subscription's replication slot may keep on
	// the provider's disk before it is reported; 0 means 1 GiB.
	MaxRetainedWAL int64
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Report is the whole status. Its JSON form is stable: fields are only ever added.
type Report struct {
	// GeneratedAt is when the report was taken (RFC 3339).
	GeneratedAt time.Time `json:"generated_at"`
	// Provider and Target name the servers (user@host:port/db, never a password); Target is
	// "" when no target was given.
	Provider string `json:"provider"`
	Target   string `json:"target,omitempty"`
	// Queues lists every queue of the provider, by name.
	Queues []Queue `json:"queues"`
	// LongTransactions lists provider transactions older than Config.LongTransaction.
	LongTransactions []Transaction `json:"long_transactions"`
	// Problems repeats every stall found below, and every table whose copy fails, one
	// sentence each; empty when all is well (skiff status exits 1 when it is not).
	Problems []string `json:"problems"`
}

// Queue is one queue of the provider.
type Queue struct {
	Name string `json:"name"`
	// Source is how the queue captures its tables: trigger or logical. A logical queue has
	// no ticks (its last tick fields stay those of its creation): each consumer streams
	// from its replication slot (Consumer.Slot).
	Source string `json:"source"`
	// Plugin is a logical queue's output plugin (pgoutput or test_decoding).
	Plugin string `json:"plugin,omitempty"`
	// LastTick is the id of the queue's newest tick, LastTickTime its time and TickAgeSeconds
	// its age.
	LastTick       int64     `json:"last_tick"`
	LastTickTime   time.Time `json:"last_tick_time"`
	TickAgeSeconds float64   `json:"tick_age_seconds"`
	// PendingEvents estimates the events written since the last tick.
	PendingEvents int64 `json:"pending_events"`
	// TickerPaused is set when the queue's ticker is paused by configuration.
	TickerPaused bool `json:"ticker_paused"`
	// Stall says what the queue waits for ("ticker not running?"), "" when it ticks.
	Stall string `json:"stall,omitempty"`
	// Consumers lists the queue's consumers, by name.
	Consumers []Consumer `json:"consumers"`
}

// Consumer is one consumer (subscription) of a queue.
type Consumer struct {
	Name string `json:"name"`
	// LagSeconds is the age of the consumer's last finished tick; LagEvents estimates the
	// events written since it.
	LagSeconds float64 `json:"lag_seconds"`
	LagEvents  int64   `json:"lag_events"`
	// LastTick is the tick the consumer has finished; LastSeenSeconds the time since it last
	// asked for or finished a batch.
	LastTick        int64   `json:"last_tick"`
	LastSeenSeconds float64 `json:"last_seen_seconds"`
	// CurrentBatch is the open batch (0 when none) and BatchEndTick the tick it ends at.
	CurrentBatch int64 `json:"current_batch"`
	BatchEndTick int64 `json:"batch_end_tick"`
	// Subscription is what the target records of this consumer; absent without --target or
	// when the target does not know the consumer.
	Subscription *Subscription `json:"subscription,omitempty"`
	// HoldsRotation is set when the queue's event tables are due to rotate and this consumer
	// keeps them from it: it has not finished a tick past the writers of the table to reuse.
	HoldsRotation bool `json:"holds_rotation"`
	// Slot is the replication slot of a consumer of a logical queue (nil for a trigger
	// queue's).
	Slot *Slot `json:"slot,omitempty"`
	// Stall says what the consumer waits for, "" when it moves.
	Stall string `json:"stall,omitempty"`
}

// Slot is a logical replication slot on the provider.
type Slot struct {
	Name string `json:"name"`
	// Missing: recorded for the consumer but gone from the provider (changes lost).
	Missing bool `json:"missing,omitempty"`
	// Active: a worker streams from it now.
	Active bool `json:"active"`
	// ConfirmedLSN is the position the consumer confirmed (after the target committed it).
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	// RetainedWALBytes is the WAL the slot keeps on the provider's disk; LagBytes the WAL
	// written since its confirmed position.
	RetainedWALBytes int64 `json:"retained_wal_bytes"`
	LagBytes         int64 `json:"lag_bytes"`
	// LagSeconds is the walsender's replay lag (PostgreSQL 10+, while streaming), absent
	// when unknown.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
}

// Subscription is a consumer as the target records it.
type Subscription struct {
	// Tick is the last tick applied on the target (trigger queue).
	Tick int64 `json:"tick"`
	// LSN is the end of the last transaction applied on the target (logical queue), "" when
	// none.
	LSN            string     `json:"lsn,omitempty"`
	LastBatch      int64      `json:"last_batch"`
	BatchesApplied int64      `json:"batches_applied"`
	EventsApplied  int64      `json:"events_applied"`
	AppliedAt      *time.Time `json:"applied_at,omitempty"`
	// LastError is the error of the last failed attempt, "" once a batch applied since.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// LastErrorEvent is the provider event the last error names (skiff event show), 0 when none.
	LastErrorEvent int64 `json:"last_error_event,omitempty"`
	// Heartbeat is when a worker last showed it was alive; Worker names it (host and pid).
	Heartbeat *time.Time `json:"heartbeat,omitempty"`
	Worker    string     `json:"worker,omitempty"`
	// DeadLetters counts the events an operator set aside (skiff event skip) that the worker
	// left out of their batch; DeadLettersPending those set aside whose batch it has not
	// applied yet.
	DeadLetters        int64 `json:"dead_letters"`
	DeadLettersPending int64 `json:"dead_letters_pending,omitempty"`
	// Merge is the --on-conflict mode of a merged subscription (subscribe --merge: its
	// tables are shared with other providers'), "" when it is not merged; Conflicts counts the
	// merge conflicts met (settled, unless Merge is error), LastConflict describes the last.
	Merge          string     `json:"merge,omitempty"`
	Conflicts      int64      `json:"conflicts,omitempty"`
	LastConflict   string     `json:"last_conflict,omitempty"`
	LastConflictAt *time.Time `json:"last_conflict_at,omitempty"`
	// Tables lists the subscribed tables, by source name.
	Tables []Table `json:"tables"`
}

// Table is one subscribed table on the target.
type Table struct {
	Source string `json:"source"` // quoted schema.name on the provider
	Dest   string `json:"dest"`   // quoted schema.name on the target
	// State is copying, catching-up or in-sync; Since is when it entered it.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// CopySnapshot is the copy point of the initial copy, as its source wrote it (the trigger
	// queue: a txid snapshot; logical decoding: "LSN snapshot"), "" before it is taken.
	CopySnapshot string `json:"copy_snapshot,omitempty"`
	// CopyRows and CopyBytes are the rows and bytes copied so far (state copying) or in all
	// (after), when the copier records them.
	CopyRows  int64 `json:"copy_rows,omitempty"`
	CopyBytes int64 `json:"copy_bytes,omitempty"`
	// CopyBacklog counts the table's events the worker set aside while its copy runs (they
	// are applied, in order, once the copy has committed).
	CopyBacklog int64 `json:"copy_backlog,omitempty"`
	// CopyError is the error of the table's last failed copy (state copying: the worker's
	// table manager copies it again later), "" when none; CopyErrorAt is when it failed.
	CopyError   string     `json:"copy_error,omitempty"`
	CopyErrorAt *time.Time `json:"copy_error_at,omitempty"`
	// Handler names the table's handler ("" for none); Skipped is set when it is "skip": the
	// target takes none of the table's events.
	Handler string `json:"handler,omitempty"`
	Skipped bool   `json:"skipped,omitempty"`
}

// Transaction is a long-running provider transaction.
type Transaction struct {
	PID        int     `json:"pid"`
	User       string  `json:"user"`
	Database   string  `json:"database"`
	AgeSeconds float64 `json:"age_seconds"`
	// State is pg_stat_activity.state (9.2+), "" before.
	State string `json:"state,omitempty"`
	// XID and XMin are backend_xid and backend_xmin (9.4+), "" before or when unset.
	XID   string `json:"xid,omitempty"`
	XMin  string `json:"xmin,omitempty"`
	Query string `json:"query"`
}

// Collect connects to the provider (and the target) and builds the report.
func Collect(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = 30 * time.Second
	}
	if cfg.LongTransaction <= 0 {
		cfg.LongTransaction = 5 * time.Minute
	}
	if cfg.AbandonedAfter <= 0 {
		cfg.AbandonedAfter = time.Hour
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	r := &Report{GeneratedAt: now().UTC(), Provider: pg.Describe(cfg.Provider), Queues: []Queue{},
		LongTransactions: []Transaction{}, Problems: []string{}}
	prov, err := pg.ConnectConfig(ctx, cfg.Provider.Copy())
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))

	if err := migrate.Require(ctx, prov, migrate.Provider, r.Provider, 1); err != nil {
		return nil, err
	}
	qs, err := queue.GetQueueInfo(ctx, prov)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	cs, err := queue.GetConsumerInfo(ctx, prov)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	holding, err := queue.HoldingRotation(ctx, prov)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	lg, err := readLogical(ctx, prov)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	gaps, err := queue.CaptureGaps(ctx, prov)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	for _, q := range qs {
		out := Queue{Name: q.Name, Source: queue.SourceTrigger, LastTick: q.LastTick, LastTickTime: q.LastTickTime, TickAgeSeconds: q.TickerLag.Seconds(),
			PendingEvents: q.PendingEvents, TickerPaused: q.TickerPaused, Consumers: []Consumer{}}
		if k, ok := lg.queues[q.Name]; ok {
			out.Source, out.Plugin = k.Source, k.Plugin
		} else {
			out.Stall = tickerStall(q, cfg.StallAfter)
		}
		if out.Stall != "" {
			r.Problems = append(r.Problems, fmt.Sprintf("queue %s: %s", q.Name, out.Stall))
		}
		for _, g := range gaps {
			if g.Queue == q.Name {
				r.Problems = append(r.Problems, fmt.Sprintf("queue %s: %s", q.Name, g.Problem()))
			}
		}
		for _, c := range cs {
			if c.Queue != q.Name {
				continue
			}
			if out.Source == queue.SourceLogical {
				out.Consumers = append(out.Consumers, lg.consumer(q.Name, c.Consumer))
				continue
			}
			out.Consumers = append(out.Consumers, Consumer{Name: c.Consumer, LagSeconds: c.Lag.Seconds(),
				LagEvents: c.PendingEvents, LastTick: c.LastTick, LastSeenSeconds: c.LastSeen.Seconds(),
				CurrentBatch: c.CurrentBatch, BatchEndTick: c.NextTick, HoldsRotation: slices.Contains(holding[q.Name], c.Consumer)})
		}
		r.Queues = append(r.Queues, out)
	}
	r.LongTransactions, err = longTransactions(ctx, prov, cfg.LongTransaction)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	for _, sl := range lg.orphans() {
		r.Problems = append(r.Problems, fmt.Sprintf("replication slot %s belongs to no subscription (left by a removed one?): it keeps %s of WAL on the provider; "+
			"drop it if nothing uses it: SELECT pg_drop_replication_slot('%s')", sl.Name, bytesText(sl.RetainedBytes), sl.Name))
	}
	for _, t := range r.LongTransactions {
		r.Problems = append(r.Problems, fmt.Sprintf("provider transaction pid %d (%s@%s) open for %s: holds back event table rotation",
			t.PID, t.User, t.Database, secs(t.AgeSeconds)))
	}

	if cfg.Target != nil {
		r.Target = pg.Describe(cfg.Target)
		if err := addTarget(ctx, cfg, r); err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
	}
	for qi := range r.Queues {
		q := &r.Queues[qi]
		for ci := range q.Consumers {
			c := &q.Consumers[ci]
			if c.Slot != nil || q.Source == queue.SourceLogical {
				c.Stall = slotStall(*c, q, cfg, now())
			} else {
				c.Stall = consumerStall(*c, q, r.LongTransactions, cfg, now())
			}
			if c.Stall != "" {
				r.Problems = append(r.Problems, fmt.Sprintf("queue %s, consumer %s: %s", q.Name, c.Name, c.Stall))
			}
			if c.Subscription == nil {
				continue
			}
			for _, t := range c.Subscription.Tables {
				if t.CopyError != "" {
					r.Problems = append(r.Problems, fmt.Sprintf("queue %s, consumer %s: copy of table %s failing (the worker copies it again): %s",
						q.Name, c.Name, t.Source, t.CopyError))
				}
			}
		}
	}
	return r, nil
}

// tickerStall says why a queue does not tick, "" when it does. A ticker ticks at least every
// idle period, and within max lag once events are pending.
func tickerStall(q queue.QueueInfo, after time.Duration) string {
	if q.TickerPaused {
		return "ticker paused by configuration"
	}
	age := q.TickerLag.Round(time.Second)
	switch {
	case q.LastTick == 0:
		return "no tick yet: ticker not running?"
	case q.PendingEvents > 0 && q.TickerLag > q.TickerMaxLag+after:
		return fmt.Sprintf("no tick for %s with %d events pending: ticker not running?", age, q.PendingEvents)
	case q.TickerLag > q.TickerIdlePeriod+after:
		return fmt.Sprintf("no tick for %s: ticker not running?", age)
	}
	return ""
}

// consumerStall says what a consumer waits for, "" when it keeps up. Reasons are joined
// with "; ".
func consumerStall(c Consumer, q *Queue, long []Transaction, cfg Config, now time.Time) string {
	behind := c.LastTick < q.LastTick
	var why []string
	sub := c.Subscription
	switch {
	case c.LastSeenSeconds > cfg.AbandonedAfter.Seconds():
		holds := "will hold back event table rotation"
		if c.HoldsRotation {
			holds = "holds back event table rotation (events pile up on the provider)"
		}
		target := ""
		if sub != nil {
			target = " --target URL"
		}
		why = append(why, fmt.Sprintf("not seen for %s: it %s; if its target is gone or no longer wanted, remove it: "+
			"skiff unsubscribe --provider URL%s --queue %s --consumer %s", secs(c.LastSeenSeconds), holds, target,
			shellWord(q.Name), shellWord(c.Name)))
	case sub != nil && sub.Heartbeat != nil:
		// The worker's heartbeat on the target is the better sign of life: a worker waiting to
		// retry a failed batch keeps it while it asks the provider for nothing.
		if behind && now.Sub(*sub.Heartbeat) > cfg.StallAfter {
			why = append(why, fmt.Sprintf("worker not seen for %s (last heartbeat from %s): worker not running?",
				now.Sub(*sub.Heartbeat).Round(time.Second), orUnknown(sub.Worker)))
		}
	case behind && c.LastSeenSeconds > cfg.StallAfter.Seconds():
		why = append(why, fmt.Sprintf("consumer not seen on the provider for %s: worker not running?", secs(c.LastSeenSeconds)))
	}
	if sub != nil && sub.LastError != "" {
		why = append(why, "failing: "+sub.LastError)
	}
	if behind && len(long) > 0 {
		why = append(why, fmt.Sprintf("long provider transaction pid %d (%s old) holds back rotation", long[0].PID, secs(long[0].AgeSeconds)))
	}
	return strings.Join(why, "; ")
}

// shellWord quotes s for a POSIX shell when it holds anything but letters, digits and
// ._-@:/,=, so that a command in a message can be pasted as it is.
func shellWord(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@:/,=", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown worker"
	}
	return s
}

// longTransactions lists provider transactions older than min, oldest first. The columns of
// pg_stat_activity changed over the versions: procpid/current_query before 9.2, pid/state/
// query from 9.2, backend_xid/backend_xmin from 9.4.
func longTransactions(ctx context.Context, conn *pgx.Conn, min time.Duration) ([]Transaction, error) {
	v := pg.ServerVersion(conn)
	var q string
	switch {
	case v >= 90400:
		q = `SELECT pid, usename::text, datname::text, extract(epoch FROM now() - xact_start)::float8, coalesce(state, ''),
			coalesce(backend_xid::text, ''), coalesce(backend_xmin::text, ''), coalesce(query, '')
			FROM pg_catalog.pg_stat_activity
			WHERE xact_start < now() - $1::float8 * interval '1 second' AND pid <> pg_backend_pid()
			ORDER BY xact_start`
	case v >= 90200:
		q = `SELECT pid, usename::text, datname::text, extract(epoch FROM now() - xact_start)::float8, coalesce(state, ''),
			'', '', coalesce(query, '')
			FROM pg_catalog.pg_stat_activity
			WHERE xact_start < now() - $1::float8 * interval '1 second' AND pid <> pg_backend_pid()
			ORDER BY xact_start`
	default:
		q = `SELECT procpid, usename::text, datname::text, extract(epoch FROM now() - xact_start)::float8, '',
			'', '', coalesce(current_query, '')
			FROM pg_catalog.pg_stat_activity
			WHERE xact_start < now() - $1::float8 * interval '1 second' AND procpid <> pg_backend_pid()
			ORDER BY xact_start`
	}
	rows, err := conn.Query(ctx, q, min.Seconds())
	if err != nil {
		return nil, fmt.Errorf("long transactions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Transaction, error) {
		var t Transaction
		var user, db *string
		err := r.Scan(&t.PID, &user, &db, &t.AgeSeconds, &t.State, &t.XID, &t.XMin, &t.Query)
		if user != nil {
			t.User = *user
		}
		if db != nil {
			t.Database = *db
		}
		if len(t.Query) > 200 {
			t.Query = t.Query[:200] + "…"
		}
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("long transactions: %w", err)
	}
	return out, nil
}

// addTarget reads the target's subscriptions and table states into the report's consumers.
func addTarget(ctx context.Context, cfg Config, r *Report) error {
	conn, err := pg.ConnectConfig(ctx, cfg.Target.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	v, err := target.ReadVersion(ctx, conn)
	if err != nil {
		return err
	}
	if !v.Installed() {
		r.Problems = append(r.Problems, (&migrate.NotInstalledError{Role: migrate.Target, DB: r.Target}).Error())
		return nil
	}
	subs, err := readSubscriptions(ctx, conn, v)
	if err != nil {
		return err
	}
	for key, s := range subs {
		found := false
		for qi := range r.Queues {
			for ci := range r.Queues[qi].Consumers {
				c := &r.Queues[qi].Consumers[ci]
				if r.Queues[qi].Name == key.queue && c.Name == key.consumer {
					c.Subscription = s
					found = true
				}
			}
		}
		if !found {
			r.Problems = append(r.Problems, fmt.Sprintf("target subscribes to queue %s as consumer %s, which the provider does not know", key.queue, key.consumer))
		}
	}
	return nil
}

type subKey struct{ queue, consumer string }

// readSubscriptions reads the target's subscriptions and their table states (those columns
// that target schema version v has).
func readSubscriptions(ctx context.Context, conn *pgx.Conn, v target.Version) (map[subKey]*Subscription, error) {
	subs, err := target.SubscriptionStates(ctx, conn, v)
	if err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	out := map[subKey]*Subscription{}
	byID := map[int32]*Subscription{}
	for _, ts := range subs {
		s := &Subscription{Tick: ts.Tick, LSN: lsnText(ts.LSN), LastBatch: ts.LastBatch, BatchesApplied: ts.BatchesApplied, EventsApplied: ts.EventsApplied,
			AppliedAt: ts.AppliedAt, LastError: ts.LastError, LastErrorAt: ts.LastErrorAt, Heartbeat: ts.Heartbeat, Worker: ts.Worker,
			LastErrorEvent: ts.LastErrorEvent, DeadLetters: ts.DeadLetters, DeadLettersPending: ts.DeadLettersPending, Tables: []Table{}}
		out[subKey{ts.Queue, ts.Consumer}], byID[ts.ID] = s, s
	}
	merges, err := target.Merges(ctx, conn, v)
	if err != nil {
		return nil, fmt.Errorf("read merge settings: %w", err)
	}
	for id, m := range merges {
		if s := byID[id]; s != nil {
			s.Merge, s.Conflicts, s.LastConflict, s.LastConflictAt = m.Mode, m.Conflicts, m.LastConflict, m.LastConflictAt
		}
	}
	tables, err := target.TableStates(ctx, conn, v)
	if err != nil {
		return nil, fmt.Errorf("read table states: %w", err)
	}
	for _, ts := range tables {
		if s := byID[ts.SubID]; s != nil {
			s.Tables = append(s.Tables, Table{Source: ts.Source, Dest: ts.Dest, State: ts.State, Since: ts.Since, CopySnapshot: ts.CopySnapshot,
				CopyRows: ts.CopyRows, CopyBytes: ts.CopyBytes, CopyBacklog: ts.CopyBacklog, CopyError: ts.CopyError, CopyErrorAt: ts.CopyErrorAt,
				Handler: ts.Handler, Skipped: ts.Handler == handlers.SkipName})
		}
	}
	return out, nil
}
