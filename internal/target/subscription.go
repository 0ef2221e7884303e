package target

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Subscription is a row of skiff.subscription: one consumer of a provider queue replayed on
// this target. Which fields a function fills is said in its doc.
type Subscription struct {
	ID int32 // sub_id, the second key of the worker's advisory lock
	Key
	Provider string // user@host:port/db of the provider, never a password
	// Tick is the tick of the last applied batch (trigger queue), 0 when none.
	Tick int64
	// LSN is the end of the last applied transaction (logical queue), 0 when none.
	LSN uint64
	// LastBatch is the provider's id of the last applied batch, 0 when none.
	LastBatch                     int64
	BatchesApplied, EventsApplied int64
	AppliedAt                     *time.Time // commit time of the last applied batch
	LastError                     string     // the error of the last failed attempt, "" once applied
	LastErrorAt                   *time.Time
	// LastErrorEvent is the provider event the last error names, 0 when none (version 6).
	LastErrorEvent int64
	Heartbeat      *time.Time // a live worker refreshes it at least every batch
	Worker         string     // host:pid of the worker holding the lock
	// DeadLetters counts the events set aside and left out of applied batches;
	// DeadLettersPending those set aside whose batch is not applied yet (version 6).
	DeadLetters, DeadLettersPending int64
}

// Subscriptions lists the target's subscriptions (Key and Provider), by queue and consumer.
func Subscriptions(ctx context.Context, db pg.DB) ([]Subscription, error) {
	rows, err := db.Query(ctx, `SELECT queue, consumer, provider FROM skiff.subscription ORDER BY 1, 2`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Subscription, error) {
		var s Subscription
		err := r.Scan(&s.Queue, &s.Consumer, &s.Provider)
		return s, err
	})
}

// SubscriptionStates lists the target's subscriptions with every field but Provider (what
// skiff status shows), by queue and consumer. v says which columns the schema has.
func SubscriptionStates(ctx context.Context, db pg.DB, v Version) ([]Subscription, error) {
	deadLetter := "0::bigint, 0::bigint, 0::bigint" // target schema before version 6
	if v.HasDeadLetter() {
		deadLetter = `coalesce(s.last_error_event, 0),
			(SELECT count(*) FROM skiff.dead_letter d WHERE d.sub_id = s.sub_id AND d.set_aside_at IS NOT NULL),
			(SELECT count(*) FROM skiff.dead_letter d WHERE d.sub_id = s.sub_id AND d.set_aside_at IS NULL)`
	}
	rows, err := db.Query(ctx, `SELECT sub_id, queue, consumer, coalesce(tick, 0), coalesce(lsn, 0), coalesce(last_batch_id, 0),
		batches_applied, events_applied, applied_at, coalesce(last_error, ''), last_error_at, heartbeat, coalesce(worker, ''),
		`+deadLetter+`
		FROM skiff.subscription s ORDER BY queue, consumer`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Subscription, error) {
		var s Subscription
		var lsn int64
		err := r.Scan(&s.ID, &s.Queue, &s.Consumer, &s.Tick, &lsn, &s.LastBatch, &s.BatchesApplied, &s.EventsApplied,
			&s.AppliedAt, &s.LastError, &s.LastErrorAt, &s.Heartbeat, &s.Worker,
			&s.LastErrorEvent, &s.DeadLetters, &s.DeadLettersPending)
		s.LSN = uint64(lsn)
		return s, err
	})
}

// SubscriptionID returns the id of the subscription k; pgx.ErrNoRows when there is none.
func SubscriptionID(ctx context.Context, db pg.DB, k Key) (int32, error) {
	var id int32
	err := db.QueryRow(ctx, `SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2`,
		k.Queue, k.Consumer).Scan(&id)
	return id, err
}

// SubscriptionExists reports whether the target records the subscription k.
func SubscriptionExists(ctx context.Context, db pg.DB, k Key) (bool, error) {
	var found bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM skiff.subscription WHERE queue = $1 AND consumer = $2)`,
		k.Queue, k.Consumer).Scan(&found)
	return found, err
}

// Consumers lists the consumers of the target's subscriptions to queue, by name.
func Consumers(ctx context.Context, db pg.DB, queue string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT consumer FROM skiff.subscription WHERE queue = $1 ORDER BY consumer`, queue)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// LockSubscription locks the row of subscription k (FOR UPDATE: until the caller's
// transaction ends) and returns its id; pgx.ErrNoRows when there is none.
func LockSubscription(ctx context.Context, db pg.DB, k Key) (int32, error) {
	var id int32
	err := db.QueryRow(ctx, `SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`,
		k.Queue, k.Consumer).Scan(&id)
	return id, err
}

// CreateSubscription records a new subscription and returns its id. tick is the consumer's
// registration tick on the provider (the Prev of its first batch), 0 when unknown.
func CreateSubscription(ctx context.Context, db pg.DB, k Key, provider string, tick int64) (int32, error) {
	var id int32
	err := db.QueryRow(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider, tick) VALUES ($1, $2, $3, $4) RETURNING sub_id`,
		k.Queue, k.Consumer, provider, nullable(tick)).Scan(&id)
	return id, err
}

// DeleteSubscription deletes a subscription; its table states, copy backlog, batch log and
// dead letters go with it (ON DELETE CASCADE).
func DeleteSubscription(ctx context.Context, db pg.DB, id int32) error {
	_, err := db.Exec(ctx, `DELETE FROM skiff.subscription WHERE sub_id = $1`, id)
	return err
}

// SetWorker records the worker that took the subscription (host:pid) and its first heartbeat.
func SetWorker(ctx context.Context, db pg.DB, id int32, worker string) error {
	_, err := db.Exec(ctx, `UPDATE skiff.subscription SET worker = $2, heartbeat = now() WHERE sub_id = $1`, id, worker)
	return err
}

// Heartbeat records that the subscription's worker is alive (skiff.subscription.heartbeat).
func Heartbeat(ctx context.Context, db pg.DB, id int32) error {
	_, err := db.Exec(ctx, `UPDATE skiff.subscription SET heartbeat = now() WHERE sub_id = $1`, id)
	return err
}

// RecordError keeps msg as the subscription's last error, with the provider event it names
// (nil for none; not kept before version 6), and counts as a heartbeat.
func RecordError(ctx context.Context, db pg.DB, v Version, id int32, msg string, event *int64) error {
	if !v.HasDeadLetter() {
		_, err := db.Exec(ctx, `UPDATE skiff.subscription SET last_error = $2, last_error_at = now(), heartbeat = now() WHERE sub_id = $1`,
			id, msg)
		return err
	}
	_, err := db.Exec(ctx, `UPDATE skiff.subscription SET last_error = $2, last_error_at = now(), heartbeat = now(), last_error_event = $3
		WHERE sub_id = $1`, id, msg, event)
	return err
}

// LastError returns the last error of subscription k (nil when none) and the event it names
// (nil when none, or before version 6); pgx.ErrNoRows when there is no such subscription.
func LastError(ctx context.Context, db pg.DB, v Version, k Key) (event *int64, msg *string, err error) {
	col := "NULL::bigint"
	if v.HasDeadLetter() {
		col = "last_error_event"
	}
	err = db.QueryRow(ctx, `SELECT `+col+`, last_error FROM skiff.subscription WHERE queue = $1 AND consumer = $2`,
		k.Queue, k.Consumer).Scan(&event, &msg)
	return event, msg, err
}

// Position returns the position the subscription has applied up to (zero when nothing was
// applied); pgx.ErrNoRows when it is gone.
func Position(ctx context.Context, db pg.DB, id int32) (change.Position, error) {
	var tick, lsn *int64
	if err := db.QueryRow(ctx, `SELECT tick, lsn FROM skiff.subscription WHERE sub_id = $1`, id).Scan(&tick, &lsn); err != nil {
		return change.Position{}, err
	}
	return toPos(tick, lsn), nil
}

// PositionOf returns the position subscription k has applied up to (zero when none);
// pgx.ErrNoRows when there is no such subscription.
func PositionOf(ctx context.Context, db pg.DB, k Key) (change.Position, error) {
	var tick, lsn *int64
	err := db.QueryRow(ctx, `SELECT tick, lsn FROM skiff.subscription WHERE queue = $1 AND consumer = $2`, k.Queue, k.Consumer).Scan(&tick, &lsn)
	if err != nil {
		return change.Position{}, err
	}
	return toPos(tick, lsn), nil
}

// LockPosition locks the subscription's row (FOR UPDATE: the first statement of a batch's
// transaction, which waits for any other writer of the subscription) and returns its
// position; pgx.ErrNoRows when the subscription is gone.
func LockPosition(ctx context.Context, tx pg.DB, id int32) (change.Position, error) {
	var tick, lsn *int64
	if err := tx.QueryRow(ctx, lockPositionSQL, id).Scan(&tick, &lsn); err != nil {
		return change.Position{}, err
	}
	return toPos(tick, lsn), nil
}

const lockPositionSQL = `SELECT tick, lsn FROM skiff.subscription WHERE sub_id = $1 FOR UPDATE`

// LockLastBatch locks the row of subscription k (FOR UPDATE, as a batch's transaction does)
// and returns its id and the provider's id of its last applied batch (nil when none);
// pgx.ErrNoRows when there is no such subscription.
func LockLastBatch(ctx context.Context, tx pg.DB, k Key) (id int32, lastBatch *int64, err error) {
	err = tx.QueryRow(ctx, `SELECT sub_id, last_batch_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`,
		k.Queue, k.Consumer).Scan(&id, &lastBatch)
	return id, lastBatch, err
}

// LockForCopy locks the row of subscription k (FOR UPDATE, as a batch's transaction does
// first) in the caller's transaction: a copy's barrier, which waits for the batch in flight and
// holds the next ones back until it ends. No row is no error.
func LockForCopy(ctx context.Context, tx pg.DB, k Key) error {
	_, err := tx.Exec(ctx, `SELECT 1 FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`, k.Queue, k.Consumer)
	return err
}

// LockHolder describes the session holding a subscription's worker lock on the target
// (pg_try_advisory_lock(lockClass, subID)): its backend pid, application and worker, or
// "holder unknown".
func LockHolder(ctx context.Context, conn *pgx.Conn, lockClass int64, subID int32) string {
	version := pg.ServerVersion(conn)
	pidCol, appCol := "pid", "a.application_name"
	if version < 90200 {
		pidCol = "procpid"
	}
	if version < 90000 {
		appCol = "NULL::text" // application_name is 9.0+
	}
	var pid int32
	var app, worker *string
	err := conn.QueryRow(ctx, `SELECT l.pid, `+appCol+`, s.worker
		FROM pg_catalog.pg_locks l
		LEFT JOIN pg_catalog.pg_stat_activity a ON a.`+pidCol+` = l.pid
		LEFT JOIN skiff.subscription s ON s.sub_id = $2
		WHERE l.locktype = 'advisory' AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid AND l.objsubid = 2 AND l.granted
		  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
		LIMIT 1`, lockClass, int64(subID)).Scan(&pid, &app, &worker)
	if err != nil {
		return "holder unknown"
	}
	s := fmt.Sprintf("target backend pid %d", pid)
	if app != nil && *app != "" {
		s += ", application " + *app
	}
	if worker != nil && *worker != "" {
		s += ", worker " + *worker
	}
	return s
}

// Identity returns the target database's name and its target_id (skiff.target, version 4),
// made once by skiff init target.
func Identity(ctx context.Context, db pg.DB) (database, id string, err error) {
	err = db.QueryRow(ctx, `SELECT pg_catalog.current_database(), target_id FROM skiff.target`).Scan(&database, &id)
	return database, id, err
}

func toPos(tick, lsn *int64) change.Position {
	var p change.Position
	if tick != nil {
		p.Tick = *tick
	}
	if lsn != nil {
		p.LSN = uint64(*lsn)
	}
	return p
}

func nullable(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}
