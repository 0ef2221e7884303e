// Package compare checks that provider and target tables hold the same rows, without pulling
// a table into memory: each side computes a row count and a checksum over the md5 of every
// row's canonical text, in the database, in chunks of key ranges when the key allows it. For
// small tables it can also list the keys that differ, by streaming key and row hash from both
// sides in the same order and merging.
//
// The canonical text of a row is the same on every server version from PostgreSQL 8.4 on
// (see valueExpr): sessions come from internal/pg (ISO dates, postgres intervals) and compare
// sets TimeZone to UTC; floats and bytea are hashed through their binary form in hex.
// Known limits: float values inside arrays or composites, money, and geometric types are
// hashed through their text form, which can differ between major versions.
package compare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/pg"
)

// Pair is a provider table and the target table it is replicated to.
type Pair struct {
	Source change.Table
	Dest   change.Table
	// Where, when set, is the capture's row filter (skiff table add --where): a boolean SQL
	// expression over the provider table's columns. Only provider rows it keeps are compared.
	Where string
	// Key, when set, lists the key columns events carry (the capture's --key); empty means
	// the provider table's primary key.
	Key []string
	// SourceOnly reads the provider table without its inheritance children (ONLY): its capture
	// covers its own rows only (a capture made before skiff captured children, whose children
	// may be captured, and compared, on their own). A partitioned table, or one captured with
	// its children, is compared whole: each row once.
	SourceOnly bool
	// Handler, when set, is the table's handler chain as the worker runs it
	// (handlers.Registry.ForRoute: the rename to Dest included): the target is compared with
	// what it makes of the provider's rows, in the table it sends them to. With an SQL form
	// (handlers.SQLHandler) that is a query on the provider; otherwise every provider row is
	// run through it in Go, the rows it keeps written into a temporary table on the target and
	// checksummed there. Nil: the rows go to Dest unchanged.
	Handler handlers.Handler
	// Merged: the target table is shared with other providers' subscriptions (subscribe
	// --merge). The comparison then checks that every provider row is on the target with the
	// same values; target rows whose key the provider lacks are counted as other providers'
	// (Result.OtherRows) and are no difference. Merged tables are compared row by row (key and
	// row hash streamed from both sides), never by checksums. Not with a handler without SQL
	// form (an error).
	Merged bool
}

// String names the pair for messages: "src" or "src → dest" when the names differ.
func (p Pair) String() string {
	if p.Source == p.Dest {
		return p.Source.String()
	}
	return p.Source.String() + " → " + p.Dest.String()
}

// Config says what to compare and how.
type Config struct {
	// Provider and Target are the connection settings of both sides (from pg.ParseConfig).
	Provider, Target *pgx.ConnConfig
	// Pairs are the tables to compare.
	Pairs []Pair
	// Rows lists the differing keys of tables that differ (streams every row's key and hash;
	// meant for small tables).
	Rows bool
	// MaxRowDiffs caps the keys listed per table; 0 means 100.
	MaxRowDiffs int
	// Parallel is how many tables are compared at once; 0 means 2.
	Parallel int
	// ChunkKeys is the span of key values one checksum query covers when the key is a single
	// integer column; 0 means 1,000,000. Chunks bound each query's run time and give progress.
	ChunkKeys int64
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Sum is a side's row count and checksum of one table.
type Sum struct {
	Rows int64
	Hash string // decimal sums of the two 64-bit halves of the row md5s, "h1/h2"
}

// RowDiff is a key whose row differs: missing on a side or with different values.
type RowDiff struct {
	Key  string // the key as a ROW literal, e.g. (42) or ("a b",7)
	Kind string // "missing on target", "missing on provider" or "different"
	// Values are the key columns' values as text (the output of their types), of the side
	// that has the row (the provider's when both have it); nil when the comparison ran
	// through handlers in Go.
	Values []string
}

// Result is the outcome for one pair.
type Result struct {
	Pair     Pair
	Provider Sum
	Target   Sum
	Equal    bool
	// Columns lists the columns compared (those both sides have); Skipped the ones only one
	// side has.
	Columns []string
	Skipped []string
	// Diffs holds the differing keys when Config.Rows is set; Truncated says more were left out.
	Diffs     []RowDiff
	Truncated bool
	// OtherRows counts, for a merged pair, the target rows whose key the provider lacks:
	// other providers' rows (no difference).
	OtherRows int64
	Err       error // the table could not be compared (counts as different)
	Elapsed   time.Duration
}

// Run compares every pair and returns one result per pair, in the order of cfg.Pairs. An error
// is returned only when the comparison could not run at all (e.g. a side is unreachable);
// a table that could not be compared has Result.Err set.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 2
	}
	if cfg.MaxRowDiffs <= 0 {
		cfg.MaxRowDiffs = 100
	}
	if cfg.ChunkKeys <= 0 {
		cfg.ChunkKeys = 1_000_000
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Parallel > len(cfg.Pairs) {
		cfg.Parallel = max(len(cfg.Pairs), 1)
	}
	results := make([]Result, len(cfg.Pairs))
	jobs := make(chan int)
	errs := make(chan error, cfg.Parallel)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < cfg.Parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := openSides(ctx, cfg)
			if err != nil {
				errs <- err
				cancel()
				return
			}
			defer s.close()
			for i := range jobs {
				results[i] = s.compare(ctx, cfg, cfg.Pairs[i])
			}
		}()
	}
feed:
	for i := range cfg.Pairs {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// sides is one connection to each side.
type sides struct {
	p, t *pgx.Conn
}

func openSides(ctx context.Context, cfg Config) (*sides, error) {
	p, err := connect(ctx, cfg.Provider)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	t, err := connect(ctx, cfg.Target)
	if err != nil {
		p.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("target: %w", err)
	}
	return &sides{p: p, t: t}, nil
}

func connect(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pg.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, err
	}
	// timestamptz text depends on the session's time zone; both sides must agree.
	if _, err := conn.Exec(ctx, "SET TimeZone = 'UTC'"); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("set TimeZone on %s: %w", pg.Describe(cfg), err)
	}
	// Every name compare writes is schema-qualified; functions and operators, its own and a
	// capture filter's, resolve in pg_catalog only, as in the capture function: one that a
	// writer created in public never runs with the operator's rights (docs/security.md).
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog, pg_temp"); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("set search_path on %s: %w", pg.Describe(cfg), err)
	}
	return conn, nil
}

func (s *sides) close() {
	s.p.Close(context.Background())
	s.t.Close(context.Background())
}

// both runs fp on the provider and ft on the target at the same time.
func both(fp, ft func() error) (error, error) {
	var ep, et error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ep = fp() }()
	et = ft()
	wg.Wait()
	return ep, et
}

func (s *sides) compare(ctx context.Context, cfg Config, pair Pair) Result {
	start := time.Now()
	res := Result{Pair: pair}
	defer func() { res.Elapsed = time.Since(start) }()
	pi, err := Describe(ctx, s.p, pair.Source)
	if err != nil {
		res.Err = sideErr("provider", err)
		return res
	}
	sel, ok, err := pair.selectOf(pi)
	if err != nil {
		res.Err = err
		return res
	}
	if !ok {
		if pair.Merged {
			res.Err = fmt.Errorf("merged table: its handlers have no SQL form, so it cannot be compared (not implemented)")
			return res
		}
		s.compareThrough(ctx, cfg, pi, &res)
		return res
	}
	res.Pair.Dest = sel.Table
	ti, err := Describe(ctx, s.t, sel.Table)
	if err != nil {
		res.Err = sideErr("target", err)
		return res
	}
	// The provider's side is the handlers' query: its columns are named as on the target,
	// each hashed by its source column's type.
	pv := TableInfo{Table: pair.Source, Key: sel.Key}
	for _, c := range sel.Columns {
		col := Column{Name: c.Name, Type: c.Type}
		if src, ok := pi.column(c.Source); ok && c.Source != "" && c.Type == src.Type {
			col.Output = src.Output
		}
		pv.Columns = append(pv.Columns, col)
	}
	from := "(" + sel.SQL() + ") AS skiff_rows"
	if sel.Plain() && slices.Equal(sel.ColumnNames(), sel.SourceColumns()) {
		from = pair.Source.String()
		if sel.Only {
			from = "ONLY " + from
		}
	}
	s.compareSides(ctx, cfg, &res, pv, ti, from, start)
	return res
}

// selectOf is what the pair's handlers make of the provider's rows, as a query; ok false when
// they have no SQL form.
func (p Pair) selectOf(pi TableInfo) (handlers.Select, bool, error) {
	h := p.Handler
	if h == nil {
		dest := p.Dest
		if dest == (change.Table{}) {
			dest = p.Source
		}
		h = handlers.Rename{Schema: dest.Schema, Name: dest.Name}
	}
	sel := handlers.NewSelect(p.Source, sourceColumns(pi), p.key(pi))
	sel.Only = p.SourceOnly
	if p.Where != "" {
		sel.Where = append(sel.Where, p.Where)
	}
	sel, ok, err := handlers.SelectOf(h, sel)
	if err != nil {
		return sel, false, fmt.Errorf("handler of %s: %w", p.Source, err)
	}
	return sel, ok, nil
}

func (p Pair) key(pi TableInfo) []string {
	if len(p.Key) > 0 {
		return p.Key
	}
	return pi.Key
}

func sourceColumns(pi TableInfo) []handlers.SourceColumn {
	out := make([]handlers.SourceColumn, len(pi.Columns))
	for i, c := range pi.Columns {
		out[i] = handlers.SourceColumn{Name: c.Name, Type: c.Type, Output: c.Output}
	}
	return out
}

// compareSides checksums the rows of from on the provider (described by pi) and the target
// table ti: the columns both have, by name, in the provider's order, each side hashing by its
// own column type.
func (s *sides) compareSides(ctx context.Context, cfg Config, res *Result, pi, ti TableInfo, from string, start time.Time) {
	pair := res.Pair
	var pcols, tcols []Column
	for _, c := range pi.Columns {
		tc, ok := ti.column(c.Name)
		if !ok {
			res.Skipped = append(res.Skipped, c.Name)
			continue
		}
		pcols = append(pcols, c)
		tcols = append(tcols, tc)
		res.Columns = append(res.Columns, c.Name)
	}
	for _, c := range ti.Columns {
		if _, ok := pi.column(c.Name); !ok {
			res.Skipped = append(res.Skipped, c.Name)
		}
	}
	if len(pcols) == 0 {
		res.Err = fmt.Errorf("no column in common")
		return
	}
	key := pi.Key
	if len(key) == 0 {
		key = ti.Key
	}
	log := cfg.Log.With("table", pair.String())
	log.Info("comparing", "columns", len(pcols))

	sides := fromItems{p: from, t: pair.Dest.String()}
	if pair.Merged {
		// Row by row: the target holds other providers' rows too, which no checksum can
		// leave out without knowing their keys.
		if len(key) == 0 {
			res.Err = fmt.Errorf("no primary key: cannot compare a merged table")
			return
		}
		n, err := s.rowDiff(ctx, cfg, sides, key, pi, ti, pcols, tcols, res)
		if err != nil {
			res.Err = fmt.Errorf("compare rows of a merged table: %w", err)
			return
		}
		res.Equal = n == 0
		log.Info("compared", "equal", res.Equal, "provider_rows", res.Provider.Rows, "target_rows", res.Target.Rows,
			"other_providers_rows", res.OtherRows, "elapsed", time.Since(start).Round(time.Millisecond))
		return
	}
	pq := sumQuery(sides.p, pcols)
	tq := sumQuery(sides.t, tcols)
	var err error
	if ranged, ok := intKey(pi, ti, key); ok {
		res.Provider, res.Target, err = s.sumChunked(ctx, cfg, log, sides, ranged, pq, tq)
	} else {
		ep, et := both(
			func() (err error) { res.Provider, err = sumOf(ctx, s.p, pq, nil); return },
			func() (err error) { res.Target, err = sumOf(ctx, s.t, tq, nil); return })
		err = errors.Join(sideErr("provider", ep), sideErr("target", et))
	}
	if err != nil {
		res.Err = err
		return
	}
	res.Equal = res.Provider == res.Target
	log.Info("compared", "equal", res.Equal, "provider_rows", res.Provider.Rows, "target_rows", res.Target.Rows,
		"elapsed", time.Since(start).Round(time.Millisecond))
	if !res.Equal && cfg.Rows {
		if len(key) == 0 {
			res.Err = fmt.Errorf("no primary key: cannot list differing rows")
			return
		}
		if _, err := s.rowDiff(ctx, cfg, sides, key, pi, ti, pcols, tcols, res); err != nil {
			res.Err = fmt.Errorf("list differing rows: %w", err)
		}
	}
}

// fromItems are the FROM items of both sides: a table's quoted name or a subquery.
type fromItems struct {
	p, t string
}

func sideErr(side string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", side, err)
}

// sumQuery aggregates the row hashes of a FROM item (a table's quoted name or a subquery); a
// WHERE clause with $1/$2 bounds may follow in the inner query (see sumChunked). The result is
// a format for fmt.Sprintf: a % in a name or a filter is doubled.
func sumQuery(from string, cols []Column) string {
	return strings.ReplaceAll(`SELECT count(*),
		coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0)::text,
		coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)::text
		FROM (SELECT `+rowExpr(cols)+` AS h FROM `+from, "%", "%%") + ` %s) s`
}

func sumOf(ctx context.Context, conn pg.DB, query string, where []any) (Sum, error) {
	var sum Sum
	var h1, h2 string
	q := fmt.Sprintf(query, "")
	var args []any
	if where != nil {
		q = fmt.Sprintf(query, where[0].(string))
		args = where[1:]
	}
	if err := conn.QueryRow(ctx, q, args...).Scan(&sum.Rows, &h1, &h2); err != nil {
		return sum, fmt.Errorf("checksum: %w", err)
	}
	sum.Hash = h1 + "/" + h2
	return sum, nil
}

// intKey reports whether the key is a single integer column on both sides (chunkable).
func intKey(pi, ti TableInfo, key []string) (string, bool) {
	if len(key) != 1 {
		return "", false
	}
	pc, ok1 := pi.column(key[0])
	tc, ok2 := ti.column(key[0])
	isInt := func(t string) bool { return t == "int2" || t == "int4" || t == "int8" }
	if !ok1 || !ok2 || !isInt(pc.Type) || !isInt(tc.Type) {
		return "", false
	}
	return key[0], true
}

// sumChunked checksums a table with a single integer key in ranges of cfg.ChunkKeys key
// values, both sides at once, and adds the chunk sums up.
func (s *sides) sumChunked(ctx context.Context, cfg Config, log *slog.Logger, from fromItems, key, pq, tq string) (Sum, Sum, error) {
	k := change.QuoteIdent(key)
	var plo, phi, tlo, thi *int64
	ep, et := both(
		func() error {
			return s.p.QueryRow(ctx, "SELECT min("+k+"), max("+k+") FROM "+from.p).Scan(&plo, &phi)
		},
		func() error {
			return s.t.QueryRow(ctx, "SELECT min("+k+"), max("+k+") FROM "+from.t).Scan(&tlo, &thi)
		})
	if err := errors.Join(sideErr("provider", ep), sideErr("target", et)); err != nil {
		return Sum{}, Sum{}, fmt.Errorf("key range: %w", err)
	}
	var lo, hi int64
	switch {
	case plo == nil && tlo == nil:
		return Sum{Hash: "0/0"}, Sum{Hash: "0/0"}, nil
	case plo == nil:
		lo, hi = *tlo, *thi
	case tlo == nil:
		lo, hi = *plo, *phi
	default:
		lo, hi = min(*plo, *tlo), max(*phi, *thi)
	}
	// At most 1000 chunks, however sparse the keys.
	step := cfg.ChunkKeys
	if span := uint64(hi) - uint64(lo); span/1000 > uint64(step) {
		step = int64(span / 1000)
	}
	var pacc, tacc acc
	where := "WHERE " + k + " >= $1 AND " + k + " <= $2"
	last := time.Now()
	for from := lo; ; {
		to := from + step - 1
		if to > hi || to < from { // overflow guard
			to = hi
		}
		var ps, ts Sum
		ep, et := both(
			func() (err error) { ps, err = sumOf(ctx, s.p, pq, []any{where, from, to}); return },
			func() (err error) { ts, err = sumOf(ctx, s.t, tq, []any{where, from, to}); return })
		if err := errors.Join(sideErr("provider", ep), sideErr("target", et)); err != nil {
			return Sum{}, Sum{}, fmt.Errorf("keys %d..%d: %w", from, to, err)
		}
		pacc.add(ps)
		tacc.add(ts)
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			done := float64(to-lo+1) / float64(hi-lo+1) * 100
			log.Info("compare progress", "percent", math.Round(done*10)/10, "provider_rows", pacc.rows, "target_rows", tacc.rows)
		}
		if to >= hi {
			break
		}
		from = to + 1
	}
	return pacc.sum(), tacc.sum(), nil
}

// acc adds chunk sums exactly (the database returns numeric sums as text).
type acc struct {
	rows   int64
	h1, h2 big.Int
}

func (a *acc) add(s Sum) {
	a.rows += s.Rows
	var h1, h2 string
	for i := 0; i < len(s.Hash); i++ {
		if s.Hash[i] == '/' {
			h1, h2 = s.Hash[:i], s.Hash[i+1:]
			break
		}
	}
	var x big.Int
	if _, ok := x.SetString(h1, 10); ok {
		a.h1.Add(&a.h1, &x)
	}
	if _, ok := x.SetString(h2, 10); ok {
		a.h2.Add(&a.h2, &x)
	}
}

func (a *acc) sum() Sum {
	return Sum{Rows: a.rows, Hash: a.h1.String() + "/" + a.h2.String()}
}
