package logical

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// wal is one XLogData message: the plugin's output for one change, begin or commit.
type wal struct {
	start LSN // WALStart: for test_decoding's COMMIT, the end of the commit record
	data  []byte
}

// feedback is what the reader reports to the server, shared between the reader goroutine and
// the Source's (the worker's) goroutine.
type feedback struct {
	mu sync.Mutex
	// flushed is the position reported as written, flushed and applied: the End of the last
	// batch the target committed, or the server's WAL end when nothing was pending.
	flushed LSN
	// sent counts the messages the reader handed to the Source; settled is the count the
	// Source had consumed when it last had nothing unapplied (no open batch, no transaction
	// begun or buffered). sent == settled: every message received is applied or empty.
	sent, settled int64
}

func (f *feedback) confirm(lsn LSN) {
	f.mu.Lock()
	if lsn > f.flushed {
		f.flushed = lsn
	}
	f.mu.Unlock()
}

func (f *feedback) settle(consumed int64) {
	f.mu.Lock()
	f.settled = consumed
	f.mu.Unlock()
}

// stream owns a replication connection in copy-both mode. Two goroutines take turns reading
// it, whichever holds the connection (the turn passes through toSource and toReader):
//   - the reader goroutine, while the Source is busy elsewhere (applying a batch): it hands
//     XLogData to the Source through msgs, answers keepalives and sends standby status updates
//     (every interval, at once when asked through wake, and when an idle stream moves forward),
//     so that a long apply never lets wal_sender_timeout end the stream;
//   - the Source itself, inside NextBatch (take, step, give): it reads and decodes in one
//     goroutine. A hand-off per message between two goroutines woke a second thread of the Go
//     scheduler for each one: with four workers on two cores, a slot's trickle of changes cost
//     each worker ≈ 64 µs of CPU per change (3 µs when busy), and the walsenders were starved.
//
// next and nextIdle are the holder's: only the goroutine holding the connection uses them.
type stream struct {
	conn     *pgconn.PgConn
	fb       *feedback
	interval time.Duration
	msgs     chan wal
	wake     chan chan struct{}
	done     chan struct{}
	err      error // why the reader ended; read after done is closed
	cancel   context.CancelFunc
	ctx      context.Context // the reader's: status updates are sent under it, by either holder

	want     atomic.Bool   // the Source asks for the connection
	toSource chan struct{} // the reader gives the connection up
	toReader chan struct{} // the Source gives it back (capacity 1)
	next     time.Time     // the next periodic status update
	nextIdle time.Time     // the next idle confirmation
	co       coalescer     // busy or idle: how long a wait on the socket may be (coalesce.go)
}

// poll bounds how long the reader waits on the socket before it looks at wake requests.
const poll = 100 * time.Millisecond

// idleConfirm is how often an idle stream asks the server for its WAL end (a status update
// with a reply requested), to confirm it.
const idleConfirm = time.Second

func newStream(conn *pgconn.PgConn, fb *feedback, interval time.Duration, buffer int) *stream {
	return &stream{
		conn:     conn,
		fb:       fb,
		interval: interval,
		msgs:     make(chan wal, buffer),
		wake:     make(chan chan struct{}, 1),
		done:     make(chan struct{}),
		toSource: make(chan struct{}),
		toReader: make(chan struct{}, 1),
		co:       coalescer{lowat: lowWaterMark(conn.Conn())},
	}
}

func (st *stream) start(ctx context.Context) {
	st.ctx, st.cancel = context.WithCancel(ctx)
	st.next = time.Now().Add(st.interval)
	st.nextIdle = time.Now().Add(idleConfirm)
	go func() {
		defer close(st.done)
		st.err = st.run(st.ctx)
	}()
}

// stop ends the reader and closes the connection.
func (st *stream) stop(ctx context.Context) {
	st.cancel()
	<-st.done
	_ = st.conn.Close(ctx)
}

// status sends the standby status update: write = flush = apply = flushed.
func (st *stream) status(ctx context.Context) error { return st.statusReply(ctx, false) }

// statusReply sends the standby status update, asking the server for a keepalive in reply
// when reply is set: its WAL end lets an idle stream confirm (see the keepalive case in step).
func (st *stream) statusReply(ctx context.Context, reply bool) error {
	st.fb.mu.Lock()
	f := st.fb.flushed
	st.fb.mu.Unlock()
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, st.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: f, WALFlushPosition: f, WALApplyPosition: f, ReplyRequested: reply,
	}); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

// confirmNow asks the reader to send a status update and waits until it is sent. The
// request is queued, then the reader's wait on the socket is cut short (a read deadline in
// the past: net.Conn allows it from another goroutine), so that Finish does not wait for the
// poll interval. Only while the reader holds the connection (outside NextBatch).
func (st *stream) confirmNow(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case st.wake <- ack:
	case <-st.done:
		return st.err
	case <-ctx.Done():
		return ctx.Err()
	}
	_ = st.conn.Conn().SetReadDeadline(time.Now())
	select {
	case <-ack:
		return nil
	case <-st.done:
		return st.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// take gets the connection for the Source: the reader stops at its next turn (its wait on
// the socket cut short as in confirmNow) and gives it up. Messages the reader hands over
// meanwhile, and those still queued, go to keep, in order: the Source decodes them before it
// reads the connection itself.
func (st *stream) take(ctx context.Context, keep func(wal)) error {
	st.want.Store(true)
	_ = st.conn.Conn().SetReadDeadline(time.Now())
	for got := false; !got; {
		select {
		case <-st.toSource:
			got = true
		case w := <-st.msgs:
			keep(w)
		case <-st.done:
			// What the reader received before it failed comes first.
			st.drain(keep)
			return st.err
		case <-ctx.Done():
			// want stays set: the reader gives the connection up all the same, and the
			// next take receives it.
			return ctx.Err()
		}
	}
	st.drain(keep)
	return nil
}

// drain hands keep the messages the reader queued and the Source has not taken.
func (st *stream) drain(keep func(wal)) {
	for {
		select {
		case w := <-st.msgs:
			keep(w)
		default:
			return
		}
	}
}

// give hands the connection back to the reader.
func (st *stream) give() {
	st.want.Store(false)
	st.toReader <- struct{}{}
}

// run is the reader goroutine: it reads for the Source until the Source takes the
// connection, then waits for it back.
func (st *stream) run(ctx context.Context) error {
	for {
		for !st.want.Load() {
			w, ok, err := st.step(ctx, true, time.Time{})
			if err != nil {
				return err
			}
			if ok {
				if err := st.hand(ctx, w); err != nil {
					return err
				}
			}
		}
		select {
		case st.toSource <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-st.toReader:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// step is one turn of whichever goroutine holds the connection: the periodic status update
// and the idle confirmation when due, a queued wake request, then one receive, waiting at
// most until the earliest of those, poll, and until (when not zero). It answers a keepalive
// and returns the XLogData received, if any. The reader (reader set) also stops waiting
// when the Source asks for the connection.
func (st *stream) step(ctx context.Context, reader bool, until time.Time) (wal, bool, error) {
	if !time.Now().Before(st.next) {
		if err := st.status(st.ctx); err != nil {
			return wal{}, false, err
		}
		st.next = time.Now().Add(st.interval)
	}
	if !time.Now().Before(st.nextIdle) {
		// Idle (every message received is settled): ask the server where it stands,
		// rather than wait for its own keepalive (wal_sender_timeout / 2), so that an idle
		// slot confirms within a second or so: the WAL behind it is recycled, and a copy
		// is seen as passed (its table goes in-sync) without waiting for a write.
		st.fb.mu.Lock()
		idle := st.fb.sent == st.fb.settled
		st.fb.mu.Unlock()
		if idle {
			if err := st.statusReply(st.ctx, true); err != nil {
				return wal{}, false, err
			}
		}
		st.nextIdle = time.Now().Add(idleConfirm)
	}
	select {
	case ack := <-st.wake:
		err := st.status(st.ctx)
		close(ack)
		if err != nil {
			return wal{}, false, err
		}
		st.next = time.Now().Add(st.interval)
	default:
	}
	if err := ctx.Err(); err != nil {
		return wal{}, false, err
	}
	now := time.Now()
	deadline := st.co.bound(now, now.Add(poll))
	for _, t := range []time.Time{st.next, st.nextIdle, until} {
		if !t.IsZero() && t.Before(deadline) {
			deadline = t
		}
	}
	// The wait is bounded by the socket's read deadline, not by a context: pgconn
	// watches a cancellable context with a goroutine of its own per call, a handoff per
	// message that made the stream several times slower. Only context.Background()
	// itself is not watched. A timeout leaves the connection usable (a message read in
	// part is kept).
	if err := st.conn.Conn().SetReadDeadline(deadline); err != nil {
		return wal{}, false, fmt.Errorf("receive: %w", err)
	}
	if len(st.wake) > 0 || reader && st.want.Load() {
		// A request came before the deadline was set, which would undo its interruption.
		return wal{}, false, nil
	}
	msg, err := st.conn.ReceiveMessage(context.Background())
	if err != nil {
		if ctx.Err() != nil {
			return wal{}, false, ctx.Err()
		}
		if pgconn.Timeout(err) {
			st.co.waited()
			return wal{}, false, nil
		}
		return wal{}, false, fmt.Errorf("receive: %w", err)
	}
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return wal{}, false, nil
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return wal{}, false, fmt.Errorf("keepalive: %w", err)
			}
			// Idle: every message received is applied (or was an empty transaction), so
			// nothing before the server's WAL end is owed to the target. Confirming it lets
			// the server recycle WAL behind a slot whose tables are not written.
			st.fb.mu.Lock()
			moved := st.fb.sent == st.fb.settled && pkm.ServerWALEnd > st.fb.flushed
			if moved {
				st.fb.flushed = pkm.ServerWALEnd
			}
			st.fb.mu.Unlock()
			if pkm.ReplyRequested || moved {
				if err := st.status(st.ctx); err != nil {
					return wal{}, false, err
				}
				st.next = time.Now().Add(st.interval)
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return wal{}, false, fmt.Errorf("xlog data: %w", err)
			}
			st.fb.mu.Lock()
			st.fb.sent++
			st.fb.mu.Unlock()
			st.co.got(time.Now())
			return wal{start: x.WALStart, data: append([]byte(nil), x.WALData...)}, true, nil
		}
	case *pgproto3.ErrorResponse:
		return wal{}, false, pgconn.ErrorResponseToPgError(msg)
	case *pgproto3.CopyDone:
		return wal{}, false, errors.New("the server ended the replication stream")
	}
	return wal{}, false, nil
}

// hand passes w to the Source, sending status updates while it waits (the Source may be busy
// applying a batch for longer than wal_sender_timeout), until the Source takes the
// connection (take then receives w).
func (st *stream) hand(ctx context.Context, w wal) error {
	select {
	case st.msgs <- w:
		return nil
	default:
	}
	for {
		t := time.NewTimer(time.Until(st.next))
		select {
		case st.msgs <- w:
			t.Stop()
			return nil
		case ack := <-st.wake:
			t.Stop()
			err := st.status(ctx)
			close(ack)
			if err != nil {
				return err
			}
			st.next = time.Now().Add(st.interval)
		case <-t.C:
			if err := st.status(ctx); err != nil {
				return err
			}
			st.next = time.Now().Add(st.interval)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
