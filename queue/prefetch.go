package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// A worker behind its queue reads the next batch ahead: once a large batch's events are all
// read (the target still applying its last rows and committing, the provider idle), a second
// connection asks skiff.peek_batch which tick range next_batch will open after this batch's
// end tick, and reads that range's events into memory. When NextBatch then opens that very
// range, Events hands those rows on instead of querying again, so the provider's read of a
// batch overlaps the target's apply of the one before. A batch's events are those of the
// transactions visible at its end tick and not at its start tick: fixed once both ticks
// exist, whoever reads them and when. peek_batch answers only when the range cannot change
// any more (a later tick exists, so no tick cut meanwhile can be merged into it), and the
// read ahead is used only when NextBatch's ticks are the ones peeked.
//
// The rows are read unsorted and sorted here by ev_id: the provider's sort of a batch cost it
// more than its scan (17,000 events on 15: 12 ms scan, 26 ms with the ORDER BY, 35 ms when
// the sort spills past work_mem), and the whole batch is held anyway. A batch larger than
// ReadAheadBytes is not read ahead (Events reads it as usual). Only the raw rows are read
// ahead: they are decoded by Events, in order, with the layouts of the batch (decoding uses
// the Source's state, which belongs to the caller's goroutine).

// defaultPrefetchBytes bounds what one read ahead holds in memory.
const defaultPrefetchBytes = 32 << 20

// connCloseTimeout bounds the close of a read-ahead connection left in an unknown state.
const connCloseTimeout = 5 * time.Second

// errPrefetchTooLarge: the batch holds more than ReadAheadBytes.
var errPrefetchTooLarge = errors.New("the batch is larger than the read-ahead's memory")

// rawEvent is an event row as read, before decoding.
type rawEvent struct {
	id, txid    int64
	op          string
	layout      int32
	data, extra pgtype.Text
	retried     bool
}

// size is about what the row holds in memory.
func (r *rawEvent) size() int64 { return int64(len(r.data.String)+len(r.extra.String)) + 96 }

// aheadBatch is a batch read ahead: the rows of the tick range (prev, tick] in ev_id order.
type aheadBatch struct {
	prev, tick int64
	rows       []rawEvent
}

// prefetch is a read ahead of the batch after tick prev, running in its own goroutine on the
// Source's second connection; the batch is handed over through ready.
type prefetch struct {
	prev   int64 // the tick it reads after: the end of the batch being applied
	cancel context.CancelFunc
	ready  chan aheadBatch
	done   chan struct{} // closed when the goroutine ended: err and noPeek are set, the connection free
	err    error         // why it stopped, when not for lack of a final range
	// noPeek: the provider has no skiff.peek_batch (schema before version 15).
	noPeek bool
}

// prefetchWanted reports whether a batch of n events read is worth reading the next one
// ahead: the worker is behind (batches at least half as large as MaxEvents lets them be, or
// at least a chunk when every tick is a batch), and the provider may have peek_batch.
func (s *Source) prefetchWanted(n int64) bool {
	if s.cfg.ReadAhead == nil || s.noPeek {
		return false
	}
	least := int64(s.cfg.ChunkSize)
	if s.cfg.MaxEvents > 0 {
		least = max(s.cfg.MaxEvents/2, 1)
	}
	return n >= least
}

// startPrefetch starts reading ahead the batch that next_batch opens after tick prev, unless a
// read ahead runs already. The read outlives the call that starts it (Events): it is taken by
// the next Events, dropped when that Events asks for another range, or ended by Close.
func (s *Source) startPrefetch(ctx context.Context, prev int64) {
	if s.pre != nil {
		return // reading ahead already
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &prefetch{prev: prev, cancel: cancel, ready: make(chan aheadBatch), done: make(chan struct{})}
	s.pre = p
	go p.run(pctx, s)
}

// stopPrefetch ends the read ahead under way, if any, and waits for its goroutine.
func (s *Source) stopPrefetch() {
	p := s.pre
	if p == nil {
		return
	}
	s.pre = nil
	p.cancel()
	<-p.done
	s.reap(p)
}

// reap takes what an ended read ahead says about the provider and the connection.
func (s *Source) reap(p *prefetch) {
	if p.noPeek {
		s.noPeek = true
		s.log.Debug("the provider has no skiff.peek_batch (schema before version 15): batches are not read ahead")
	}
	if p.err != nil && !errors.Is(p.err, context.Canceled) {
		s.log.Debug("the next batch was not read ahead: it is read when it comes", "reason", p.err)
	}
	if p.err != nil && !errors.Is(p.err, errPrefetchTooLarge) && s.raConn != nil {
		// The connection may be in the middle of a cancelled query: start afresh next time.
		// (A batch found too large left it idle, or closed it: read redials a closed one.)
		ctx, cancel := context.WithTimeout(context.Background(), connCloseTimeout)
		_ = s.raConn.Close(ctx)
		cancel()
		s.raConn = nil
	}
}

// takePrefetch returns the rows read ahead for batch (prev, tick], in ev_id order, when they
// are; else nil (after stopping a read ahead of another range). It waits for the read ahead
// to hand over its next batch, or to end.
func (s *Source) takePrefetch(ctx context.Context, prev, tick int64) ([]rawEvent, error) {
	p := s.pre
	if p == nil {
		return nil, nil
	}
	if p.prev != prev {
		s.stopPrefetch()
		return nil, nil
	}
	select {
	case ab := <-p.ready:
		s.stopPrefetch() // its one batch handed over, it ends
		if ab.prev == prev && ab.tick == tick {
			s.prefetched++
			return ab.rows, nil
		}
		return nil, nil
	case <-p.done:
		s.pre = nil
		s.reap(p)
		return nil, nil
	case <-ctx.Done():
		s.stopPrefetch()
		return nil, ctx.Err()
	}
}

// run peeks at the next batch, reads its rows and hands them over. It owns s.raConn (and
// touches nothing else of s but its configuration) until done is closed. One batch ahead is
// enough: reading two ahead (tried: the reader going on with the batch after the one it hands
// over) only took CPU from the target's apply on 2 cores, 1 M inserts 268k -> 236k rows/s.
func (p *prefetch) run(ctx context.Context, s *Source) {
	defer close(p.done)
	ab, err := p.read(ctx, s, p.prev)
	if err != nil {
		p.err = err
		if ctx.Err() != nil {
			p.err = ctx.Err()
		}
		return
	}
	if ab == nil {
		return
	}
	select {
	case p.ready <- *ab:
	case <-ctx.Done():
	}
}

// read peeks at the batch next_batch opens after tick prev and reads its rows; nil when there
// is none to read ahead.
func (p *prefetch) read(ctx context.Context, s *Source, prev int64) (*aheadBatch, error) {
	if s.raConn == nil || s.raConn.IsClosed() {
		conn, err := s.cfg.ReadAhead(ctx)
		if err != nil {
			return nil, fmt.Errorf("open the read-ahead connection: %w", err)
		}
		s.raConn = conn
	}
	conn := s.raConn
	var (
		tick             int64
		events, longSpan pgtype.Int8
		query            pgtype.Text
	)
	err := conn.QueryRow(ctx, `SELECT o_tick, o_events, o_long_span, o_sql FROM skiff.peek_batch($1, $2, $3, $4)`,
		s.cfg.Queue, s.cfg.Consumer, prev, s.cfg.MaxEvents).Scan(&tick, &events, &longSpan, &query)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		if errors.Is(wrap(err, "", nil), ErrNotInstalled) {
			p.noPeek = true
			return nil, nil
		}
		return nil, fmt.Errorf("peek at the batch after tick %d: %w", prev, err)
	}
	if !query.Valid || s.cfg.LongTxEvents > 0 && longSpan.Int64 >= s.cfg.LongTxEvents {
		return nil, nil // it has a transaction Events reads by itself
	}
	limit := s.cfg.ReadAheadBytes
	if limit <= 0 {
		limit = defaultPrefetchBytes
	}
	if events.Int64*(&rawEvent{}).size() > limit {
		return nil, errPrefetchTooLarge
	}
	rows, err := conn.Query(ctx, withoutEvTime(query.String), pgx.QueryExecModeExec)
	if err != nil {
		return nil, fmt.Errorf("read ahead ticks %d to %d: %w", prev, tick, err)
	}
	defer rows.Close()
	out := make([]rawEvent, 0, min(max(events.Int64, 0), 1<<16))
	var size int64
	for rows.Next() {
		var r rawEvent
		var retry pgtype.Int4
		if err := rows.Scan(&r.id, nil, &r.txid, &r.op, &r.layout, &r.data, &r.extra, &retry); err != nil {
			return nil, fmt.Errorf("read ahead ticks %d to %d: %w", prev, tick, err)
		}
		r.retried = retry.Valid
		if size += r.size(); size > limit {
			// Closed rather than read to the end (which rows.Close would do); reap forgets it.
			_ = conn.Close(ctx)
			return nil, errPrefetchTooLarge
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read ahead ticks %d to %d: %w", prev, tick, err)
	}
	slices.SortFunc(out, func(a, b rawEvent) int { return cmp.Compare(a.id, b.id) })
	return &aheadBatch{prev: prev, tick: tick, rows: out}, nil
}

// eventsAhead hands rows (read ahead, in ev_id order) to out, decoded.
func (s *Source) eventsAhead(rows []rawEvent, out *chunker) error {
	for i := range rows {
		r := &rows[i]
		ev, err := s.decode(r.id, r.txid, r.op, r.layout, r.data, r.extra, r.retried)
		if err != nil {
			return fmt.Errorf("batch %d: %w", out.b.ID, err)
		}
		*r = rawEvent{} // the row's strings now belong to the event alone
		out.n++
		if err := out.add(ev); err != nil {
			return err
		}
	}
	return nil
}

// Close ends a read ahead under way and closes its connection. The Source's own connection
// is the caller's.
func (s *Source) Close(ctx context.Context) error {
	s.stopPrefetch()
	if s.raConn == nil {
		return nil
	}
	err := s.raConn.Close(ctx)
	s.raConn = nil
	return err
}
