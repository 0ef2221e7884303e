package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/semaphore"
)

// A worker behind its queue reads the next batch ahead: once a large batch's events are all
// read (the target still applying its last rows and committing, the provider idle), a second
// connection asks skiff.peek_batch which tick range next_batch will open once this batch is
// finished, and reads that range's events into memory. When NextBatch then opens that very
// range, Events hands those rows on instead of querying again, so the provider's query and
// sort of a batch overlap the target's apply of the one before. A batch's events are those of
// the transactions visible at its end tick and not at its start tick: fixed once both ticks
// exist, whoever reads them and when. peek_batch answers only when the range cannot change
// any more (a later tick exists, so no tick cut meanwhile can be merged into it), and the
// read ahead is used only when NextBatch's ticks are the ones peeked.
//
// Only the raw rows are read ahead: they are decoded by Events, in order, with the layouts of
// the batch (decoding uses the Source's state, which belongs to the caller's goroutine).

// defaultPrefetchBytes bounds what one read ahead holds in memory.
const defaultPrefetchBytes = 64 << 20

// connCloseTimeout bounds the close of a read-ahead connection left in an unknown state.
const connCloseTimeout = 5 * time.Second

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

// prefetchPage is a page of rows read ahead and its weight in prefetch.mem.
type prefetchPage struct {
	rows   []rawEvent
	weight int64
}

// prefetch is one read ahead, running in its own goroutine on the Source's second connection.
type prefetch struct {
	prev   int64 // the tick it reads after: the end of the batch being applied
	cancel context.CancelFunc
	// ready is closed once the peek answered: tick is set, or none.
	ready chan struct{}
	tick  int64
	none  bool
	pages chan prefetchPage
	mem   *semaphore.Weighted
	max   int64
	done  chan struct{} // closed when the goroutine ended: err is set, the connection free
	err   error
	// noPeek: the provider has no skiff.peek_batch (schema before version 15).
	noPeek bool
}

// prefetchWanted reports whether a batch of n events read is worth reading the next one
// ahead: the worker is behind (batches as large as MaxEvents lets them be, or at least a chunk
// when every tick is a batch), and the provider may have peek_batch.
func (s *Source) prefetchWanted(n int64) bool {
	if s.cfg.ReadAhead == nil || s.noPeek {
		return false
	}
	least := int64(s.cfg.ChunkSize)
	if s.cfg.MaxEvents > 0 {
		least = max(least, s.cfg.MaxEvents/2)
	}
	return n >= least
}

// startPrefetch starts reading ahead the batch that next_batch opens after tick prev. The read
// outlives the call that starts it (Events): it ends with the next Events, Close, or when it
// is not wanted any more.
func (s *Source) startPrefetch(ctx context.Context, prev int64) {
	s.stopPrefetch()
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	limit := s.cfg.ReadAheadBytes
	if limit <= 0 {
		limit = defaultPrefetchBytes
	}
	p := &prefetch{
		prev:   prev,
		cancel: cancel,
		ready:  make(chan struct{}),
		pages:  make(chan prefetchPage, 1024),
		mem:    semaphore.NewWeighted(limit),
		max:    limit,
		done:   make(chan struct{}),
	}
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
		s.log.Debug("cannot read the next batch ahead: it is read when it comes", "after_tick", p.prev, "error", p.err)
	}
	if p.err != nil && s.raConn != nil {
		// The connection may be in the middle of a cancelled query: start afresh next time.
		ctx, cancel := context.WithTimeout(context.Background(), connCloseTimeout)
		_ = s.raConn.Close(ctx)
		cancel()
		s.raConn = nil
	}
}

// takePrefetch returns the read ahead of batch (prev, tick) when there is one, else nil
// (after stopping a read ahead of another range).
func (s *Source) takePrefetch(ctx context.Context, prev, tick int64) (*prefetch, error) {
	p := s.pre
	if p == nil {
		return nil, nil
	}
	select {
	case <-p.ready:
	case <-p.done:
	case <-ctx.Done():
		s.stopPrefetch()
		return nil, ctx.Err()
	}
	select {
	case <-p.ready:
		if !p.none && p.prev == prev && p.tick == tick {
			s.pre = nil
			return p, nil
		}
	default: // ended before its peek answered: failed
	}
	s.stopPrefetch()
	return nil, nil
}

// run peeks at the next batch and reads its rows into pages. It owns s.raConn (and touches
// nothing else of s but its configuration) until done is closed.
func (p *prefetch) run(ctx context.Context, s *Source) {
	defer close(p.done)
	defer close(p.pages)
	readyClosed := false
	markReady := func() {
		if !readyClosed {
			readyClosed = true
			close(p.ready)
		}
	}
	defer markReady()
	p.err = p.read(ctx, s, markReady)
	if p.err != nil && ctx.Err() != nil {
		p.err = ctx.Err()
	}
}

func (p *prefetch) read(ctx context.Context, s *Source, ready func()) error {
	if s.raConn == nil || s.raConn.IsClosed() {
		conn, err := s.cfg.ReadAhead(ctx)
		if err != nil {
			p.none = true
			return fmt.Errorf("open the read-ahead connection: %w", err)
		}
		s.raConn = conn
	}
	conn := s.raConn
	var (
		longSpan pgtype.Int8
		query    pgtype.Text
	)
	err := conn.QueryRow(ctx, `SELECT o_tick, o_long_span, o_sql FROM skiff.peek_batch($1, $2, $3, $4)`,
		s.cfg.Queue, s.cfg.Consumer, p.prev, s.cfg.MaxEvents).Scan(&p.tick, &longSpan, &query)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		p.none = true
		return nil
	case err != nil:
		p.none = true
		if errors.Is(wrap(err, "", nil), ErrNotInstalled) {
			p.noPeek = true
			return nil
		}
		return fmt.Errorf("peek at the next batch: %w", err)
	}
	if !query.Valid || s.cfg.LongTxEvents > 0 && longSpan.Int64 >= s.cfg.LongTxEvents {
		// The next batch has a transaction Events reads by itself.
		p.none = true
		return nil
	}
	ready()
	rows, err := conn.Query(ctx, query.String, pgx.QueryExecModeExec)
	if err != nil {
		return fmt.Errorf("read ahead ticks %d to %d: %w", p.prev, p.tick, err)
	}
	defer rows.Close()
	page := prefetchPage{rows: make([]rawEvent, 0, s.cfg.ChunkSize)}
	send := func() error {
		w := min(page.weight, p.max)
		if err := p.mem.Acquire(ctx, w); err != nil {
			return err
		}
		page.weight = w
		select {
		case p.pages <- page:
		case <-ctx.Done():
			return ctx.Err()
		}
		page = prefetchPage{rows: make([]rawEvent, 0, s.cfg.ChunkSize)}
		return nil
	}
	for rows.Next() {
		var r rawEvent
		var retry pgtype.Int4
		if err := rows.Scan(&r.id, nil, &r.txid, &r.op, &r.layout, &r.data, &r.extra, &retry); err != nil {
			return fmt.Errorf("read ahead ticks %d to %d: %w", p.prev, p.tick, err)
		}
		r.retried = retry.Valid
		page.rows = append(page.rows, r)
		page.weight += r.size()
		if len(page.rows) == cap(page.rows) {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read ahead ticks %d to %d: %w", p.prev, p.tick, err)
	}
	if len(page.rows) > 0 {
		return send()
	}
	return nil
}

// eventsAhead hands the rows read ahead by p to out, decoded, in their order.
func (s *Source) eventsAhead(ctx context.Context, p *prefetch, out *chunker) error {
	defer func() {
		p.cancel()
		<-p.done
		s.reap(p)
	}()
	for {
		var page prefetchPage
		var ok bool
		select {
		case page, ok = <-p.pages:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			break
		}
		for i := range page.rows {
			r := &page.rows[i]
			ev, err := s.decode(r.id, r.txid, r.op, r.layout, r.data, r.extra, r.retried)
			if err != nil {
				return fmt.Errorf("batch %d: %w", out.b.ID, err)
			}
			out.n++
			if err := out.add(ev); err != nil {
				return err
			}
		}
		p.mem.Release(page.weight)
	}
	<-p.done
	if p.err != nil {
		return fmt.Errorf("read batch %d ahead: %w", out.b.ID, p.err)
	}
	s.prefetched++
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
