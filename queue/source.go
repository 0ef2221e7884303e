package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/skiffdb/skiff/change"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// Queue and Consumer name the subscription; the consumer must be registered.
	Queue    string
	Consumer string
	// MaxEvents merges consecutive ticks into one batch up to about this many events when the
	// consumer is behind. 0 means the default, 20000; a negative value, one tick a batch.
	MaxEvents int64
	// ChunkSize is how many events Events hands to fn at a time. Default 5000.
	ChunkSize int
	// PollInterval is how often NextBatch asks for a batch while none is ready; a tick's
	// NOTIFY wakes it earlier. Default 100ms.
	PollInterval time.Duration
	// Log receives debug messages, which carry no queue or consumer attribute: the caller
	// scopes it (Log.With("queue", …)). Nil discards them.
	Log *slog.Logger
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
	maxLayout int32
	listening bool
}

// layout is one table_layout row, shared by every event of it.
type layout struct {
	id      int32
	table   change.Table
	oid     uint32
	columns []string
	key     []string
	keyIdx  []int
	current bool  // the table's capture uses this layout now
	drift   error // set per batch when the catalog no longer matches a current layout
}

// NewSource returns a Source reading through conn, which must have been opened with
// internal/pg. The consumer must already be registered on the queue.
func NewSource(ctx context.Context, conn *pgx.Conn, cfg SourceConfig) (*Source, error) {
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 20000
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 5000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{conn: conn, cfg: cfg, log: log, layouts: map[int32]*layout{}}
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
	for {
		id, ok, err := NextBatch(ctx, s.conn, s.cfg.Queue, s.cfg.Consumer, s.cfg.MaxEvents)
		if err != nil {
			return change.Batch{}, err
		}
		if ok {
			info, err := GetBatchInfo(ctx, s.conn, id)
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
		if err := s.wait(ctx); err != nil {
			return change.Batch{}, err
		}
	}
}

// wait returns after a tick's notification or the poll interval, whichever comes first.
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
func (s *Source) Finish(ctx context.Context, b change.Batch) error {
	_, err := FinishBatch(ctx, s.conn, b.ID)
	return err
}

// DriftError reports that a captured table's columns changed on the provider since its
// capture trigger was made: its events cannot be decoded safely.
type DriftError struct {
	Table   change.Table
	Layout  int32
	EventID int64
	Detail  string
}

func (e *DriftError) Error() string {
	return fmt.Sprintf("DDL drift on %s (event %d, layout %d): %s; run `skiff table add --refresh` for this table",
		e.Table, e.EventID, e.Layout, e.Detail)
}

// DecodeError reports an event whose data does not fit its layout.
type DecodeError struct {
	Table   change.Table
	Layout  int32
	EventID int64
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode event %d of %s (layout %d): %v", e.EventID, e.Table, e.Layout, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// loadLayouts reads layouts made since the last call and marks which are current, then
// checks every current layout against the catalog (once per batch).
func (s *Source) loadLayouts(ctx context.Context) error {
	rows, err := s.conn.Query(ctx, `SELECT layout_id, table_oid, table_schema, table_name, columns, key_columns
		FROM skiff.table_layout WHERE queue_id = $1 AND layout_id > $2 ORDER BY layout_id`, s.queueID, s.maxLayout)
	if err != nil {
		return fmt.Errorf("load layouts: %w", err)
	}
	for rows.Next() {
		l := &layout{}
		if err := rows.Scan(&l.id, &l.oid, &l.table.Schema, &l.table.Name, &l.columns, &l.key); err != nil {
			rows.Close()
			return fmt.Errorf("load layouts: %w", err)
		}
		for _, k := range l.key {
			l.keyIdx = append(l.keyIdx, slices.Index(l.columns, k))
		}
		s.layouts[l.id] = l
		s.maxLayout = max(s.maxLayout, l.id)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load layouts: %w", err)
	}
	// Current layouts and the live columns of their tables, in one query.
	rows, err = s.conn.Query(ctx, `SELECT c.layout_id, coalesce(n.nspname::text, ''), coalesce(r.relname::text, ''),
		(SELECT array_agg(a.attname::text) FROM (SELECT attname FROM pg_catalog.pg_attribute
		  WHERE attrelid = c.table_oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum) a)
		FROM skiff.captured_table c
		LEFT JOIN pg_catalog.pg_class r ON r.oid = c.table_oid
		LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		WHERE c.queue_id = $1`, s.queueID)
	if err != nil {
		return fmt.Errorf("check layouts against the catalog: %w", err)
	}
	for _, l := range s.layouts {
		l.current, l.drift = false, nil
	}
	for rows.Next() {
		var id int32
		var live []string
		var now change.Table
		if err := rows.Scan(&id, &now.Schema, &now.Name, &live); err != nil {
			rows.Close()
			return fmt.Errorf("check layouts against the catalog: %w", err)
		}
		l := s.layouts[id]
		if l == nil {
			continue
		}
		l.current = true
		switch {
		case now.Name == "":
			l.drift = errors.New("the table no longer exists; run `skiff table remove` for it")
		case now != l.table:
			l.drift = fmt.Errorf("the table was renamed to %s", now)
		case !slices.Equal(live, l.columns):
			l.drift = fmt.Errorf("layout columns %v, table now has %v", l.columns, live)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check layouts against the catalog: %w", err)
	}
	return nil
}

// Events streams the batch's events in ev_id order to fn, ChunkSize at a time. Rows are read
// from the socket as they are decoded: memory stays bounded whatever the batch size. The chunk
// slice is reused after fn returns; the events' Values are not.
func (s *Source) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	query, err := BatchEventSQL(ctx, s.conn, b.ID)
	if err != nil {
		return err
	}
	if err := s.loadLayouts(ctx); err != nil {
		return fmt.Errorf("batch %d: %w", b.ID, err)
	}
	// The query text is new for every batch (it holds the ticks' snapshots): run it as an
	// unnamed statement rather than filling pgx's statement cache.
	rows, err := s.conn.Query(ctx, query, pgx.QueryExecModeDescribeExec)
	if err != nil {
		return fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	defer rows.Close()
	chunk := make([]change.Event, 0, s.cfg.ChunkSize)
	var (
		id, txid    int64
		evTime      time.Time
		op          string
		layoutID    int32
		data, extra pgtype.Text
		retry       pgtype.Int4
	)
	for rows.Next() {
		if err := rows.Scan(&id, &evTime, &txid, &op, &layoutID, &data, &extra, &retry); err != nil {
			return fmt.Errorf("read batch %d: %w", b.ID, err)
		}
		ev, err := s.decode(id, txid, op, layoutID, data, extra)
		if err != nil {
			return fmt.Errorf("batch %d: %w", b.ID, err)
		}
		chunk = append(chunk, ev)
		if len(chunk) == cap(chunk) {
			if err := fn(chunk); err != nil {
				return err
			}
			clear(chunk)
			chunk = chunk[:0]
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	if len(chunk) > 0 {
		return fn(chunk)
	}
	return nil
}

func (s *Source) decode(id, txid int64, op string, layoutID int32, data, extra pgtype.Text) (change.Event, error) {
	l := s.layouts[layoutID]
	if l == nil {
		return change.Event{}, fmt.Errorf("event %d: unknown layout %d", id, layoutID)
	}
	if l.drift != nil {
		return change.Event{}, &DriftError{Table: l.table, Layout: l.id, EventID: id, Detail: l.drift.Error()}
	}
	if len(op) != 1 {
		return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id, Err: fmt.Errorf("bad operation %q", op)}
	}
	ev := change.Event{ID: id, TxID: txid, Op: change.Op(op[0]), Table: l.table}
	switch ev.Op {
	case change.Truncate:
		return ev, nil
	case change.Insert, change.Update, change.Delete:
	default:
		return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id, Err: fmt.Errorf("bad operation %q", op)}
	}
	if !data.Valid {
		return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id, Err: errors.New("no row data")}
	}
	vals, err := parseRecord(data.String, make([]change.Value, 0, len(l.columns)))
	if err != nil {
		return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id, Err: err}
	}
	if len(vals) != len(l.columns) {
		return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id,
			Err: fmt.Errorf("row has %d fields, layout has %d columns (DDL without `skiff table add --refresh`?)", len(vals), len(l.columns))}
	}
	ev.Columns, ev.Values, ev.Key = l.columns, vals, l.key
	if ev.Op == change.Update && extra.Valid {
		old, err := parseRecord(extra.String, make([]change.Value, 0, len(l.key)))
		if err != nil {
			return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id, Err: fmt.Errorf("old key: %w", err)}
		}
		if len(old) != len(l.key) {
			return change.Event{}, &DecodeError{Table: l.table, Layout: l.id, EventID: id,
				Err: fmt.Errorf("old key has %d fields, layout key has %d", len(old), len(l.key))}
		}
		ev.OldKey = old
	}
	return ev, nil
}
