package copier

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// A split copy (Config.SplitRows) copies one large table in ranges, several at once, all under
// the copy's one snapshot:
//   - the provider's snapshot transaction (tableCopy.snapshot) takes the copy point as any
//     copy does, then exports its snapshot (pg_export_snapshot, 9.2+) and stays open until
//     the copy ends;
//   - from PostgreSQL 14 on the provider, a plain table read without inheritance children is
//     cut into ranges of its pages (ctid ranges, read by a TID range scan: each range is a
//     sequential read of its pages, no index), whatever its key: the snapshot transaction
//     locks the table (ACCESS SHARE, so that no VACUUM FULL, CLUSTER or rewrite moves rows
//     between pages until the copy ends), reads its size in pages and cuts it into ranges of
//     equal page counts, about SplitRows rows each by the row estimate;
//   - otherwise (9.2 to 13, or a table read with its children) the key's min and max in that
//     snapshot cut [min, max] into ranges of equal width, about SplitRows rows each by the
//     row estimate, read through the key's index;
//   - either way the first and last ranges are open-ended, so every row falls in exactly one
//     (rows written after the snapshot are invisible to it wherever they are);
//   - Config.SplitJobs jobs, each with its own provider connection (REPEATABLE READ, READ ONLY,
//     SET TRANSACTION SNAPSHOT of the exported one: they all read what the copy point says the
//     copy holds) and target connection, take ranges one after the other: COPY (SELECT … WHERE
//     range) TO STDOUT piped into COPY dest FROM STDIN, one target transaction per range.
//
// Since the ranges are written by several target transactions, the destination is emptied in
// a transaction of its own that commits before they start (under the same barrier and lock
// as a copy in one stream), and the table is marked copied (Hooks.Copied) in a last one:
// meanwhile the destination's readers see it fill, and its lock no longer keeps other writers
// off (the worker's are: the table is in state copying). The target's indexes and constraints
// are left as they are, as in one stream. A copy that fails or is interrupted starts over as a
// whole: the ranges it committed are under a snapshot that is gone with its session, and the
// table's events are sorted by one copy point.
//
// Not split, in one stream as before (the copy logs why): a provider before 9.2 (no exported
// snapshots), before 14 a primary key that is not one integer column (int2, int4, int8),
// handlers without an SQL form, a merged destination, and a table estimated at no more than
// SplitRows rows.
type split struct {
	key      string // the primary key's one column; "" for page ranges (blocks)
	blocks   bool   // ranges of the table's pages (ctid), PostgreSQL 14+
	snapshot string // the exported snapshot the ranges import
	ranges   []keyRange
	inFlight atomic.Int64
	peak     atomic.Int64 // the most ranges in flight at once
}

// cond is range r's condition: over the key, or over ctid for page ranges.
func (s *split) cond(r keyRange) string {
	if s.blocks {
		return r.tidCond()
	}
	return r.cond(s.key)
}

// kind names the ranges in logs and errors.
func (s *split) kind() string {
	if s.blocks {
		return "page range"
	}
	return "key range"
}

// keyRange is a range of the key: lo ≤ key < hi, either bound absent when has* is false.
type keyRange struct {
	lo, hi       int64
	hasLo, hasHi bool
}

// cond is the range's condition over column key.
func (r keyRange) cond(key string) string {
	k := change.QuoteIdent(key)
	switch {
	case r.hasLo && r.hasHi:
		return k + " >= " + strconv.FormatInt(r.lo, 10) + " AND " + k + " < " + strconv.FormatInt(r.hi, 10)
	case r.hasLo:
		return k + " >= " + strconv.FormatInt(r.lo, 10)
	case r.hasHi:
		return k + " < " + strconv.FormatInt(r.hi, 10)
	}
	return "true"
}

// tidCond is the condition of a range of pages lo ≤ page < hi: over ctid, which a TID range
// scan (PostgreSQL 14+) reads without an index.
func (r keyRange) tidCond() string {
	tid := func(page int64) string { return "'(" + strconv.FormatInt(page, 10) + ",0)'::pg_catalog.tid" }
	switch {
	case r.hasLo && r.hasHi:
		return "ctid >= " + tid(r.lo) + " AND ctid < " + tid(r.hi)
	case r.hasLo:
		return "ctid >= " + tid(r.lo)
	case r.hasHi:
		return "ctid < " + tid(r.hi)
	}
	return "true"
}

func (r keyRange) String() string {
	lo, hi := "-∞", "+∞"
	if r.hasLo {
		lo = strconv.FormatInt(r.lo, 10)
	}
	if r.hasHi {
		hi = strconv.FormatInt(r.hi, 10)
	}
	return "[" + lo + ", " + hi + ")"
}

// maxRanges bounds the ranges of one table.
const maxRanges = 1024

// splitRanges cuts [lo, hi] into n ranges of equal width (fewer when it holds fewer values),
// the first open below and the last open above.
func splitRanges(lo, hi int64, n int64) []keyRange {
	span := uint64(hi) - uint64(lo) // hi ≥ lo: exact in uint64
	if span < uint64(n) {
		n = int64(span) + 1
	}
	if n <= 1 {
		return []keyRange{{}}
	}
	step := span / uint64(n)
	if span%uint64(n) != 0 || step == 0 {
		step++
	}
	out := make([]keyRange, 0, n)
	prev := keyRange{}
	for i := int64(1); i < n; i++ {
		if step > span/uint64(i) { // i·step > span
			break
		}
		b := int64(uint64(lo) + uint64(i)*step)
		r := prev
		r.hi, r.hasHi = b, true
		out = append(out, r)
		prev = keyRange{lo: b, hasLo: true}
	}
	return append(out, prev)
}

// decideSplit decides, once the plan and the row estimate are known, whether the table is
// copied in ranges (c.split: of pages from 14, else of the key) and logs why not when it is
// large enough to be.
func (c *tableCopy) decideSplit(ctx context.Context) error {
	limit, est := c.cfg.SplitRows, c.st.estimate.Load()
	if limit <= 0 || est <= limit {
		return nil
	}
	var why, key string
	v := pg.ServerVersion(c.prov)
	switch {
	case v < 90200:
		why = fmt.Sprintf("the provider (server_version_num %d) cannot export snapshots (9.2+)", v)
	case c.merge != "":
		why = "a merged copy writes by key through a stage"
	case !c.plan.sql:
		why = "its handlers have no SQL form (rows run through them in Go)"
	}
	if why == "" && v >= 140000 {
		blocks, err := c.pageRanges(ctx)
		if err != nil {
			return err
		}
		if blocks {
			c.split = &split{blocks: true}
			return nil
		}
	}
	if why == "" {
		var ok bool
		if key, ok = c.plan.integerKey(); !ok {
			why = "its primary key is not one integer column"
			if v >= 140000 {
				why += ", and it is read with its inheritance children or partitions (page ranges are a plain table's)"
			} else {
				why += " (any key splits into page ranges from PostgreSQL 14)"
			}
		}
	}
	if why != "" {
		c.log.Info("copy not split: one stream", "reason", why, "estimated_rows", est, "split_rows", limit)
		return nil
	}
	c.split = &split{key: key}
	return nil
}

// pageRanges reports whether the source can be read in ranges of its pages: a plain table
// read without children (the ctid of a child's row is of the child's pages).
func (c *tableCopy) pageRanges(ctx context.Context) (bool, error) {
	relkind, children, err := relationKind(ctx, c.prov, c.plan.sel.Source)
	if err != nil {
		return false, fmt.Errorf("provider: %w", err)
	}
	return relkind == "r" && (c.plan.sel.Only || !children), nil
}

// integerKey returns the provider table's primary key column when it is one column of an
// integer type.
func (p *plan) integerKey() (string, bool) {
	if len(p.pkey) != 1 {
		return "", false
	}
	for _, col := range p.src {
		if col.Name == p.pkey[0] {
			switch col.Type {
			case "int2", "int4", "int8":
				return col.Name, true
			}
		}
	}
	return "", false
}

// planRanges cuts the ranges: page ranges from the table's size, locked against rewrites
// until the copy ends; key ranges from the key's bounds in the copy's snapshot.
func (c *tableCopy) planRanges(ctx context.Context) error {
	from := c.plan.sel.Source.String()
	if c.plan.sel.Only {
		from = "ONLY " + from
	}
	var lo, hi *int64
	var q string
	if c.split.blocks {
		// ACCESS SHARE until the snapshot transaction ends: no VACUUM FULL, CLUSTER or
		// rewriting ALTER TABLE moves rows between pages while the ranges are read.
		q = "LOCK TABLE ONLY " + c.plan.sel.Source.String() + " IN ACCESS SHARE MODE"
		if _, err := pg.Exec(ctx, c.prov.PgConn(), q); err != nil {
			return fmt.Errorf("provider: %s: %w", q, err)
		}
		q = "SELECT 0::int8, pg_catalog.pg_relation_size($1::text::pg_catalog.regclass) / pg_catalog.current_setting('block_size')::int8 - 1"
		if err := c.prov.QueryRow(ctx, q, c.plan.sel.Source.String()).Scan(&lo, &hi); err != nil {
			return fmt.Errorf("provider: pages of %s: %s: %w", c.plan.sel.Source, q, err)
		}
		if *hi < 0 {
			lo, hi = nil, nil
		}
	} else {
		k := change.QuoteIdent(c.split.key)
		q = "SELECT min(" + k + ")::int8, max(" + k + ")::int8 FROM " + from
		if err := c.prov.QueryRow(ctx, q).Scan(&lo, &hi); err != nil {
			return fmt.Errorf("provider: key range of %s: %s: %w", c.plan.sel.Source, q, err)
		}
	}
	if lo == nil || hi == nil {
		c.split.ranges = []keyRange{{}}
		return nil
	}
	limit := c.cfg.SplitRows
	n := min((c.st.estimate.Load()+limit-1)/limit, maxRanges)
	c.split.ranges = splitRanges(*lo, *hi, max(n, 2))
	return nil
}

// copyRanges copies the ranges, Config.SplitJobs at once; the first failure cancels the others.
func (c *tableCopy) copyRanges(ctx context.Context) error {
	if err := c.planRanges(ctx); err != nil {
		return err
	}
	s := c.split
	jobs := min(max(c.cfg.SplitJobs, 1), len(s.ranges))
	c.st.ranges.Store(int64(len(s.ranges)))
	if s.blocks {
		c.log.Info("copy split into page ranges", "ranges", len(s.ranges), "jobs", jobs, "snapshot", s.snapshot)
	} else {
		c.log.Info("copy split into key ranges", "key", s.key, "ranges", len(s.ranges), "jobs", jobs, "snapshot", s.snapshot)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make([]error, jobs)
	var wg sync.WaitGroup
	for j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[j] = c.rangeJob(ctx, next); errs[j] != nil {
				cancel()
			}
		}()
	}
feed:
	for i := range s.ranges {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	// The failure that cancelled the others, not their cancellation.
	var canceled error
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		if err != nil {
			canceled = err
		}
	}
	if canceled == nil && ctx.Err() != nil {
		canceled = ctx.Err()
	}
	return canceled
}

// rangeJob opens a provider connection that imports the copy's snapshot and a target
// connection, and copies the ranges it is handed until next is closed.
func (c *tableCopy) rangeJob(ctx context.Context, next <-chan int) error {
	prov, err := pg.ConnectConfig(ctx, c.cfg.Provider.Copy())
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	tgt, err := pg.ConnectConfig(ctx, c.cfg.Target.Copy())
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := beginRead(ctx, prov, pg.ServerVersion(tgt), c.split.snapshot); err != nil {
		return err
	}
	for i := range next {
		if err := c.copyRange(ctx, prov, tgt, i); err != nil {
			return err // the caller cancels ctx: the feeder stops
		}
	}
	return nil
}

// copyRange copies range i in one target transaction.
func (c *tableCopy) copyRange(ctx context.Context, prov, tgt *pgx.Conn, i int) error {
	s := c.split
	r := s.ranges[i]
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	start := time.Now()
	rp := *c.plan
	rp.keyRange = s.cond(r)
	tx, err := tgt.Begin(ctx)
	if err != nil {
		return fmt.Errorf("target: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if rp.replica {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return fmt.Errorf("target: %w", err)
		}
	}
	if err := guardDest(ctx, tx, rp.dest.String(), rp.replica, true); err != nil {
		return err
	}
	var got tableProgress
	if err := pipe(ctx, prov, tx, &rp, rp.dest, c.st, &got); err != nil {
		return fmt.Errorf("%s %d of %d %s: %w", s.kind(), i+1, len(s.ranges), r, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%s %d of %d %s: target: commit: %w", s.kind(), i+1, len(s.ranges), r, err)
	}
	done := c.st.rangesDone.Add(1)
	c.log.Debug(s.kind()+" copied", "range", i+1, "of", len(s.ranges), "bounds", r.String(), "rows", got.rows.Load(),
		"elapsed", time.Since(start).Round(time.Millisecond), "ranges_done", done)
	return nil
}
