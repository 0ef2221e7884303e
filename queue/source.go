package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// Queue and Consumer name the subscription; the consumer must be registered.
	Queue    string
	Consumer string
	// MaxEvents merges consecutive ticks into one batch up to about this many events when the
	// consumer is behind. 0 means the default, 50000; a negative value, one tick a batch.
	MaxEvents int64
	// ChunkSize is how many events Events hands to fn at a time. Default 5000.
	ChunkSize int
	// PollInterval is how often NextBatch asks for a batch while none is ready; a tick's
	// NOTIFY wakes it earlier. Default 100ms.
	PollInterval time.Duration
	// LongTxEvents: a transaction of the batch that was already running at the batch's start
	// tick and whose events span at least this many ids is read by itself, in index order
	// (no sort on the provider, rows flow at once), and replayed whole at the place of its
	// last event; the batch's other events are read as one query ordered by ev_id. 0 means the
	// default, 10000; a negative value, never (one sorted query a batch).
	LongTxEvents int64
	// Log receives debug messages, which carry no queue or consumer attribute: the caller
	// scopes it (Log.With("queue", …)). Nil discards them.
	Log *slog.Logger
	// ReadAhead opens a second connection to the provider (as the Source's own was opened).
	// With it, a Source behind its queue reads the next batch's events on that connection
	// while the batch it just read is applied (skiff.peek_batch, provider schema 15; see
	// prefetch.go); Close ends that read and closes the connection. Nil: batches are read
	// one after the other.
	ReadAhead func(ctx context.Context) (*pgx.Conn, error)
	// ReadAheadBytes bounds the memory of the rows read ahead (about their size): a larger
	// batch is not read ahead. Default 32 MiB.
	ReadAheadBytes int64
}

// Source reads batches of a consumer's subscription to a trigger queue. It implements the
// consumer package's Source contract: NextBatch, Events, Finish. A Source uses its connection
// alone and is not safe for concurrent use.
type Source struct {
	conn      *pgx.Conn
	cfg       SourceConfig
	log       *slog.Logger
	queueID   int32
	layouts   map[int32]*layout
	last      map[uint32]*layout // the newest layout of each table
	maxLayout int32
	listening bool
	// catalogSum fingerprints the pg_attribute rows the layouts' plans were made from.
	catalogSum string
	// noLongTx: the provider's schema predates batch_long_txids (version 5); longTxKnown: a
	// batch_long_txids call succeeded (so NextBatch may read ahead what Events needs).
	noLongTx, longTxKnown bool
	// ahead is what NextBatch read ahead for Events, nil when nothing is.
	ahead *readAhead
	// pre is the next batch being read ahead on raConn (prefetch.go), nil when none is;
	// noPeek: the provider has no skiff.peek_batch; prefetched counts the batches whose
	// events came from a read ahead.
	pre        *prefetch
	raConn     *pgx.Conn
	noPeek     bool
	prefetched int
}

// readAhead is what Events needs before it reads a batch's events, read by NextBatch in the
// same round trip as the batch's description: on a loaded machine every round trip waits for
// a CPU, and these are on the lag path. It serves the first Events of its batch only.
type readAhead struct {
	batchID int64
	long    []LongTx // every transaction of batch_long_txids
	query   string   // batch_event_sql(batch, no exception)
	layouts []*layout
	sum     string // fingerprintSQL
}

// layout is one table_layout row, shared by every event of it.
type layout struct {
	id      int32
	table   change.Table
	oid     uint32
	columns []string
	key     []string
	// attnums are the columns' numbers and natts the table's relnatts when the layout was
	// made, createdXmin a lower bound of later DDL's txids; nil and 0 for layouts made before
	// provider schema version 4.
	attnums     []int16
	natts       int16
	createdXmin int64
	next        *layout // the table's next layout in this queue, nil for the newest
	plan        *plan   // how its rows decode in the batch being read
}

// NewSource returns a Source reading through conn, which must have been opened with
// internal/pg. The consumer must already be registered on the queue.
func NewSource(ctx context.Context, conn *pgx.Conn, cfg SourceConfig) (*Source, error) {
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 50000
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 5000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.LongTxEvents == 0 {
		cfg.LongTxEvents = 10000
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{conn: conn, cfg: cfg, log: log, layouts: map[int32]*layout{}, last: map[uint32]*layout{}}
	if err := conn.QueryRow(ctx, `SELECT skiff.queue_id($1)`, cfg.Queue).Scan(&s.queueID); err != nil {
		return nil, wrap(err, "queue "+cfg.Queue, ErrNoQueue)
	}
	return s, nil
}

// NextBatch blocks until a batch is ready or ctx ends. An open batch that was not finished
// (after a crash) is returned again with the same ID, Prev and End.
func (s *Source) NextBatch(ctx context.Context) (change.Batch, error) {
	if !s.listening {
		if _, err := s.conn.Exec(ctx, `LISTEN skiff_tick`); err != nil {
			return change.Batch{}, fmt.Errorf("listen for ticks: %w", err)
		}
		s.listening = true
	}
	for waited := false; ; waited = true {
		s.dropNotifications(ctx)
		id, ok, err := NextBatch(ctx, s.conn, s.cfg.Queue, s.cfg.Consumer, s.cfg.MaxEvents)
		if err != nil {
			return change.Batch{}, err
		}
		if ok {
			info, err := s.batchInfo(ctx, id)
			if err != nil {
				return change.Batch{}, err
			}
			s.log.Debug("batch", "batch_id", id, "prev_tick", info.PrevTick, "tick", info.Tick,
				"estimated_events", info.EstimatedEvents, "lag", info.Lag)
			return change.Batch{
				ID:      id,
				Queue:   s.cfg.Queue,
				Prev:    change.Position{Tick: info.PrevTick},
				End:     change.Position{Tick: info.Tick},
				EndTime: info.TickTime,
			}, nil
		}
		if !waited {
			s.log.Debug("no batch ready: waiting for a tick")
		}
		if err := s.wait(ctx); err != nil {
			return change.Batch{}, err
		}
	}
}

// batchInfo describes open batch id. Once the provider is known to have batch_long_txids, it
// also reads ahead what Events needs (s.ahead), in the same round trip: the batch's
// transactions running at its start tick, its query, new layouts and the catalog's
// fingerprint (taken after the batch's end tick, as planLayouts needs). These reads change
// nothing; when one fails, Events reads them again itself.
func (s *Source) batchInfo(ctx context.Context, id int64) (*BatchInfo, error) {
	s.ahead = nil
	if !s.longTxKnown {
		return GetBatchInfo(ctx, s.conn, id)
	}
	bt := &pgx.Batch{}
	bt.Queue(batchInfoSQL, id)
	bt.Queue(longTxsSQL, id)
	bt.Queue(`SELECT skiff.batch_event_sql($1, $2::bigint[])`, id, []int64{})
	bt.Queue(layoutsSQL, s.queueID, s.maxLayout)
	bt.Queue(fingerprintSQL, s.queueID)
	br := s.conn.SendBatch(ctx, bt)
	defer br.Close()
	info, err := scanBatchInfo(br.QueryRow(), id)
	if err != nil {
		return nil, err
	}
	ra := &readAhead{batchID: id}
	rows, err := br.Query()
	if err == nil {
		ra.long, err = scanLongTxs(rows, id)
	}
	if err == nil {
		err = br.QueryRow().Scan(&ra.query)
	}
	if err == nil {
		rows, err = br.Query()
		if err == nil {
			ra.layouts, err = scanLayouts(rows)
		}
	}
	if err == nil {
		err = br.QueryRow().Scan(&ra.sum)
	}
	if err != nil {
		if s.conn.IsClosed() || ctx.Err() != nil {
			return nil, fmt.Errorf("batch %d: %w", id, err)
		}
		s.log.Debug("cannot read ahead for the batch: Events reads it", "batch_id", id, "error", err)
		return info, nil
	}
	s.ahead = ra
	return info, nil
}

// dropNotifications forgets the ticks' notifications pgx has buffered (received during
// queries): next_batch is about to look anyway. Kept, each would wake a later wait at once
// for nothing: a worker that merges several ticks into a batch gets one per tick and consumes
// at most one per wait, so under load they piled up, and every one cost a next_batch call, a
// provider transaction with a synchronous commit. A notification received after this is kept:
// no tick is missed.
func (s *Source) dropNotifications(ctx context.Context) {
	done, cancel := context.WithCancel(ctx)
	cancel()
	for {
		// With a done context pgx returns a buffered notification, else an error at once,
		// without touching the connection.
		if n, err := s.conn.WaitForNotification(done); err != nil || n == nil {
			return
		}
	}
}

// wait returns after a tick's notification or the poll interval, whichever comes first. The
// notification is what keeps lag low: the ticker's NOTIFY skiff_tick is delivered when the
// tick commits (or is already buffered, if it came during a query), so the batch is asked for
// at once; the poll interval only bounds the wait when a notification is lost.
func (s *Source) wait(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PollInterval)
	defer cancel()
	_, err := s.conn.WaitForNotification(wctx)
	if err == nil || ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("wait for a tick: %w", err)
}

// Finish closes the batch on the provider: it will not be returned again. Finishing a batch
// already finished is not an error.
//
// Its transaction commits without waiting for its WAL to be flushed (synchronous_commit off
// for that transaction alone): on the lag path it would cost an fsync per batch, and a finish
// lost in a provider crash costs nothing but the batch handed out again, which the worker
// finishes without applying it (the target's position, committed durably, says it is
// applied). Whatever depends on the finish on the provider is durable after it: the next
// batch (next_batch commits synchronously, flushing the WAL before it, whatever the provider's
// default: NextBatch), rotation and tick
// cleanup (their synchronous commits come later in the WAL).
func (s *Source) Finish(ctx context.Context, b change.Batch) error {
	s.ahead = nil
	var n int
	err := s.conn.QueryRow(ctx, `SELECT skiff.finish_batch($1) FROM pg_catalog.set_config('synchronous_commit', 'off', true) AS c`,
		b.ID).Scan(&n)
	if err != nil {
		return wrap(err, fmt.Sprintf("finish batch %d", b.ID), nil)
	}
	return nil
}

// DecodeError reports an event whose row cannot be decoded: its data does not fit its
// layout, or it was written between a DDL and the table's refresh in a way that leaves more
// than one choice of columns. The error says what to do.
type DecodeError struct {
	Table   change.Table
	Layout  int32
	EventID int64
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode event %d of %s (layout %d): %v; %s", e.EventID, e.Table, e.Layout, e.Err, remedy(e.Table, e.EventID))
}

func (e *DecodeError) Unwrap() error { return e.Err }

// FailedEvent names the event, for skiff event show.
func (e *DecodeError) FailedEvent() int64 { return e.EventID }

// remedy says what an operator can do about an event that cannot be decoded.
func remedy(t change.Table, id int64) string {
	return fmt.Sprintf("to go on, refresh the table's capture (`skiff table add --refresh %s`) and copy it again (`skiff table resync %s`): "+
		"the new copy holds this row and the event is dropped; or set the event aside (`skiff event skip --event %d --reason ...`)", t, t, id)
}

// loadLayouts reads the layouts made since the last call and, when they or the catalog of
// the tables the queue has layouts of changed, works out again how each layout's rows decode;
// then it places the column changes of the plans that have some among batch b's ticks.
func (s *Source) loadLayouts(ctx context.Context, b change.Batch) error {
	rows, err := s.conn.Query(ctx, layoutsSQL, s.queueID, s.maxLayout)
	if err != nil {
		return schemaError(fmt.Errorf("load layouts: %w", err))
	}
	added, err := scanLayouts(rows)
	if err != nil {
		return err
	}
	var sum string
	if err := s.conn.QueryRow(ctx, fingerprintSQL, s.queueID).Scan(&sum); err != nil {
		return fmt.Errorf("read the catalog of captured tables: %w", err)
	}
	return s.planLayouts(ctx, b, added, sum)
}

// layoutsSQL reads a queue's layouts made after a layout id.
const layoutsSQL = `SELECT layout_id, table_oid, table_schema, table_name, columns, key_columns,
		column_attnums, coalesce(natts, 0), coalesce(created_xmin, 0)
	FROM skiff.table_layout WHERE queue_id = $1 AND layout_id > $2 ORDER BY layout_id`

// fingerprintSQL: any change to a column (ADD, DROP, RENAME, ALTER TYPE, ...) writes a
// pg_attribute row, whose xmin changes: the fingerprint of (table, attnum, xmin) of every
// column of the tables a queue has layouts of tells whether the plans still hold (a query one
// row long, about the cost of the catalog check it replaces). It must be taken before the
// catalog is read and after the batch's end tick: every change a row of the batch was written
// after is in it.
const fingerprintSQL = `SELECT pg_catalog.md5(pg_catalog.array_to_string(ARRAY(
		SELECT a.attrelid::text || ':' || a.attnum::text || ':' || a.xmin::text FROM pg_catalog.pg_attribute a
		WHERE a.attrelid IN (SELECT DISTINCT table_oid FROM skiff.table_layout WHERE queue_id = $1) AND a.attnum > 0
		ORDER BY a.attrelid, a.attnum), ','))`

// scanLayouts reads the rows of layoutsSQL and closes them.
func scanLayouts(rows pgx.Rows) ([]*layout, error) {
	defer rows.Close()
	var out []*layout
	for rows.Next() {
		l := &layout{}
		if err := rows.Scan(&l.id, &l.oid, &l.table.Schema, &l.table.Name, &l.columns, &l.key, &l.attnums, &l.natts, &l.createdXmin); err != nil {
			return nil, fmt.Errorf("load layouts: %w", err)
		}
		if l.attnums != nil && len(l.attnums) != len(l.columns) {
			l.attnums = nil // not a layout this code wrote: decode it as an old one
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, schemaError(fmt.Errorf("load layouts: %w", err))
	}
	return out, nil
}

// planLayouts adds the layouts read since the last batch and, when there are some or the
// catalog's fingerprint sum (fingerprintSQL, taken after batch b's end tick) changed, works
// out again how each layout's rows decode; then it places the column changes of the plans that
// have some among b's ticks.
func (s *Source) planLayouts(ctx context.Context, b change.Batch, added []*layout, sum string) error {
	for _, l := range added {
		if l.id <= s.maxLayout {
			continue // read twice (a read ahead, then the batch read again): known
		}
		if prev := s.last[l.oid]; prev != nil {
			prev.next = l
		}
		s.last[l.oid] = l
		s.layouts[l.id] = l
		s.maxLayout = l.id
	}
	var err error
	if len(added) > 0 || sum != s.catalogSum {
		cats, err := s.loadCatalog(ctx)
		if err != nil {
			return err
		}
		for _, l := range s.layouts {
			l.plan = newPlan(l, cats[l.oid], l.plan)
		}
		s.catalogSum = sum
	}
	// Where columns were added or dropped, rows are placed against the changes by tick.
	var ticks []change.Snapshot
	for _, l := range s.layouts {
		p := l.plan
		if !p.needsTicks() {
			continue
		}
		if ticks == nil {
			if ticks, err = s.batchTicks(ctx, b); err != nil {
				return err
			}
		}
		p.placeOps(ticks)
		p.ticks = ticks
		clear(p.cache)
	}
	return nil
}

// loadCatalog reads the columns (dropped ones included) of every table the queue has
// layouts of and that still exists.
func (s *Source) loadCatalog(ctx context.Context) (map[uint32]*relCatalog, error) {
	// Every transaction whose catalog changes the next query shows has a txid below xmax.
	var xmax int64
	if err := s.conn.QueryRow(ctx, `SELECT pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot())`).Scan(&xmax); err != nil {
		return nil, fmt.Errorf("read the catalog of captured tables: %w", err)
	}
	rows, err := s.conn.Query(ctx, `SELECT a.attrelid, n.nspname::text, c.relname::text, c.relnatts,
			a.attnum, a.attname::text, a.attisdropped, a.xmin::text::bigint
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE a.attrelid IN (SELECT DISTINCT table_oid FROM skiff.table_layout WHERE queue_id = $1) AND a.attnum > 0
		ORDER BY a.attrelid, a.attnum`, s.queueID)
	if err != nil {
		return nil, fmt.Errorf("read the catalog of captured tables: %w", err)
	}
	defer rows.Close()
	cats := map[uint32]*relCatalog{}
	for rows.Next() {
		var oid uint32
		var t change.Table
		var natts, num int16
		var att catAtt
		if err := rows.Scan(&oid, &t.Schema, &t.Name, &natts, &num, &att.name, &att.dropped, &att.xmin); err != nil {
			return nil, fmt.Errorf("read the catalog of captured tables: %w", err)
		}
		c := cats[oid]
		if c == nil {
			c = &relCatalog{table: t, natts: natts, snapXmax: xmax, atts: map[int16]catAtt{}}
			cats[oid] = c
		}
		c.atts[num] = att
		if !att.dropped {
			c.live = append(c.live, num)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the catalog of captured tables: %w", err)
	}
	return cats, nil
}

// batchTicks returns the snapshots of the batch's ticks, its previous tick's first.
func (s *Source) batchTicks(ctx context.Context, b change.Batch) ([]change.Snapshot, error) {
	rows, err := s.conn.Query(ctx, `SELECT tick_snapshot::text FROM skiff.tick
		WHERE queue_id = $1 AND tick_id >= $2 AND tick_id <= $3 ORDER BY tick_id`, s.queueID, b.Prev.Tick, b.End.Tick)
	if err != nil {
		return nil, fmt.Errorf("read the ticks of batch %d: %w", b.ID, err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the ticks of batch %d: %w", b.ID, err)
	}
	out := make([]change.Snapshot, 0, len(texts))
	for _, t := range texts {
		snap, err := change.ParseSnapshot(t)
		if err != nil {
			return nil, fmt.Errorf("ticks of batch %d: %w", b.ID, err)
		}
		out = append(out, snap)
	}
	if len(out) < 2 {
		return nil, nil // not the ticks of an open batch: changes cannot be placed
	}
	return out, nil
}

// schemaError adds a hint when a query fails because the provider's schema is older than
// this skiff.
func schemaError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" {
		return fmt.Errorf("%w (the provider's skiff schema is older than this skiff: run `skiff init provider`)", err)
	}
	return err
}

// Events streams the batch's events to fn, ChunkSize at a time: in ev_id order, except that a
// long transaction (see SourceConfig.LongTxEvents) comes whole at the place of its last event.
// Rows are read from the socket as they are decoded: memory stays bounded whatever the batch
// size. A batch read ahead (SourceConfig.ReadAhead, at most ReadAheadBytes) comes from memory. The chunk slice is reused after fn returns; the events' Values are not. An event whose
// row cannot be decoded comes with Err set (a *DecodeError) and no columns: the consumer
// decides whether it needs it.
//
// Why that order is a valid replay: every two writes of one row (and a TRUNCATE and the
// writes of its table) keep their provider order. When T wrote a row before a long transaction
// L did, T had committed before L's write (the row lock is held to commit), so T's events all
// precede L's last one; when L wrote it first, T's write came after L's commit, after L's last
// event. The same holds between two long transactions. (sql/provider/00005_large_transactions.sql)
func (s *Source) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	ra := s.ahead
	s.ahead = nil
	if ra != nil && ra.batchID != b.ID {
		ra = nil
	}
	var (
		long  []LongTx
		query string
		err   error
	)
	if ra != nil {
		long = s.keepLong(ra.long)
		query = ra.query
	} else if long, err = s.longTxs(ctx, b); err != nil {
		return err
	}
	switch {
	case s.noLongTx:
		query, err = BatchEventSQL(ctx, s.conn, b.ID)
	case ra == nil || len(long) > 0:
		except := make([]int64, 0, len(long))
		for _, l := range long {
			except = append(except, l.TxID)
		}
		query, err = BatchEventSQLExcept(ctx, s.conn, b.ID, except)
	}
	if err != nil {
		return err
	}
	if ra != nil {
		err = s.planLayouts(ctx, b, ra.layouts, ra.sum)
	} else {
		err = s.loadLayouts(ctx, b)
	}
	if err != nil {
		return fmt.Errorf("batch %d: %w", b.ID, err)
	}
	out := &chunker{s: s, b: b, fn: fn, chunk: make([]change.Event, 0, s.cfg.ChunkSize)}
	if long != nil {
		s.stopPrefetch()
	} else if rows, err := s.takePrefetch(ctx, b.Prev.Tick, b.End.Tick); err != nil {
		return err
	} else if rows != nil {
		if err := s.eventsAhead(rows, out); err != nil {
			return err
		}
		s.log.Debug("batch read ahead", "batch_id", b.ID, "events", out.n)
		if s.prefetchWanted(out.n) {
			s.startPrefetch(ctx, b.End.Tick)
		}
		return out.flush()
	}
	if long == nil {
		// The query text is new for every batch (it holds the ticks' snapshots): run it as an
		// unnamed statement rather than filling pgx's statement cache, in one round trip
		// (parse, bind and execute sent together, no describe first: results come as text,
		// which read scans; ev_time, the one column whose text form depends on DateStyle, is
		// not read).
		rows, err := s.conn.Query(ctx, withoutEvTime(query), pgx.QueryExecModeExec)
		if err != nil {
			return fmt.Errorf("read batch %d: %w", b.ID, err)
		}
		if err := out.read(rows, nil); err != nil {
			return err
		}
		if s.prefetchWanted(out.n) {
			s.startPrefetch(ctx, b.End.Tick)
		}
		return out.flush()
	}
	if err := s.eventsWithLong(ctx, b, query, long, out); err != nil {
		return err
	}
	if s.prefetchWanted(out.n) {
		s.startPrefetch(ctx, b.End.Tick)
	}
	return nil
}

// longTxs returns the batch's long transactions to be read by themselves, ordered by their
// last event; nil when there are none (or the provider's schema is older than version 5).
func (s *Source) longTxs(ctx context.Context, b change.Batch) ([]LongTx, error) {
	if s.noLongTx {
		return nil, nil
	}
	all, err := BatchLongTxs(ctx, s.conn, b.ID)
	if errors.Is(err, ErrNotInstalled) {
		s.noLongTx = true
		s.log.Debug("the provider has no skiff.batch_long_txids (schema before version 5): batches are read sorted")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.longTxKnown = true
	return s.keepLong(all), nil
}

// keepLong returns the transactions of all (batch_long_txids) to read by themselves, ordered
// by their last event; nil when there are none.
func (s *Source) keepLong(all []LongTx) []LongTx {
	var long []LongTx
	for _, l := range all {
		if s.cfg.LongTxEvents > 0 && l.Span() >= s.cfg.LongTxEvents {
			long = append(long, l)
		}
	}
	slices.SortFunc(long, func(x, y LongTx) int { return cmp.Compare(x.LastID(), y.LastID()) })
	return long
}

// eventsWithLong reads a batch that has long transactions, in one read-only transaction: the
// other events through a cursor over query (sorted, by ev_id), each long transaction through a
// cursor per event table over the (ev_txid, ev_id) index, emitted before the first other event
// that follows its last one.
func (s *Source) eventsWithLong(ctx context.Context, b change.Batch, query string, long []LongTx, out *chunker) (err error) {
	tx, err := s.conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	defer func() {
		if rerr := tx.Rollback(context.WithoutCancel(ctx)); rerr != nil && err == nil && !errors.Is(rerr, pgx.ErrTxClosed) {
			err = fmt.Errorf("read batch %d: end transaction: %w", b.ID, rerr)
		}
	}()
	// A long transaction's rows are read in index order: with statistics that say the event
	// table holds little else, a sequential scan and a sort could look cheaper.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_sort = off`); err != nil {
		return fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	// One statement per call (extended protocol), as every SQL text made at run time.
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `DECLARE skiff_batch NO SCROLL CURSOR FOR `+query); err != nil {
		return fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	fetch := fmt.Sprintf(`FETCH FORWARD %d FROM `, s.cfg.ChunkSize)
	for {
		rows, err := tx.Query(ctx, fetch+`skiff_batch`, pgx.QueryExecModeDescribeExec)
		if err != nil {
			return fmt.Errorf("read batch %d: %w", b.ID, err)
		}
		// The page is decoded and held (ChunkSize events) before a long transaction's cursor
		// can run on the connection.
		out.page = out.page[:0]
		if err := out.read(rows, &out.page); err != nil {
			return err
		}
		if len(out.page) == 0 {
			break
		}
		for i := range out.page {
			for len(long) > 0 && long[0].LastID() < out.page[i].ID {
				if err := s.readLong(ctx, tx, b, long[0], out); err != nil {
					return err
				}
				long = long[1:]
			}
			if err := out.add(out.page[i]); err != nil {
				return err
			}
		}
		clear(out.page)
	}
	for _, l := range long {
		if err := s.readLong(ctx, tx, b, l, out); err != nil {
			return err
		}
	}
	if err := out.flush(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// readLong streams one long transaction's events, table by table in the order of their ids
// (a transaction's events in one event table all precede those in the next epoch's).
func (s *Source) readLong(ctx context.Context, tx pgx.Tx, b change.Batch, l LongTx, out *chunker) error {
	tables := slices.Clone(l.Tables)
	slices.SortFunc(tables, func(x, y LongTxTable) int { return cmp.Compare(x.First, y.First) })
	fetch := fmt.Sprintf(`FETCH FORWARD %d FROM skiff_long`, s.cfg.ChunkSize)
	for _, t := range tables {
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `DECLARE skiff_long NO SCROLL CURSOR FOR `+longTxQuery(l, t)); err != nil {
			return fmt.Errorf("read batch %d, transaction %d: %w", b.ID, l.TxID, err)
		}
		for {
			rows, err := tx.Query(ctx, fetch, pgx.QueryExecModeDescribeExec)
			if err != nil {
				return fmt.Errorf("read batch %d, transaction %d: %w", b.ID, l.TxID, err)
			}
			n := out.n
			if err := out.read(rows, nil); err != nil {
				return err
			}
			if out.n == n {
				break
			}
		}
		if _, err := tx.Exec(ctx, `CLOSE skiff_long`); err != nil {
			return fmt.Errorf("read batch %d, transaction %d: %w", b.ID, l.TxID, err)
		}
	}
	s.log.Debug("long transaction read", "batch_id", b.ID, "txid", l.TxID, "tables", len(tables))
	return nil
}

// evTimePrefix is how the query of the provider's batch_event_sql and peek_batch begins.
const evTimePrefix = "SELECT ev_id, ev_time, ev_txid, ev_op::text AS ev_op, "

// withoutEvTime returns a batch query (batch_event_sql, peek_batch) with NULL in place of
// ev_time in the rows it sends: the reader skips that column, and its text form cost the
// provider a timestamptz_out per event (11 % of its CPU reading a batch: TestBatchReadCost). A query of another
// form is returned as it is.
func withoutEvTime(q string) string {
	if rest, ok := strings.CutPrefix(q, evTimePrefix); ok {
		return "SELECT ev_id, NULL::timestamptz AS ev_time, ev_txid, ev_op::text AS ev_op, " + rest
	}
	return q
}

// longTxQuery reads a long transaction's events in one event table in ev_id order, along the
// table's (ev_txid, ev_id) index.
func longTxQuery(l LongTx, t LongTxTable) string {
	return `SELECT ev_id, NULL::timestamptz AS ev_time, ev_txid, ev_op::text, ev_layout, ev_data, ev_extra, ev_retry FROM ` +
		t.Table + ` WHERE ev_txid = ` + strconv.FormatInt(l.TxID, 10) +
		` AND (ev_owner IS NULL OR ev_owner = ` + strconv.FormatInt(int64(l.Sub), 10) + `) ORDER BY ev_txid, ev_id`
}

// chunker decodes event rows and hands them to fn ChunkSize at a time.
type chunker struct {
	s     *Source
	b     change.Batch
	fn    func([]change.Event) error
	chunk []change.Event
	page  []change.Event // a page of the sorted cursor, when long transactions interleave
	n     int64          // rows read
}

// read decodes rows into *into when into is set, else hands them on; it closes rows.
func (c *chunker) read(rows pgx.Rows, into *[]change.Event) error {
	defer rows.Close()
	var (
		id, txid    int64
		op          string
		layoutID    int32
		data, extra pgtype.Text
		retry       pgtype.Int4
	)
	for rows.Next() {
		// ev_time is not used (nil skips it); its text form would depend on DateStyle.
		if err := rows.Scan(&id, nil, &txid, &op, &layoutID, &data, &extra, &retry); err != nil {
			return fmt.Errorf("read batch %d: %w", c.b.ID, err)
		}
		ev, err := c.s.decode(id, txid, op, layoutID, data, extra, retry.Valid)
		if err != nil {
			return fmt.Errorf("batch %d: %w", c.b.ID, err)
		}
		c.n++
		if into != nil {
			*into = append(*into, ev)
			continue
		}
		if err := c.add(ev); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read batch %d: %w", c.b.ID, err)
	}
	return nil
}

func (c *chunker) add(ev change.Event) error {
	c.chunk = append(c.chunk, ev)
	if len(c.chunk) < cap(c.chunk) {
		return nil
	}
	if err := c.fn(c.chunk); err != nil {
		return err
	}
	clear(c.chunk)
	c.chunk = c.chunk[:0]
	return nil
}

func (c *chunker) flush() error {
	if len(c.chunk) == 0 {
		return nil
	}
	err := c.fn(c.chunk)
	clear(c.chunk)
	c.chunk = c.chunk[:0]
	return err
}

// decode turns an event row into a change.Event. Only an unknown layout is an error (the
// event's table is unknown); a row that does not decode gives an event with Err set.
func (s *Source) decode(id, txid int64, op string, layoutID int32, data, extra pgtype.Text, retried bool) (change.Event, error) {
	if op == string(change.Execute) {
		return decodeExecute(id, txid, data.String) // skiff execute: SQL, no row
	}
	l := s.layouts[layoutID]
	if l == nil {
		return change.Event{}, fmt.Errorf("event %d: unknown layout %d", id, layoutID)
	}
	ev := change.Event{ID: id, TxID: txid, Table: l.table}
	fail := func(err error) (change.Event, error) {
		ev.Err = &DecodeError{Table: l.table, Layout: l.id, EventID: id, Err: err}
		return ev, nil
	}
	if len(op) != 1 {
		return fail(fmt.Errorf("bad operation %q", op))
	}
	ev.Op = change.Op(op[0])
	switch ev.Op {
	case change.Truncate:
		return ev, nil
	case change.Insert, change.Update, change.Delete, change.Remove:
		// Remove: a delete that may find no row, which the ticker queues for each row of a
		// child it adopts (queueChildRows).
	default:
		return fail(fmt.Errorf("bad operation %q", op))
	}
	if !data.Valid {
		return fail(errors.New("no row data"))
	}
	p := l.plan
	vals, err := parseRecord(data.String, make([]change.Value, 0, len(l.columns)))
	if err != nil {
		return fail(err)
	}
	sh := p.base
	if sh == nil || len(vals) != sh.width {
		// A retried event carries the retry's txid, not the writer's: its order against DDL
		// is unknown.
		posT := -1
		if p.ticks != nil && !retried {
			if posT = tickPos(p.ticks, txid); posT == 0 || posT >= len(p.ticks) {
				posT = -1
			}
		}
		if sh, err = p.resolve(len(vals), posT); err != nil {
			return fail(err)
		}
	}
	if sh.keep != nil {
		for i, j := range sh.keep {
			vals[i] = vals[j]
		}
		clear(vals[len(sh.keep):])
		vals = vals[:len(sh.keep)]
	}
	if ev.Op == change.Update && extra.Valid {
		old, err := parseRecord(extra.String, make([]change.Value, 0, len(l.key)))
		if err != nil {
			return fail(fmt.Errorf("old key: %w", err))
		}
		if len(old) != len(l.key) {
			return fail(fmt.Errorf("old key has %d fields, layout key has %d", len(old), len(l.key)))
		}
		ev.OldKey = old
	}
	ev.Columns, ev.Values, ev.Key = sh.columns, vals, sh.key
	return ev, nil
}
