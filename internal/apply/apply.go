// Package apply writes batches of change events on a PostgreSQL target, one target transaction
// per batch, together with the subscription's new position (exactly-once). It is set-based:
// within a run of one table's events it merges changes per key (the last write wins, an insert
// followed by a delete cancels), then deletes and updates with one statement per run (arrays
// of keys and values unnested on the server) and inserts with COPY. Per-row statements are the
// fallback that names the failing event when a set-based statement fails.
//
// It reads and writes the target schema skiff (sql/target) through package internal/target,
// which owns its SQL, and knows nothing of the source; it never imports package consumer,
// whose Applier contract it fulfils.
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
)

// LockClass is the first key of the session advisory lock a worker holds on the target while
// it replays a subscription: pg_try_advisory_lock(LockClass, sub_id). 'skif' in ASCII.
const LockClass = 0x736b6966

// Defaults of Config.
const (
	DefaultMaxPendingRows  = 50000
	DefaultMaxPendingBytes = 64 << 20
)

// Config is what an Applier needs besides its connection.
type Config struct {
	// Queue and Consumer name the subscription (skiff.subscription) to apply.
	Queue    string
	Consumer string
	// Log receives the applier's messages, which carry no queue or consumer attribute: the
	// caller scopes it (Log.With("queue", …)). Nil discards them.
	Log *slog.Logger
	// MaxPendingRows bounds the rows held in memory before they are written (default 50000).
	MaxPendingRows int
	// MaxPendingBytes bounds the value bytes held in memory before they are written (default 64 MiB).
	MaxPendingBytes int
	// Worker identifies this worker in skiff.subscription.worker (default host:pid).
	Worker string
	// MakeTable, when set, is asked about a table a batch writes that the target lacks (a
	// handler's child made on demand, handlers.TableMaker): it creates the table through db,
	// the batch's transaction, and reports whether it did. Without it, or when it does not,
	// the batch fails naming the event, its key and the table.
	MakeTable func(ctx context.Context, db pg.DB, t change.Table) (bool, error)
}

// Applier applies batches of one subscription on one target connection. It holds the
// subscription's advisory lock from Open until Close (or until the connection ends). It is not
// safe for concurrent use.
type Applier struct {
	conn    *pgx.Conn
	cfg     Config
	log     *slog.Logger
	subID   int32
	version int
	replica bool // SET LOCAL session_replication_role = replica is allowed
	// superuser: the target role is a superuser's, so each batch checks the tables it writes
	// for code another role controls (writer.guard).
	superuser bool
	// byteaEscape: the target reads bytea only in escape format (before 9.0).
	byteaEscape bool
	// schema is the target schema's version (what its tables have).
	schema target.Version

	tables  map[change.Table]*table
	runs    map[*table]*run // pending changes per table, reused from batch to batch
	tx      pgx.Tx          // the batch transaction while Apply runs
	read    readAhead       // what the batch transaction read first, for the stream's first calls
	batches int64           // batches applied by this Applier (pruning of batch_log)
	// merge is the subscription's --on-conflict mode ("" when not merged: its tables are its
	// own), read at Open; lastConflicts the conflicts the last applied batch settled.
	merge         string
	lastConflicts int64
	copyBuf       []byte
	// argBufs and args hold the parameters of the set-based statements (writer.setArgs),
	// reused flush after flush.
	argBufs [][]byte
	args    setArgs
	// sel and order are the entries a set-based statement sends, and their sort keys
	// (writer.selected), reused flush after flush.
	sel   []int32
	order []keyOrder
	// ahead: the two buffer sets of the flushes sent ahead (ahead.go), used in turn from
	// aheadNext; w the writer of the batch in hand (nil between batches).
	ahead     [2]aheadBufs
	aheadNext int
	w         *writer
}

// readAhead is what target.StartBatch read at the start of a batch's transaction: each of
// Routes, Backlogged and SetAside answers its first call in that transaction from it (the
// flag says it has not been used yet); later calls read again.
type readAhead struct {
	target.BatchStart
	batch                        int64
	routes, backlogged, setAside bool
}

// ErrLocked is returned by Open when another worker holds the subscription.
var ErrLocked = errors.New("another worker holds the subscription")

// PositionError says the target's recorded position is neither the batch's start nor its end:
// the target and the source disagree and replication must stop until someone looks.
type PositionError struct {
	Queue, Consumer string
	BatchID         int64
	Recorded        change.Position
	Prev, End       change.Position
}

func (e *PositionError) Error() string {
	return fmt.Sprintf("position lost: subscription %s/%s on the target is at %s, batch %d goes from %s to %s",
		e.Queue, e.Consumer, fmtPos(e.Recorded), e.BatchID, fmtPos(e.Prev), fmtPos(e.End))
}

// Unwrap makes the error a change.ErrPositionLost: the worker stops instead of retrying.
func (e *PositionError) Unwrap() error { return change.ErrPositionLost }

// UnsubscribedError: the subscription was removed from the target while a worker held it
// (skiff unsubscribe --force): the worker must stop, not retry.
type UnsubscribedError struct{ Queue, Consumer string }

func (e *UnsubscribedError) Error() string {
	return fmt.Sprintf("subscription %s/%s was removed from the target (skiff unsubscribe): the worker stops", e.Queue, e.Consumer)
}

// Unwrap makes the error a change.ErrPositionLost: the worker stops instead of retrying.
func (e *UnsubscribedError) Unwrap() error { return change.ErrPositionLost }

func fmtPos(p change.Position) string {
	switch {
	case p.Tick != 0:
		return fmt.Sprintf("tick %d", p.Tick)
	case p.LSN != 0:
		return fmt.Sprintf("LSN %X/%X", p.LSN>>32, uint32(p.LSN))
	}
	return "(nothing applied)"
}

// Error is a batch that could not be applied: the table, the event and the SQL that failed.
type Error struct {
	Table   change.Table
	EventID int64 // the failing event; for a set-based statement the first event of its run
	Op      change.Op
	SQL     string // "" when no statement ran (e.g. the table is missing)
	Err     error

	setBased bool // a set-based statement failed: a row-by-row replay names the event
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apply %s of event %d", e.Op, e.EventID)
	if e.Table != (change.Table{}) {
		fmt.Fprintf(&b, " on %s", e.Table)
	}
	if e.setBased {
		b.WriteString(" (set-based run)")
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	if e.SQL != "" {
		sql := e.SQL
		if len(sql) > 600 {
			sql = sql[:600] + "…"
		}
		fmt.Fprintf(&b, "; SQL: %s", sql)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// FailedEvent names the event, for skiff event show.
func (e *Error) FailedEvent() int64 { return e.EventID }

// Open finds the subscription of cfg.Queue and cfg.Consumer on the target conn points at and
// takes its advisory lock; it fails with ErrLocked when another worker holds it. The caller
// owns conn and closes it after Close.
func Open(ctx context.Context, conn *pgx.Conn, cfg Config) (*Applier, error) {
	if cfg.MaxPendingRows <= 0 {
		cfg.MaxPendingRows = DefaultMaxPendingRows
	}
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.Worker == "" {
		host, _ := os.Hostname()
		cfg.Worker = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Applier{conn: conn, cfg: cfg, log: log, version: pg.ServerVersion(conn), tables: map[change.Table]*table{}}
	a.byteaEscape = a.version < 90000
	var err error
	a.subID, err = target.SubscriptionID(ctx, conn, target.Key{Queue: cfg.Queue, Consumer: cfg.Consumer})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("no subscription of queue %q for consumer %q on the target: run skiff subscribe first", cfg.Queue, cfg.Consumer)
	}
	if err != nil {
		return nil, fmt.Errorf("read subscription %s/%s: %w", cfg.Queue, cfg.Consumer, err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, int32(LockClass), a.subID).Scan(&locked); err != nil {
		return nil, fmt.Errorf("lock subscription %s/%s: %w", cfg.Queue, cfg.Consumer, err)
	}
	if !locked {
		return nil, fmt.Errorf("subscription %s/%s: %w (%s)", cfg.Queue, cfg.Consumer, ErrLocked, a.holder(ctx))
	}
	if err := a.checkReplicaRole(ctx); err != nil {
		return nil, err
	}
	if a.schema, err = target.ReadVersion(ctx, conn); err != nil {
		return nil, err
	}
	m, err := target.MergeOf(ctx, conn, a.schema, a.subID)
	if err != nil {
		return nil, fmt.Errorf("read merge settings of %s/%s: %w", cfg.Queue, cfg.Consumer, err)
	}
	a.merge = m.Mode
	if err := target.SetWorker(ctx, conn, a.subID, cfg.Worker); err != nil {
		return nil, fmt.Errorf("register worker of %s/%s: %w", cfg.Queue, cfg.Consumer, err)
	}
	return a, nil
}

// holder describes the worker holding the subscription's lock, for the error message.
func (a *Applier) holder(ctx context.Context) string { return lockHolder(ctx, a.conn, a.subID) }

// lockHolder describes the session holding a subscription's worker lock on the target.
func lockHolder(ctx context.Context, conn *pgx.Conn, subID int32) string {
	return target.LockHolder(ctx, conn, LockClass, subID)
}

func (a *Applier) checkReplicaRole(ctx context.Context) error {
	var err error
	if a.replica, err = catalog.MayReplica(ctx, a.conn); err != nil {
		return fmt.Errorf("check privileges on the target: %w", err)
	}
	if a.superuser, err = catalog.IsSuperuser(ctx, a.conn); err != nil {
		return fmt.Errorf("check privileges on the target: %w", err)
	}
	if !a.replica {
		a.log.Warn("the target role may not SET session_replication_role: triggers and foreign keys of target tables fire during apply, and events are applied in strict order across tables (slower); connect as a superuser (or GRANT SET ON PARAMETER session_replication_role on 15+) to avoid this")
	}
	return nil
}

// SubscriptionID is the target's id of the subscription (the advisory lock's second key).
func (a *Applier) SubscriptionID() int32 { return a.subID }

// Close releases the subscription's advisory lock. The connection stays open.
func (a *Applier) Close(ctx context.Context) error {
	if a.conn.IsClosed() {
		return nil
	}
	_, err := a.conn.Exec(ctx, `SELECT pg_advisory_unlock($1::int4, $2::int4)`, int32(LockClass), a.subID)
	return err
}

// Position returns the recorded position; zero when nothing was applied yet.
func (a *Applier) Position(ctx context.Context) (change.Position, error) {
	p, err := target.Position(ctx, a.conn, a.subID)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return change.Position{}, &UnsubscribedError{Queue: a.cfg.Queue, Consumer: a.cfg.Consumer}
		}
		return change.Position{}, fmt.Errorf("read position of %s/%s: %w", a.cfg.Queue, a.cfg.Consumer, err)
	}
	return p, nil
}

// Routes returns the subscribed tables. Inside Apply's stream it reads them in the batch's
// transaction.
func (a *Applier) Routes(ctx context.Context) ([]change.Route, error) {
	var db pg.DB = a.conn
	if a.tx != nil {
		if err := a.settle(); err != nil {
			return nil, err
		}
		db = a.tx
		if a.read.routes {
			a.read.routes = false
			return a.read.Routes, nil
		}
	}
	out, err := target.Routes(ctx, db, a.subID)
	if err != nil {
		return nil, fmt.Errorf("read table states of %s/%s: %w", a.cfg.Queue, a.cfg.Consumer, err)
	}
	return out, nil
}

// Heartbeat records that the worker is alive (skiff.subscription.heartbeat), e.g. while it
// waits to retry a failed batch.
func (a *Applier) Heartbeat(ctx context.Context) error {
	if err := target.Heartbeat(ctx, a.conn, a.subID); err != nil {
		return fmt.Errorf("heartbeat of %s/%s: %w", a.cfg.Queue, a.cfg.Consumer, err)
	}
	return nil
}

// RecordError keeps err as the subscription's last error (shown by skiff status), and the
// event it names, if any (skiff event show).
func (a *Applier) RecordError(ctx context.Context, err error) error {
	var event *int64
	var fe interface{ FailedEvent() int64 }
	if errors.As(err, &fe) {
		id := fe.FailedEvent()
		event = &id
	}
	return target.RecordError(ctx, a.conn, a.schema, a.subID, err.Error(), event)
}

// Apply writes the batch and records b.End as the subscription's position in one
// transaction. When a set-based statement fails, the batch is rolled back and replayed row by
// row in strict order (stream is called again): the replay either succeeds (e.g. a unique
// constraint that only a different order of the rows violates) or names the failing event.
func (a *Applier) Apply(ctx context.Context, b change.Batch, stream func(emit func([]change.Event) error) error) error {
	err := a.applyOnce(ctx, b, stream, true, true)
	if errors.Is(err, errResync) && ctx.Err() == nil && !a.conn.IsClosed() {
		a.log.Info("rows missing on the target: applying the batch again, statement by statement", "batch_id", b.ID, "cause", err.Error())
		err = a.applyOnce(ctx, b, stream, true, false)
	}
	var ae *Error
	if err == nil || !errors.As(err, &ae) || !ae.setBased || ctx.Err() != nil || a.conn.IsClosed() {
		return err
	}
	a.log.Warn("set-based apply failed, replaying the batch row by row", "batch_id", b.ID, "error", err.Error())
	if err := a.applyOnce(ctx, b, stream, false, false); err != nil {
		return err
	}
	a.log.Info("batch applied row by row", "batch_id", b.ID)
	return nil
}

func (a *Applier) applyOnce(ctx context.Context, b change.Batch, stream func(emit func([]change.Event) error) error, setBased, ahead bool) (err error) {
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply batch %d: begin: %w", b.ID, err)
	}
	defer func() {
		if a.w != nil {
			// A flush sent ahead is the transaction's until it ends; its error, the first
			// of the attempt, is the one that tells (a set-based statement failed: replayed
			// row by row; rows missing: applied again statement by statement).
			if aerr := a.w.settle(); aerr != nil {
				err = fmt.Errorf("apply batch %d: %w", b.ID, aerr)
			}
			a.w = nil
		}
		a.tx = nil
		a.read = readAhead{}
		if err != nil {
			// The table cache may be what failed (a table or column fixed since): reload it.
			a.tables = map[change.Table]*table{}
			a.runs = nil
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = tx.Rollback(rctx)
			cancel()
		}
	}()
	// Every name the applier writes is qualified; its operators (the "=" of key matches) and
	// the type names format_type gives it (tables are loaded in this transaction) resolve as if
	// nothing but pg_catalog were on the path, so that an operator another role created in
	// public is never chosen by the worker (docs/security.md).
	//
	// The batch's COMMIT waits for its WAL to be flushed even where the target role or database
	// defaults to synchronous_commit = off: the worker finishes the batch on the provider once
	// Apply returns, and a target crash must not then lose it. local from 9.1 (a synchronous
	// standby that is down does not stop the worker), on before; any other setting is kept.
	syncCommit := "on"
	if a.version >= 90100 {
		syncCommit = "local"
	}
	pre := []string{`SET LOCAL search_path = pg_catalog, pg_temp`,
		`SELECT pg_catalog.set_config('synchronous_commit', '` + syncCommit + `', true) WHERE pg_catalog.current_setting('synchronous_commit') = 'off'`}
	if a.replica {
		pre = append([]string{`SET LOCAL session_replication_role = replica`}, pre...)
	}
	// One round trip: the settings, the subscription row locked, and what the worker reads
	// before the events (routes, copy backlogs, events set aside), kept for its first calls.
	start, err := target.StartBatch(ctx, tx, a.schema, a.subID, b.ID, pre...)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return &UnsubscribedError{Queue: a.cfg.Queue, Consumer: a.cfg.Consumer}
		}
		return fmt.Errorf("apply batch %d: lock the subscription, read its tables: %w", b.ID, err)
	}
	if rec := start.Position; rec != b.Prev && rec != (change.Position{}) {
		return &PositionError{Queue: a.cfg.Queue, Consumer: a.cfg.Consumer, BatchID: b.ID, Recorded: rec, Prev: b.Prev, End: b.End}
	}
	a.read = readAhead{routes: true, backlogged: a.schema.HasBacklog(), setAside: a.schema.HasDeadLetter(), batch: b.ID, BatchStart: start}
	a.tx = tx
	w := newWriter(a, tx, setBased, ahead)
	a.w = w
	if err := stream(func(evs []change.Event) error { return w.add(ctx, evs) }); err != nil {
		return fmt.Errorf("apply batch %d: %w", b.ID, err)
	}
	if err := w.flushAll(ctx); err != nil {
		return fmt.Errorf("apply batch %d: %w", b.ID, err)
	}
	// One round trip: the conflicts counted, the new position and the batch_log row.
	applied := target.Applied{BatchID: b.ID, Prev: b.Prev, End: b.End, Events: w.events}
	ok, err := target.EndBatch(ctx, tx, a.schema, a.subID, target.BatchEnd{Applied: applied,
		Conflicts: w.conflicts, LastConflict: w.lastConflict, Prune: a.batches%1000 == 0})
	if err != nil {
		return fmt.Errorf("apply batch %d: record position: %w", b.ID, err)
	}
	if !ok {
		return &PositionError{Queue: a.cfg.Queue, Consumer: a.cfg.Consumer, BatchID: b.ID, Prev: b.Prev, End: b.End}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply batch %d: commit: %w", b.ID, err)
	}
	a.batches++
	a.lastConflicts = w.conflicts
	return nil
}

// isSQLError says whether err came from the server executing a statement (as opposed to a
// broken connection or a cancelled context).
func isSQLError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}
