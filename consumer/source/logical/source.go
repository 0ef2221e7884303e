// Package logical is the logical-decoding Source of the consumer (9.4+): it streams a logical
// replication slot with the streaming replication protocol — pgoutput with a publication on
// 10+, test_decoding on 9.4+ — and yields whole committed transactions, in commit order, in
// batches. It also manages slots (created with an exported snapshot for the initial copy) and
// publications, and defines the logical copy point (CopyPoint).
//
// A slot's changes cannot be read twice: a batch is kept (internal/spool: in memory up to a
// bound, then in a temporary file) until Finish, so Events may be called any number of times,
// and NextBatch returns it again until it is finished. Finish confirms the batch's End to the
// server (standby status write = flush = apply = End): the slot moves only after the target
// committed. A new Source resumed at the target's position streams from there: nothing is
// lost, nothing repeated.
package logical

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/spool"
)

// Config configures a Source.
type Config struct {
	// Conn is the provider's connection string (the database of the slot).
	Conn string
	// AppName names the connections in pg_stat_activity ("" for skiff's default).
	AppName string
	// Slot is the logical replication slot to stream (made by CreateSlot).
	Slot string
	// Plugin is the slot's output plugin: PGOutput (10+) or TestDecoding.
	Plugin string
	// Publication is the publication pgoutput decodes (required with PGOutput).
	Publication string
	// Queue is the queue name the batches carry.
	Queue string
	// MaxEvents cuts a batch at the first commit that brings it to this many events (a
	// transaction is never split: one larger transaction makes a larger batch). With pgoutput
	// a transaction that reaches MaxEvents is handed out before its commit is received: its
	// batch is open (its End and EndTime come from the transaction's begin), and Events reads
	// the rest of it from the stream as it hands the events on, so that a large transaction
	// is applied while the server still sends it. Default 10000.
	MaxEvents int
	// MaxWait cuts a batch once this long has passed since its first transaction arrived.
	// Default 100ms.
	MaxWait time.Duration
	// MemoryBytes is how much of a batch is kept in memory; the rest goes to a temporary
	// file in SpoolDir ("" = the system's). Default 64 MiB.
	MemoryBytes int
	SpoolDir    string
	// StatusInterval is how often a standby status update is sent when nothing else sends
	// one; keep it well under the server's wal_sender_timeout (60s by default). Default 10s.
	StatusInterval time.Duration
	// ChunkSize is the number of events Events hands over at a time. Default 1000.
	ChunkSize int
	// Log receives the source's messages (nil: discarded).
	Log *slog.Logger
	// TruncateMarker, when set, is the provider table whose decoded inserts stand for a
	// TRUNCATE on servers that decode none (before 11): rows (queue_id, table_schema,
	// table_name) written by the queue's marker triggers. Those of QueueID become Truncate
	// events of the named table; the marker's other changes are dropped.
	TruncateMarker change.Table
	QueueID        int32
}

func (c *Config) defaults() error {
	if err := CheckSlotName(c.Slot); err != nil {
		return err
	}
	switch c.Plugin {
	case PGOutput:
		if c.Publication == "" {
			return fmt.Errorf("logical source: slot %s: pgoutput needs a publication", c.Slot)
		}
	case TestDecoding:
	default:
		return fmt.Errorf("logical source: slot %s: unknown plugin %q (%s or %s)", c.Slot, c.Plugin, PGOutput, TestDecoding)
	}
	if c.AppName == "" {
		c.AppName = "skiff worker " + c.Queue
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = 10000
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 100 * time.Millisecond
	}
	if c.MemoryBytes <= 0 {
		c.MemoryBytes = 64 << 20
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = 10 * time.Second
	}
	if c.ChunkSize <= 0 {
		c.ChunkSize = 1000
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Source streams a logical replication slot as batches of change events. Its methods are
// called from one goroutine (the worker's), which reads the stream itself inside NextBatch; a
// goroutine of its own reads it meanwhile (stream).
type Source struct {
	cfg     Config
	db      *pgx.Conn // catalog reads and the txid epoch
	dec     decoder
	fb      *feedback
	st      *stream // nil until Resume, and after the stream broke
	resumed bool
	// stoppedPID is the server process (walsender) of the stream this Source stopped last,
	// until the next stream starts (awaitStopped).
	stoppedPID uint32

	pos     change.Position // after the last finished batch (or Resume's)
	pending *change.Batch   // handed out, not finished
	held    *spool.Spool    // the pending batch's events
	fill    *spool.Spool    // the next batch's events
	spare   *spool.Spool

	// The batch being filled: whole transactions, then the one being received.
	rest      []wal // messages received, not decoded yet
	consumed  int64 // messages decoded (see feedback)
	inTx      bool
	txID      int64     // the transaction's txid (64 bits)
	txFinal   LSN       // the start of its commit record (pgoutput's begin tells it; else 0)
	txTime    time.Time // its commit time (pgoutput)
	txEvents  int
	fillTxs   int // transactions with events in fill
	fillFirst time.Time
	fillEnd   LSN
	fillTime  time.Time
	nextEvID  int64
	due       bool
	ref       int64   // a recent txid: the epoch of decoded 32-bit xids (extend)
	fails     failRun // the stream's failures in a row that look alike (failed)

	// open: the pending batch's last transaction is still being received; its events go to
	// held, and Events reads on until its commit (receiveOpen), handing them over in tail.
	open bool
	tail []change.Event
}

// New returns a Source for cfg; it connects in Resume.
func New(cfg Config) (*Source, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Source{
		cfg:   cfg,
		fb:    &feedback{},
		fill:  spool.New(cfg.SpoolDir, cfg.MemoryBytes),
		spare: spool.New(cfg.SpoolDir, cfg.MemoryBytes),
	}
	return s, nil
}

// Resume starts streaming from position from (the target's applied position; zero: the
// slot's confirmed position) and forgets any batch not finished. The server starts at the
// later of from and the slot's confirmed position: what the target holds is never sent again.
func (s *Source) Resume(ctx context.Context, from change.Position) error {
	s.stopStream(ctx)
	s.pending = nil
	if s.held != nil {
		_ = s.held.Reset()
		s.spare, s.held = s.held, nil
	}
	s.resetFill()
	s.pos = from
	s.resumed = true
	return s.start(ctx)
}

func (s *Source) connectDB(ctx context.Context) error {
	if s.db != nil && !s.db.IsClosed() {
		return nil
	}
	db, err := pg.Connect(ctx, s.cfg.Conn, s.cfg.AppName)
	if err != nil {
		return err
	}
	s.db = db
	s.dec = s.newDecoder()
	return nil
}

func (s *Source) newDecoder() decoder {
	if s.cfg.Plugin == PGOutput {
		d := &pgoutputDecoder{identity: func(ctx context.Context, oid uint32) (byte, []string, error) {
			return catalog.ReplicaIdentity(ctx, s.db, oid)
		}}
		d.reset()
		return d
	}
	d := &testDecodingDecoder{lookup: s.tableInfo}
	d.reset()
	return d
}

// tableInfo reads a table's key and columns for test_decoding.
func (s *Source) tableInfo(ctx context.Context, t change.Table) (tableInfo, error) {
	oid, err := catalog.Lookup(ctx, s.db, t, "")
	if errors.Is(err, pgx.ErrNoRows) {
		return tableInfo{missing: true}, nil
	}
	if err != nil {
		return tableInfo{}, err
	}
	ident, key, err := catalog.ReplicaIdentity(ctx, s.db, oid)
	if err != nil {
		return tableInfo{}, err
	}
	cols, err := catalog.Columns(ctx, s.db, oid)
	if err != nil {
		return tableInfo{}, err
	}
	info := tableInfo{ident: ident, key: key}
	for _, c := range cols {
		info.columns = append(info.columns, c.Name)
		if c.Generated != 0 {
			info.generated = append(info.generated, c.Name)
		}
	}
	return info, nil
}

// pluginArgs are the options of START_REPLICATION. In-progress transactions are not
// streamed (pgoutput's "streaming", test_decoding's "stream-changes" stay off): the server
// sends a transaction whole at its commit, however large, and the spool buffers it.
func (s *Source) pluginArgs() []string {
	if s.cfg.Plugin == PGOutput {
		// publication_names is a list of identifiers: quote the name as one, then as a literal.
		return []string{`"proto_version" '1'`, `"publication_names" ` + change.QuoteLiteral(change.QuoteIdent(s.cfg.Publication))}
	}
	return []string{`"include-xids" '1'`, `"include-timestamp" '1'`, `"skip-empty-xacts" '1'`}
}

// start connects and starts the stream at s.pos.
func (s *Source) start(ctx context.Context) error {
	if err := s.connectDB(ctx); err != nil {
		return fmt.Errorf("logical source %s: %w", s.cfg.Slot, err)
	}
	state, ok, err := ReadSlot(ctx, s.db, s.cfg.Slot)
	if err != nil {
		return fmt.Errorf("logical source: %w", err)
	}
	if !ok {
		return fmt.Errorf("logical source: replication slot %s does not exist: %w", s.cfg.Slot, change.ErrPositionLost)
	}
	if state.Plugin != s.cfg.Plugin {
		return fmt.Errorf("logical source: replication slot %s uses plugin %s, not %s", s.cfg.Slot, state.Plugin, s.cfg.Plugin)
	}
	if state.Active && s.stoppedPID != 0 {
		if err := s.awaitStopped(ctx, s.stoppedPID); err != nil {
			return err
		}
	}
	s.stoppedPID = 0
	// Never report less than the slot has confirmed: some servers move confirmed_flush back.
	s.fb.mu.Lock()
	s.fb.flushed = max(LSN(s.pos.LSN), state.ConfirmedFlush)
	s.fb.sent, s.fb.settled = 0, 0
	s.fb.mu.Unlock()
	s.consumed = 0

	conn, err := ConnectReplication(ctx, s.cfg.Conn, s.cfg.AppName)
	if err != nil {
		return fmt.Errorf("logical source %s: %w", s.cfg.Slot, err)
	}
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, LSN(s.pos.LSN), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: s.pluginArgs(),
	})
	if err != nil {
		_ = conn.Close(ctx)
		err = fmt.Errorf("logical source: start replication of slot %s at %s: %w", s.cfg.Slot, LSN(s.pos.LSN), err)
		if stuck := s.failed(err, false); stuck != nil {
			return stuck
		}
		return err
	}
	s.dec.reset()
	s.st = newStream(conn, s.fb, s.cfg.StatusInterval, 1024)
	s.st.start(context.WithoutCancel(ctx))
	s.cfg.Log.Debug("logical stream started", "slot", s.cfg.Slot, "from", LSN(s.pos.LSN).String())
	return nil
}

func (s *Source) stopStream(ctx context.Context) {
	if s.st != nil {
		s.stoppedPID = s.st.conn.PID()
		s.st.stop(ctx)
		s.st = nil
	}
	s.rest = nil
}

// stoppedWait bounds awaitStopped: a walsender that has not ended by then is left to
// START_REPLICATION's error.
const stoppedWait = 10 * time.Second

// awaitStopped waits for the walsender pid of the stream this Source stopped to end. The
// server ends it once it reads the closed connection, which may be after stream.stop has
// returned (on a loaded server, after the next stream's connection is open): until then the
// slot is active for it and START_REPLICATION fails ("replication slot … is active for PID",
// 55006). It waits only for its own stream's process, never for another holder of the slot.
func (s *Source) awaitStopped(ctx context.Context, pid uint32) error {
	s.cfg.Log.Debug("waiting for the previous stream's server process to end", "slot", s.cfg.Slot, "pid", pid)
	deadline := time.Now().Add(stoppedWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		var live bool
		if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_replication WHERE pid = $1)`, int32(pid)).Scan(&live); err != nil {
			return fmt.Errorf("logical source %s: wait for the previous stream (pid %d) to end: %w", s.cfg.Slot, pid, err)
		}
		if !live || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// resetFill forgets the batch being filled (the stream restarts from s.pos).
func (s *Source) resetFill() {
	_ = s.fill.Reset()
	s.open = false
	s.inTx, s.txEvents, s.fillTxs, s.nextEvID, s.due = false, 0, 0, 0, false
	s.fillEnd, s.fillTime, s.fillFirst = 0, time.Time{}, time.Time{}
}

// extend makes a 64-bit txid of a 32-bit xid: the one nearest to a recent txid (ref). The
// server keeps every xid it decodes within 2^31 of the current one (wraparound protection;
// the slot's catalog_xmin holds back freezing), so the nearest is the right one.
func extend(xid uint32, ref int64) int64 {
	full := ref&^0xffffffff | int64(xid)
	switch {
	case full > ref+1<<31:
		full -= 1 << 32
	case full < ref-1<<31:
		full += 1 << 32
	}
	return full
}

func (s *Source) refreshEpoch(ctx context.Context) error {
	if err := s.db.QueryRow(ctx, `SELECT pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot())`).Scan(&s.ref); err != nil {
		return fmt.Errorf("logical source %s: current txid: %w", s.cfg.Slot, err)
	}
	return nil
}

// NextBatch returns the next batch: whole transactions in commit order, cut at MaxEvents
// (at a commit) or MaxWait after its first transaction. Until Finish it returns the same
// batch again. Batch.ID is the End LSN (unique and increasing across restarts), Prev the
// position after the previous batch (or Resume's), End the end of the last commit, EndTime
// its commit time. A broken stream is started again from the last finished batch.
func (s *Source) NextBatch(ctx context.Context) (change.Batch, error) {
	if s.pending != nil {
		return *s.pending, nil
	}
	if !s.resumed {
		return change.Batch{}, errNotResumed
	}
	if s.st != nil {
		select {
		case <-s.st.done: // broke while a batch was pending
			// What the reader received before the failure is good: whole transactions make
			// a batch. Otherwise the stream starts again at once (not counted by failed: a
			// failure that recurs comes again from the new stream).
			err := s.st.err
			s.st.drain(func(w wal) { s.rest = append(s.rest, w) })
			if b, ok := s.salvage(ctx, err); ok {
				return b, nil
			}
			s.cfg.Log.Warn("logical stream ended; starting it again", "slot", s.cfg.Slot, "error", err)
		default:
		}
	}
	if s.st == nil {
		s.resetFill()
		if err := s.start(ctx); err != nil {
			return change.Batch{}, err
		}
	}
	if !s.inTx && s.fillTxs == 0 {
		if err := s.refreshEpoch(ctx); err != nil {
			return change.Batch{}, err
		}
	}
	// The Source reads the connection itself until it returns a batch: see stream.
	if err := s.st.take(ctx, func(w wal) { s.rest = append(s.rest, w) }); err != nil {
		return s.broken(ctx, err, false)
	}
	st := s.st
	defer func() {
		if s.st == st {
			st.give()
		}
	}()
	var due time.Time // MaxWait after the batch's first transaction
	arm := func() { due = s.fillFirst.Add(s.cfg.MaxWait) }
	if s.fillTxs > 0 {
		arm()
	}
	for {
		if len(s.rest) == 0 && !due.IsZero() && !time.Now().Before(due) {
			due = time.Time{}
			s.due = true
			if !s.inTx {
				return s.cut(), nil
			}
		}
		w, ok, err := s.pop(ctx, st, due)
		if err != nil {
			return s.broken(ctx, err, false)
		}
		if !ok {
			continue
		}
		first, full, err := s.handle(ctx, w)
		if err != nil {
			// The stream cannot go on past a message it cannot read: start it again.
			return s.broken(ctx, err, true)
		}
		if first {
			arm()
		}
		if full {
			return s.cut(), nil
		}
		if s.inTx && s.txFinal != 0 && s.txEvents >= s.cfg.MaxEvents {
			return s.cutOpen(), nil
		}
	}
}

// handle decodes one message into the batch being filled. first: it ended the batch's first
// transaction (MaxWait runs from now); full: it ended a transaction and the batch is to be
// cut (MaxEvents reached, or MaxWait passed while the transaction was open).
func (s *Source) handle(ctx context.Context, w wal) (first, full bool, err error) {
	s.consumed++
	d, err := s.dec.decode(ctx, w, s.emit)
	if err != nil {
		return false, false, fmt.Errorf("at %s: %w", w.start, err)
	}
	switch {
	case d.begin:
		s.inTx, s.txEvents = true, 0
		s.txID = extend(d.xid, s.ref)
		s.txFinal, s.txTime = d.final, d.time
	case d.commit && s.open:
		// The open batch's transaction is whole: the batch is as it was handed out.
		if d.final != s.txFinal {
			return false, false, fmt.Errorf("commit at %s, but the open batch's transaction was to commit at %s", d.final, s.txFinal)
		}
		s.open, s.inTx, s.txEvents, s.nextEvID = false, false, 0, 0
		s.fails = failRun{} // the stream got past where it failed
	case d.commit:
		s.inTx = false
		if s.txEvents == 0 {
			if s.fillTxs == 0 {
				// An empty transaction (other tables) with nothing pending: settled.
				s.fb.settle(s.consumed)
				return false, false, nil
			}
			// The batch ends past it. MaxWait may have passed while it was received: the
			// batch is cut now, not at the next transaction with changes, which may be long
			// in coming (only other tables written).
			s.fillEnd = d.end
			return false, s.due, nil
		}
		s.fillTxs++
		s.fillEnd, s.fillTime = d.end, d.time
		if s.fillTxs == 1 {
			s.fillFirst = time.Now()
			first = true
		}
		full = s.fill.Len() >= s.cfg.MaxEvents || s.due
	}
	return first, full, nil
}

// salvage is for a stream that failed with err: it decodes the messages received before the
// failure (s.rest) and, when the batch being filled then holds whole transactions and nothing
// of a later one, stops the stream and cuts them into a batch (true). They are good, and the
// failure, if it recurs, comes after them. Otherwise it decodes nothing more and returns false
// (the caller stops the stream; the fill is reset when it starts again).
func (s *Source) salvage(ctx context.Context, err error) (change.Batch, bool) {
	for len(s.rest) > 0 {
		w := s.rest[0]
		s.rest[0] = wal{}
		s.rest = s.rest[1:]
		_, full, derr := s.handle(ctx, w)
		if derr != nil || full {
			break
		}
	}
	s.stopStream(ctx)
	if s.fillTxs == 0 || s.inTx && s.txEvents > 0 {
		return change.Batch{}, false
	}
	s.cfg.Log.Warn("logical stream failed; the transactions received before make a batch", "slot", s.cfg.Slot,
		"transactions", s.fillTxs, "end", s.fillEnd.String(), "error", err)
	s.inTx = false
	return s.cut(), true
}

// broken is NextBatch's end when its context ended or the stream failed with err (a message
// the source could not read when decodeErr). The stream is stopped; the next NextBatch starts
// it again from the last finished batch. The whole transactions the batch being filled holds
// are good: they are cut into a batch and returned, and the failure, if it recurs, comes
// after them. Otherwise the error is returned, a SlotStuckError once it recurred StuckAfter
// times at one position (failed).
func (s *Source) broken(ctx context.Context, err error, decodeErr bool) (change.Batch, error) {
	if ctx.Err() != nil {
		return change.Batch{}, ctx.Err()
	}
	err = fmt.Errorf("logical stream of slot %s: %w", s.cfg.Slot, err)
	if decodeErr {
		s.rest = nil // what follows a message the source cannot read is read again
	}
	if b, ok := s.salvage(ctx, err); ok {
		return b, nil
	}
	s.resetFill()
	if stuck := s.failed(err, decodeErr); stuck != nil {
		return change.Batch{}, stuck
	}
	return change.Batch{}, err
}

// emit adds a decoded event to the batch being filled.
func (s *Source) emit(ev change.Event) error {
	if !s.inTx {
		return fmt.Errorf("%s of %s outside a transaction", ev.Op, ev.Table)
	}
	switch {
	case s.cfg.TruncateMarker != (change.Table{}) && ev.Table == s.cfg.TruncateMarker:
		t, ok := s.truncateMarker(&ev)
		if !ok {
			return nil
		}
		ev = change.Event{Op: change.Truncate, Table: t}
	case ev.Table.Schema == "skiff":
		// skiff's own tables (test_decoding decodes every table of the database: the event
		// tables of trigger queues beside this one, for instance) are never replicated.
		return nil
	}
	s.nextEvID++
	ev.ID = s.nextEvID
	ev.TxID = s.txID
	s.txEvents++
	if s.open {
		// The spool keeps a copy: the receiver of tail may modify the event.
		if err := s.held.Append(ev); err != nil {
			return fmt.Errorf("keep event: %w", err)
		}
		s.tail = append(s.tail, ev)
		return nil
	}
	if err := s.fill.Append(ev); err != nil {
		return fmt.Errorf("keep event: %w", err)
	}
	return nil
}

// truncateMarker reads a marker row (TruncateMarker): the table truncated, and whether the
// row is an insert of this queue's.
func (s *Source) truncateMarker(ev *change.Event) (change.Table, bool) {
	if ev.Op != change.Insert {
		return change.Table{}, false
	}
	q, _ := ev.Value("queue_id")
	schema, _ := ev.Value("table_schema")
	name, _ := ev.Value("table_name")
	if !q.Valid || q.Text != strconv.Itoa(int(s.cfg.QueueID)) || !schema.Valid || !name.Valid {
		return change.Table{}, false
	}
	return change.Table{Schema: schema.Text, Name: name.Text}, true
}

// cut makes the filled transactions the pending batch.
func (s *Source) cut() change.Batch {
	b := change.Batch{
		ID:      int64(s.fillEnd),
		Queue:   s.cfg.Queue,
		Prev:    s.pos,
		End:     change.Position{LSN: uint64(s.fillEnd)},
		EndTime: s.fillTime,
	}
	s.pending = &b
	s.held, s.fill, s.spare = s.fill, s.spare, nil
	s.resetFill()
	s.fails = failRun{} // the stream got past where it failed
	return b
}

// cutOpen makes the filled transactions and the one being received an open batch: its End is
// just past the start of that transaction's commit record (pgoutput's begin tells where it
// is), a position every later commit is beyond and the server skips this transaction from
// (it skips a transaction whose commit record starts before the position it is asked to
// start at), and its EndTime the transaction's commit time. Its events go on to held as they
// are received (emit), inside Events.
func (s *Source) cutOpen() change.Batch {
	end := s.txFinal + 1
	b := change.Batch{
		ID:      int64(end),
		Queue:   s.cfg.Queue,
		Prev:    s.pos,
		End:     change.Position{LSN: uint64(end)},
		EndTime: s.txTime,
	}
	s.pending = &b
	s.held, s.fill, s.spare = s.fill, s.spare, nil
	s.open = true
	// The transaction goes on (inTx, txID, txEvents, nextEvID); the next fill starts empty.
	s.fillTxs, s.due = 0, false
	s.fillEnd, s.fillTime, s.fillFirst = 0, time.Time{}, time.Time{}
	// s.fails is kept: the stream got past a failure only when the transaction is whole
	// (handle), else a slot that fails inside it again and again would never be stuck.
	s.cfg.Log.Debug("a large transaction is applied while it is received", "slot", s.cfg.Slot,
		"xid", s.txID, "commit", s.txFinal.String(), "events_so_far", s.txEvents)
	return b
}

// receiveOpen reads the rest of the open batch's last transaction from the stream, up to its
// commit, handing its events to fn ChunkSize at a time (they are kept in held too, for a
// replay). The connection is taken for each chunk and given back to the reader while fn
// runs, so that a slow apply never leaves the server without status updates.
func (s *Source) receiveOpen(ctx context.Context, fn func([]change.Event) error) error {
	for s.open {
		s.tail = s.tail[:0]
		if err := s.receiveChunk(ctx); err != nil {
			return err
		}
		if len(s.tail) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(s.tail); err != nil {
				return err
			}
		}
	}
	clear(s.tail)
	s.tail = s.tail[:0]
	return nil
}

// receiveChunk decodes the stream's messages into the open batch until tail holds ChunkSize
// events or the transaction's commit came.
func (s *Source) receiveChunk(ctx context.Context) error {
	st := s.st
	if st == nil {
		return fmt.Errorf("logical stream of slot %s ended before the end of the batch's last transaction", s.cfg.Slot)
	}
	if err := st.take(ctx, func(w wal) { s.rest = append(s.rest, w) }); err != nil {
		return s.openBroken(ctx, err, false)
	}
	defer func() {
		if s.st == st {
			st.give()
		}
	}()
	for s.open && len(s.tail) < s.cfg.ChunkSize {
		w, ok, err := s.pop(ctx, st, time.Time{})
		if err != nil {
			return s.openBroken(ctx, err, false)
		}
		if !ok {
			continue
		}
		if _, _, err := s.handle(ctx, w); err != nil {
			return s.openBroken(ctx, err, true)
		}
	}
	return nil
}

// pop returns the next message to decode: the first of those received and not yet decoded
// (rest), else one read from the stream st the Source holds, waiting at most until until
// (zero: the stream's own bounds); false when the wait ended without one.
func (s *Source) pop(ctx context.Context, st *stream, until time.Time) (wal, bool, error) {
	if len(s.rest) == 0 {
		return st.step(ctx, false, until)
	}
	w := s.rest[0]
	s.rest[0] = wal{}
	s.rest = s.rest[1:]
	return w, true, nil
}

// openBroken is receiveChunk's end when the stream failed with err (a message the source
// could not read when decodeErr): the stream is stopped and the open batch cannot be
// completed; the worker rolls it back and resumes from the batch's start (Resume), where the
// server sends the transaction again. A failure that recurs there makes the slot stuck, as in
// NextBatch (failed).
func (s *Source) openBroken(ctx context.Context, err error, decodeErr bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	err = fmt.Errorf("logical stream of slot %s, inside the transaction committed at %s: %w", s.cfg.Slot, s.txFinal, err)
	s.stopStream(ctx)
	if stuck := s.failed(err, decodeErr); stuck != nil {
		return stuck
	}
	return err
}

func (s *Source) check(op string, b change.Batch) error {
	if s.pending == nil || s.pending.ID != b.ID || s.pending.End != b.End || s.pending.Prev != b.Prev {
		return fmt.Errorf("%s batch %d: not the batch the logical source has open", op, b.ID)
	}
	return nil
}

// Events hands the batch's events to fn in order, ChunkSize at a time; it may be called any
// number of times until Finish. Of an open batch (cutOpen) it hands over what the spool
// holds, then reads the rest of the last transaction from the stream (receiveOpen). Event.ID is a running number in the batch; Event.TxID the
// transaction's xid extended to 64 bits (txid_current()'s form, so that a txid snapshot
// tells whether a copy holds it).
func (s *Source) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	if err := s.check("events of", b); err != nil {
		return err
	}
	if err := s.held.Read(ctx, s.cfg.ChunkSize, fn); err != nil {
		return fmt.Errorf("batch %d: %w", b.ID, err)
	}
	if s.open {
		if err := s.receiveOpen(ctx, fn); err != nil {
			return fmt.Errorf("batch %d: %w", b.ID, err)
		}
	}
	return nil
}

// Finish records that b is applied on the target: the slot is confirmed up to b.End (the
// status update is sent before Finish returns, when the stream is up; else when it starts
// again) and b's events are dropped.
func (s *Source) Finish(ctx context.Context, b change.Batch) error {
	if err := s.check("finish", b); err != nil {
		return err
	}
	if s.open {
		return fmt.Errorf("finish batch %d: its last transaction was not received whole (Events did not end)", b.ID)
	}
	s.pos = b.End
	s.pending = nil
	if err := s.held.Reset(); err != nil {
		s.cfg.Log.Warn("logical source: drop spooled batch", "slot", s.cfg.Slot, "error", err)
	}
	s.spare, s.held = s.held, nil
	s.fb.confirm(LSN(b.End.LSN))
	if !s.inTx && s.fillTxs == 0 {
		s.fb.settle(s.consumed)
	}
	if s.st == nil {
		return nil
	}
	if err := s.st.confirmNow(ctx); err != nil {
		// The batch is applied; the confirmation goes with the next status update.
		s.cfg.Log.Warn("logical source: confirm", "slot", s.cfg.Slot, "lsn", LSN(b.End.LSN).String(), "error", err)
	}
	return nil
}

// Slot returns the name of the slot the source streams.
func (s *Source) Slot() string { return s.cfg.Slot }

// Confirmed returns the position the source has confirmed to the server: every transaction
// that committed before it is applied on the target (its batch finished) or had no change for
// the queue. It moves with each finished batch and, while the stream is idle with nothing
// owed, to the WAL the server has decoded (its keepalive's WAL end). A copy whose point is at
// or before it is passed (CopyPoint.Passed): no batch still to come holds a transaction the
// copy saw. The slot records the same position, but shows it (confirmed_flush_lsn) only from
// 9.6 on. Zero before the first Resume. Confirmed may be called from any goroutine, also
// after Close.
func (s *Source) Confirmed() change.Position {
	s.fb.mu.Lock()
	defer s.fb.mu.Unlock()
	return change.Position{LSN: uint64(s.fb.flushed)}
}

// Close stops the stream, waits (up to stoppedWait or ctx) for its server process to release
// the slot, and closes the connections; the slot stays, confirmed up to the last finished
// batch.
func (s *Source) Close(ctx context.Context) error {
	s.stopStream(ctx)
	if pid := s.stoppedPID; pid != 0 && s.db != nil {
		// The next Source of the slot (a worker's new session after an error) would find
		// the slot active for this stream's process until it ends, and fail to start.
		_ = s.awaitStopped(ctx, pid)
		s.stoppedPID = 0
	}
	var err error
	if s.db != nil {
		err = s.db.Close(ctx)
		s.db = nil
	}
	for _, sp := range []*spool.Spool{s.fill, s.spare, s.held} {
		if sp != nil {
			_ = sp.Close()
		}
	}
	return err
}
