// Package queue is the Go client of skiff's in-database event queue on a provider: typed
// wrappers of the skiff.* SQL functions (queues, consumers, ticks, batches, maintenance),
// capture of tables (AddTable generates the capture triggers), and Source, which reads
// batches of change events for the worker. It is the only package that knows the queue's SQL.
//
// The functions take a pg.DB (a *pgx.Conn, a pgx.Tx or a pool) opened with internal/pg, and work
// on every server from PostgreSQL 8.4 on: plain SQL, bound parameters.
package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/skiffdb/skiff/internal/pg"
)

// ErrNoQueue is returned (wrapped) when a named queue does not exist.
var ErrNoQueue = errors.New("queue does not exist")

// ErrNotRegistered is returned (wrapped) when a consumer is not registered on the queue.
var ErrNotRegistered = errors.New("consumer is not registered")

// ErrNotInstalled is returned (wrapped) when the database lacks skiff's provider schema.
var ErrNotInstalled = errors.New("skiff's provider schema is not installed (run `skiff init provider`)")

// wrap turns the SQL functions' "not found" errors (SQLSTATE P0002) into the sentinels above,
// a missing skiff schema, table or function into ErrNotInstalled (servers report a missing
// schema as 3F000 or, for a qualified table name, as 42P01), and adds context.
func wrap(err error, what string, sentinel error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case sentinel != nil && pgErr.Code == "P0002":
			return fmt.Errorf("%s: %w: %s", what, sentinel, pgErr.Message)
		case pgErr.Code == "3F000" && strings.Contains(pgErr.Message, `"skiff"`) ||
			(pgErr.Code == "42883" || pgErr.Code == "42P01") && namesSkiffObject(pgErr.Message):
			return fmt.Errorf("%s: %w", what, ErrNotInstalled)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// namesSkiffObject reports whether an error message names an object in schema skiff
// ("skiff.x", not "myskiff.x").
func namesSkiffObject(msg string) bool {
	for i := strings.Index(msg, "skiff."); i >= 0; {
		if i == 0 || !isIdentChar(msg[i-1]) {
			return true
		}
		j := strings.Index(msg[i+1:], "skiff.")
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func intResult(ctx context.Context, db pg.DB, what string, sentinel error, sql string, args ...any) (int, error) {
	var n int
	if err := db.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, wrap(err, what, sentinel)
	}
	return n, nil
}

// CreateQueue creates a queue with its event tables; it reports whether it was created
// (false: it existed).
func CreateQueue(ctx context.Context, db pg.DB, queue string) (bool, error) {
	n, err := intResult(ctx, db, "create queue "+queue, nil, `SELECT skiff.create_queue($1)`, queue)
	return n == 1, err
}

// Queue settings for SetQueueConfig.
const (
	SettingTickerMaxEvents  = "ticker_max_events"  // integer
	SettingTickerMaxLag     = "ticker_max_lag"     // interval, e.g. "1 second"
	SettingTickerIdlePeriod = "ticker_idle_period" // interval
	SettingTickerPaused     = "ticker_paused"      // boolean
	SettingRotationPeriod   = "rotation_period"    // interval
)

// SetQueueConfig changes one setting of a queue (see the Setting* constants).
func SetQueueConfig(ctx context.Context, db pg.DB, queue, setting, value string) error {
	_, err := intResult(ctx, db, "set "+setting+" of queue "+queue, ErrNoQueue,
		`SELECT skiff.set_queue_config($1, $2, $3)`, queue, setting, value)
	return err
}

// RegisterConsumer subscribes a consumer to a queue from its latest tick on; it reports
// whether it was registered now (false: it already was).
func RegisterConsumer(ctx context.Context, db pg.DB, queue, consumer string) (bool, error) {
	n, err := intResult(ctx, db, "register consumer "+consumer+" on queue "+queue, ErrNoQueue,
		`SELECT skiff.register_consumer($1, $2)`, queue, consumer)
	return n == 1, err
}

// UnregisterConsumer removes a consumer's subscription; it reports whether there was one.
// The replication slot of a consumer of a logical queue is dropped first: a slot in use (its
// worker streaming) is an error, and the consumer stays registered.
func UnregisterConsumer(ctx context.Context, db pg.DB, queue, consumer string) (bool, error) {
	if err := dropConsumerSlot(ctx, db, queue, consumer); err != nil {
		return false, err
	}
	n, err := intResult(ctx, db, "unregister consumer "+consumer+" from queue "+queue, ErrNoQueue,
		`SELECT skiff.unregister_consumer($1, $2)`, queue, consumer)
	return n == 1, err
}

// localFlush is the synchronous_commit that makes a COMMIT wait for the server's own WAL
// flush and for nothing else: local from 9.1 (a synchronous standby that is down does not
// stop skiff), on before (8.4 and 9.0 know only on and off).
const localFlush = `CASE WHEN pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 90100 THEN 'local' ELSE 'on' END`

// durableTick, in the FROM list of a statement that makes ticks, makes its transaction's
// COMMIT wait for the WAL flush (localFlush) even where the provider defaults to
// synchronous_commit = off; any other setting is kept. A consumer sees a tick only once its
// commit is flushed, and every transaction the tick closes committed earlier in the WAL: the
// events of a batch are durable on the provider before any worker can read them, as a
// walsender sends only flushed WAL. Without it a provider crash could lose transactions the
// target already holds (and the tick the target's position names: the worker would stop,
// position lost).
const durableTick = `(SELECT pg_catalog.set_config('synchronous_commit', CASE pg_catalog.current_setting('synchronous_commit')
	WHEN 'off' THEN ` + localFlush + ` ELSE pg_catalog.current_setting('synchronous_commit') END, true)) AS durable`

// Tick ticks a queue if a tick is due (event count, lag or idle thresholds) and returns the
// new tick's id; ok is false when no tick was due.
func Tick(ctx context.Context, db pg.DB, queue string) (id int64, ok bool, err error) {
	var v pgtype.Int8
	if err := db.QueryRow(ctx, `SELECT skiff.ticker($1) FROM `+durableTick, queue).Scan(&v); err != nil {
		return 0, false, wrap(err, "tick queue "+queue, ErrNoQueue)
	}
	return v.Int64, v.Valid, nil
}

// ForceTick ticks a queue now and returns the tick id.
func ForceTick(ctx context.Context, db pg.DB, queue string) (int64, error) {
	var id int64
	if err := db.QueryRow(ctx, `SELECT skiff.force_tick($1) FROM `+durableTick, queue).Scan(&id); err != nil {
		return 0, wrap(err, "force tick of queue "+queue, ErrNoQueue)
	}
	return id, nil
}

// NextBatch opens the consumer's next batch and returns its id; ok is false when no tick
// follows the consumer's position yet. An open batch not finished is returned again.
// maxEvents merges ticks into one batch up to about that many events (0: one tick a batch).
func NextBatch(ctx context.Context, db pg.DB, queue, consumer string, maxEvents int64) (id int64, ok bool, err error) {
	var v pgtype.Int8
	var setting string
	// A batch handed out commits durably (localFlush) even where the provider defaults to
	// synchronous_commit = off: after a provider crash next_batch must hand out the batch the
	// worker may have applied again, with the same ticks (the worker then finishes it), not a
	// new one spanning other ticks (position lost). A poll that finds no batch does not wait.
	// (The setting is in the select list, evaluated after next_batch: no LATERAL before 9.3.)
	if err := db.QueryRow(ctx, `SELECT s.b, pg_catalog.set_config('synchronous_commit',
		CASE WHEN s.b IS NOT NULL AND pg_catalog.current_setting('synchronous_commit') = 'off'
		THEN `+localFlush+` ELSE pg_catalog.current_setting('synchronous_commit') END, true)
		FROM (SELECT skiff.next_batch($1, $2, $3) AS b OFFSET 0) s`,
		queue, consumer, maxEvents).Scan(&v, &setting); err != nil {
		return 0, false, wrap(err, "next batch of consumer "+consumer+" on queue "+queue, ErrNotRegistered)
	}
	return v.Int64, v.Valid, nil
}

// BatchInfo describes an open batch.
type BatchInfo struct {
	ID              int64
	Queue           string
	Consumer        string
	PrevTick        int64 // the consumer's last finished tick: the batch starts after it
	Tick            int64 // the tick the batch ends at
	PrevTickTime    time.Time
	TickTime        time.Time
	Lag             time.Duration // now minus PrevTickTime
	EstimatedEvents int64         // events written between the two ticks (upper bound)
}

// GetBatchInfo describes an open batch. It fails when the batch is not open.
func GetBatchInfo(ctx context.Context, db pg.DB, batchID int64) (*BatchInfo, error) {
	return scanBatchInfo(db.QueryRow(ctx, batchInfoSQL, batchID), batchID)
}

// batchInfoSQL describes an open batch ($1).
const batchInfoSQL = `SELECT queue_name, consumer_name, prev_tick_id, tick_id, prev_tick_time, tick_time,
	extract(epoch FROM lag)::float8, estimated_events FROM skiff.get_batch_info($1)`

// scanBatchInfo reads the row of batchInfoSQL.
func scanBatchInfo(row pgx.Row, batchID int64) (*BatchInfo, error) {
	b := BatchInfo{ID: batchID}
	var lag float64
	err := row.Scan(&b.Queue, &b.Consumer, &b.PrevTick, &b.Tick, &b.PrevTickTime, &b.TickTime, &lag, &b.EstimatedEvents)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("batch %d is not open", batchID)
	}
	if err != nil {
		return nil, fmt.Errorf("batch %d info: %w", batchID, err)
	}
	b.Lag = seconds(lag)
	return &b, nil
}

// BatchEventSQL returns the query that yields an open batch's events in ev_id order.
func BatchEventSQL(ctx context.Context, db pg.DB, batchID int64) (string, error) {
	var s string
	if err := db.QueryRow(ctx, `SELECT skiff.batch_event_sql($1)`, batchID).Scan(&s); err != nil {
		return "", wrap(err, fmt.Sprintf("batch %d query", batchID), nil)
	}
	return s, nil
}

// LongTx is a transaction of an open batch that was running when the batch's start tick was
// taken: it may have written many events over many ticks. Tables holds, per event table with
// some of its events, the table's name and the first and last ev_id there.
type LongTx struct {
	TxID   int64
	Tables []LongTxTable
	// Sub is the batch's subscription: retry events of other subscriptions are not its.
	Sub int32
}

// LongTxTable is where a LongTx's events are in one event table.
type LongTxTable struct {
	Table       string // qualified and quoted, as skiff.event_table_name gives it
	First, Last int64
}

// Span is how many event ids its events span: at least their number.
func (l LongTx) Span() int64 {
	var n int64
	for _, t := range l.Tables {
		n += t.Last - t.First + 1
	}
	return n
}

// LastID is the id of its last event.
func (l LongTx) LastID() int64 {
	var m int64
	for _, t := range l.Tables {
		m = max(m, t.Last)
	}
	return m
}

// BatchLongTxs lists the transactions of an open batch that were running at its start tick
// (skiff.batch_long_txids, provider schema 5), ordered by txid.
func BatchLongTxs(ctx context.Context, db pg.DB, batchID int64) ([]LongTx, error) {
	rows, err := db.Query(ctx, longTxsSQL, batchID)
	if err != nil {
		return nil, wrap(err, fmt.Sprintf("batch %d long transactions", batchID), nil)
	}
	return scanLongTxs(rows, batchID)
}

// longTxsSQL lists the transactions of open batch $1 running at its start tick.
const longTxsSQL = `SELECT o_txid, o_table, o_first, o_last, o_sub FROM skiff.batch_long_txids($1) ORDER BY o_txid, o_first`

// scanLongTxs reads the rows of longTxsSQL and closes them.
func scanLongTxs(rows pgx.Rows, batchID int64) ([]LongTx, error) {
	defer rows.Close()
	var out []LongTx
	for rows.Next() {
		var (
			txid int64
			t    LongTxTable
			sub  int32
		)
		if err := rows.Scan(&txid, &t.Table, &t.First, &t.Last, &sub); err != nil {
			return nil, fmt.Errorf("batch %d long transactions: %w", batchID, err)
		}
		if n := len(out); n == 0 || out[n-1].TxID != txid {
			out = append(out, LongTx{TxID: txid, Sub: sub})
		}
		out[len(out)-1].Tables = append(out[len(out)-1].Tables, t)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, fmt.Sprintf("batch %d long transactions", batchID), nil)
	}
	return out, nil
}

// BatchEventSQLExcept is BatchEventSQL without the events of the transactions in except
// (provider schema 5).
func BatchEventSQLExcept(ctx context.Context, db pg.DB, batchID int64, except []int64) (string, error) {
	var s string
	if err := db.QueryRow(ctx, `SELECT skiff.batch_event_sql($1, $2::bigint[])`, batchID, except).Scan(&s); err != nil {
		return "", wrap(err, fmt.Sprintf("batch %d query", batchID), nil)
	}
	return s, nil
}

// FinishBatch closes a batch: the consumer's position moves to its end tick. It reports
// false when the batch was not open (already finished).
func FinishBatch(ctx context.Context, db pg.DB, batchID int64) (bool, error) {
	n, err := intResult(ctx, db, fmt.Sprintf("finish batch %d", batchID), nil, `SELECT skiff.finish_batch($1)`, batchID)
	return n == 1, err
}

// EventRetry sets an event of an open batch aside: it comes back to the same consumer, in a
// later batch, after delay (once maintenance ran). It reports whether the batch held it.
func EventRetry(ctx context.Context, db pg.DB, batchID, eventID int64, delay time.Duration) (bool, error) {
	n, err := intResult(ctx, db, fmt.Sprintf("retry event %d of batch %d", eventID, batchID), nil,
		`SELECT skiff.event_retry($1, $2, $3)`, batchID, eventID, int32(delay/time.Second))
	return n == 1, err
}

// RotateTables switches a queue to its next event table when its rotation period has passed
// and the table to reuse holds no event a consumer still needs. It reports whether it rotated.
//
// A rotation takes two transactions: the switch, then (step 2) a txid assigned after the
// switch committed, which bounds the old epoch's writers (see maint_rotate_tables). So conn
// must not be inside a transaction. A step 2 left undone by a crash is done by the next call.
func RotateTables(ctx context.Context, conn *pgx.Conn, queue string) (bool, error) {
	what := "rotate event tables of queue " + queue
	if st := conn.PgConn().TxStatus(); st != 'I' {
		return false, fmt.Errorf("%s: the connection is inside a transaction (status %q); rotation needs transactions of its own", what, st)
	}
	n, err := intResult(ctx, conn, what, ErrNoQueue, `SELECT skiff.maint_rotate_tables($1)`, queue)
	if err != nil || n == 0 {
		return false, err
	}
	// 1: switched now; 2: an earlier switch's step 2 is due. Either way, complete it in a
	// transaction of its own (autocommit) that reads before it takes its txid.
	if _, err := intResult(ctx, conn, what+" (step 2)", ErrNoQueue, `SELECT skiff.maint_rotate_tables_step2($1)`, queue); err != nil {
		return false, err
	}
	return n == 1, nil
}

// RetryEvents puts due retry events back into their queues and returns how many.
func RetryEvents(ctx context.Context, db pg.DB) (int, error) {
	return intResult(ctx, db, "retry events", nil, `SELECT skiff.maint_retry_events()`)
}

// CleanupTicks deletes the ticks of a queue that no consumer needs and returns how many.
func CleanupTicks(ctx context.Context, db pg.DB, queue string) (int, error) {
	return intResult(ctx, db, "clean up ticks of queue "+queue, ErrNoQueue, `SELECT skiff.maint_cleanup_ticks($1)`, queue)
}

// TablesToVacuum names the skiff tables maintenance should VACUUM (quoted, schema-qualified).
func TablesToVacuum(ctx context.Context, db pg.DB) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT skiff.maint_tables_to_vacuum()`)
	if err != nil {
		return nil, fmt.Errorf("tables to vacuum: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("tables to vacuum: %w", err)
	}
	return out, nil
}

// QueueInfo describes a queue.
type QueueInfo struct {
	Name             string
	ID               int
	TickerMaxEvents  int64
	TickerMaxLag     time.Duration
	TickerIdlePeriod time.Duration
	TickerPaused     bool
	RotationPeriod   time.Duration
	Epoch            int64 // rotation count: events go to event table Epoch % 3
	SwitchTime       time.Time
	LastTick         int64
	LastTickTime     time.Time
	TickerLag        time.Duration // age of the last tick
	PendingEvents    int64         // events written since the last tick (estimate)
}

// GetQueueInfo describes every queue, by name.
func GetQueueInfo(ctx context.Context, db pg.DB) ([]QueueInfo, error) {
	rows, err := db.Query(ctx, `SELECT queue_name, queue_id, ticker_max_events,
		extract(epoch FROM ticker_max_lag)::float8, extract(epoch FROM ticker_idle_period)::float8,
		ticker_paused, extract(epoch FROM rotation_period)::float8, epoch, switch_time,
		coalesce(last_tick_id, 0), last_tick_time, coalesce(extract(epoch FROM ticker_lag)::float8, 0),
		coalesce(pending_events, 0)
		FROM skiff.get_queue_info()`)
	if err != nil {
		return nil, fmt.Errorf("queue info: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (QueueInfo, error) {
		var q QueueInfo
		var maxLag, idle, rot, lag float64
		var lastTime pgtype.Timestamptz
		err := r.Scan(&q.Name, &q.ID, &q.TickerMaxEvents, &maxLag, &idle, &q.TickerPaused, &rot, &q.Epoch,
			&q.SwitchTime, &q.LastTick, &lastTime, &lag, &q.PendingEvents)
		q.TickerMaxLag, q.TickerIdlePeriod, q.RotationPeriod, q.TickerLag = seconds(maxLag), seconds(idle), seconds(rot), seconds(lag)
		q.LastTickTime = lastTime.Time
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("queue info: %w", err)
	}
	return out, nil
}

// ConsumerInfo describes a consumer's subscription to a queue.
type ConsumerInfo struct {
	Queue         string
	Consumer      string
	Lag           time.Duration // age of the consumer's last finished tick
	LastSeen      time.Duration // since it last asked for or finished a batch
	LastTick      int64
	CurrentBatch  int64 // 0 when no batch is open
	NextTick      int64 // end tick of the open batch, 0 when none
	PendingEvents int64 // events written since its last finished tick (estimate)
}

// GetConsumerInfo describes every subscription, by queue and consumer.
func GetConsumerInfo(ctx context.Context, db pg.DB) ([]ConsumerInfo, error) {
	rows, err := db.Query(ctx, `SELECT queue_name, consumer_name, coalesce(extract(epoch FROM lag)::float8, 0),
		extract(epoch FROM last_seen)::float8, last_tick, coalesce(current_batch, 0), coalesce(next_tick, 0),
		coalesce(pending_events, 0)
		FROM skiff.get_consumer_info()`)
	if err != nil {
		return nil, fmt.Errorf("consumer info: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ConsumerInfo, error) {
		var c ConsumerInfo
		var lag, seen float64
		err := r.Scan(&c.Queue, &c.Consumer, &lag, &seen, &c.LastTick, &c.CurrentBatch, &c.NextTick, &c.PendingEvents)
		c.Lag, c.LastSeen = seconds(lag), seconds(seen)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer info: %w", err)
	}
	return out, nil
}

// HoldingRotation names, per queue, the consumers that keep the queue's event tables from
// rotating now: the rotation is due (rotation_period has passed) and the consumer's last
// finished tick does not yet show every writer of the table to be reused as finished — the
// check of skiff.maint_rotate_tables. Until they move on, the queue's events pile up.
func HoldingRotation(ctx context.Context, db pg.DB) (map[string][]string, error) {
	rows, err := db.Query(ctx, `SELECT q.queue_name, s.sub_consumer
		FROM skiff.queue q
		JOIN skiff.consumer s ON s.queue_id = q.queue_id
		JOIN skiff.tick t ON t.queue_id = s.queue_id AND t.tick_id = s.sub_last_tick
		WHERE q.queue_switch_txid IS NOT NULL
		  AND now() - q.queue_switch_time >= q.queue_rotation_period
		  AND txid_snapshot_xmin(t.tick_snapshot) < q.queue_prev_switch_txid
		ORDER BY 1, 2`)
	if err != nil {
		return nil, wrap(err, "consumers holding back rotation", nil)
	}
	out := map[string][]string{}
	for rows.Next() {
		var q, c string
		if err := rows.Scan(&q, &c); err != nil {
			rows.Close()
			return nil, fmt.Errorf("consumers holding back rotation: %w", err)
		}
		out[q] = append(out[q], c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("consumers holding back rotation: %w", err)
	}
	return out, nil
}

// SequenceValue is the last value of a sequence a queue carries.
type SequenceValue struct {
	Schema, Name string
	LastValue    int64
	// Called is the sequence's is_called: false when nextval has not handed out LastValue
	// yet (a sequence never used, or set with setval(s, v, false)).
	Called bool
}

// GetSequences returns the last value of every sequence captured by a queue, by its current
// schema and name (a sequence dropped since is left out).
func GetSequences(ctx context.Context, db pg.DB, queue string) ([]SequenceValue, error) {
	rows, err := db.Query(ctx, `SELECT n.nspname, c.relname FROM skiff.captured_sequence s
		JOIN pg_catalog.pg_class c ON c.oid = s.seq_oid AND c.relkind = 'S'
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE s.queue_id = skiff.queue_id($1) ORDER BY 1, 2`, queue)
	if err != nil {
		return nil, wrap(err, "sequences of queue "+queue, ErrNoQueue)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SequenceValue, error) {
		var s SequenceValue
		err := r.Scan(&s.Schema, &s.Name)
		return s, err
	})
	if err != nil {
		return nil, wrap(err, "sequences of queue "+queue, ErrNoQueue)
	}
	for i := range out {
		s := &out[i]
		name := pgx.Identifier{s.Schema, s.Name}.Sanitize()
		if err := db.QueryRow(ctx, `SELECT last_value, is_called FROM `+name).Scan(&s.LastValue, &s.Called); err != nil {
			return nil, fmt.Errorf("sequence %s of queue %s: %w", name, queue, err)
		}
	}
	return out, nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
