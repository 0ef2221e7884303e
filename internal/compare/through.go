package compare

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/rowcopy"
)

// rowsTable is the temporary table on the target that holds what a handler without an SQL
// form makes of the provider's rows (dropped with the comparison's transaction).
var rowsTable = change.Table{Schema: "pg_temp", Name: "skiff_compare_rows"}

// compareThrough compares a table whose handlers have no SQL form: every provider row (in the
// text form events carry) is run through them in Go, as the worker runs events, and the rows
// they keep are written into temporary copies of the tables they send them to, on the target
// (internal/rowcopy); each is checksummed there against its table, with the same SQL and the
// same column types, and with --rows joined key by key. The destination (where the handlers
// without a partition handler send a row of NULLs, else the route's) is always compared; a
// table that reading the destination reads too (a partition, an inheritance child) counts
// with it; any other table the handlers send rows to (a row split in two, a child made LIKE
// the destination) is compared on its own, and the result sums them all.
func (s *sides) compareThrough(ctx context.Context, cfg Config, pi TableInfo, res *Result) {
	start := time.Now()
	pair := res.Pair
	h := pair.Handler
	key := pair.key(pi)
	names := make([]string, len(pi.Columns))
	for i, c := range pi.Columns {
		names[i] = c.Name
	}
	// Where a row of NULLs goes (as skiff subscribe checks the target), else the route's
	// destination; the columns and key the handlers give it stand for a table none of whose
	// rows they keep.
	probe := change.Event{Op: change.Insert, Table: pair.Source, Columns: names, Key: key, Values: make([]change.Value, len(names))}
	evs, err := handlers.Run(handlers.WithoutRouting(h), &probe, nil)
	if err == nil && len(evs) > 0 {
		probe = evs[0] // a Splitter's first row; else where the row went, dropped or not
	}
	if err != nil || probe.Table == (change.Table{}) {
		probe = change.Event{Table: pair.Dest, Columns: names, Key: key}
		if probe.Table == (change.Table{}) {
			probe.Table = pair.Source
		}
	}
	dest := probe.Table
	res.Pair.Dest = dest
	ti, err := Describe(ctx, s.t, dest)
	if err != nil {
		res.Err = sideErr("target", err)
		return
	}
	log := cfg.Log.With("table", res.Pair.String())
	log.Info("comparing through the handler in Go (it has no SQL form)")

	// The provider's rows under one snapshot, as the target reads them.
	if pg.ServerVersion(s.p) < 90100 {
		_, err = s.p.Exec(ctx, "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY") // before 9.1 SERIALIZABLE is snapshot isolation
	} else {
		_, err = s.p.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	}
	if err != nil {
		res.Err = sideErr("provider", err)
		return
	}
	defer func() { _, _ = s.p.Exec(context.WithoutCancel(ctx), "ROLLBACK") }()
	if pg.ServerVersion(s.p) >= 90000 && pg.ServerVersion(s.t) < 90000 {
		// A target before 9.0 reads bytea only in escape format.
		if _, err := s.p.Exec(ctx, "SET LOCAL bytea_output = 'escape'"); err != nil {
			res.Err = sideErr("provider", err)
			return
		}
	}
	tx, err := s.t.Begin(ctx)
	if err != nil {
		res.Err = sideErr("target", err)
		return
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	main, err := newThroughDest(ctx, tx, dest, ti, 0)
	if err != nil {
		res.Err = sideErr("target", err)
		return
	}
	main.cols, main.key = probe.Columns, probe.Key
	dests := []*throughDest{main}
	into := map[change.Table]*throughDest{dest: main} // by the table the handlers name
	// The layout of the rows the handlers send to each table: its first row's.
	layouts := map[change.Table]*change.Event{}
	watch := splitFunc(func(ev *change.Event, evs []change.Event) ([]change.Event, error) {
		n := len(evs)
		evs, err := handlers.Run(h, ev, evs)
		for i := n; err == nil && i < len(evs); i++ {
			if layouts[evs[i].Table] == nil {
				layouts[evs[i].Table] = &change.Event{Columns: evs[i].Columns, Key: evs[i].Key}
			}
		}
		return evs, err
	})
	st, err := rowcopy.Run(ctx, rowcopy.Config{
		Provider: s.p, Source: pair.Source, Only: pair.SourceOnly, Columns: names, Key: key, Where: pair.Where, Handler: watch, Target: tx,
		Dest: func(ctx context.Context, t change.Table) (change.Table, []string, error) {
			if d := into[t]; d != nil {
				return d.temp, d.writable, nil
			}
			in, err := catalog.InheritsFrom(ctx, tx, t, dest)
			if err != nil {
				return t, nil, fmt.Errorf("the handler sends rows to %s: %w", t, err)
			}
			if in {
				into[t] = main // reading dest reads it
				return main.temp, main.writable, nil
			}
			oi, err := Describe(ctx, tx, t)
			if err != nil {
				return t, nil, fmt.Errorf("the handler sends rows to %s: %w", t, err)
			}
			d, err := newThroughDest(ctx, tx, t, oi, len(dests))
			if err != nil {
				return t, nil, err
			}
			dests = append(dests, d)
			into[t] = d
			return d.temp, d.writable, nil
		},
	})
	if err != nil {
		res.Err = fmt.Errorf("cannot compare through the handler: %w", err)
		return
	}
	if len(dests) > 1 {
		log.Info("the handler sends rows to several tables: each compared", "tables", len(dests))
	}
	for _, d := range dests {
		if l := layouts[d.table]; l != nil {
			d.cols, d.key = l.Columns, l.Key
		}
	}
	res.Equal = true
	for i, d := range dests {
		cols, only := d.compared()
		if i == 0 {
			res.Skipped = only
			for _, c := range cols {
				res.Columns = append(res.Columns, c.Name)
			}
		} else {
			for _, o := range only {
				res.Skipped = append(res.Skipped, d.table.String()+"."+change.QuoteIdent(o))
			}
		}
		if len(cols) == 0 {
			res.Err = fmt.Errorf("%s: no column in common", d.table)
			return
		}
		ps, err := sumOf(ctx, tx, sumQuery(d.temp.String(), cols), nil)
		if err != nil {
			res.Err = sideErr("provider (through the handler)", err)
			return
		}
		ts, err := sumOf(ctx, tx, sumQuery(d.table.String(), cols), nil)
		if err != nil {
			res.Err = sideErr("target", err)
			return
		}
		res.Provider, res.Target = addSums(res.Provider, ps), addSums(res.Target, ts)
		equal := ps == ts
		res.Equal = res.Equal && equal
		if equal || !cfg.Rows {
			continue
		}
		k := d.key
		if len(k) == 0 {
			k = d.ti.Key
		}
		if len(k) == 0 {
			res.Err = fmt.Errorf("%s: no primary key: cannot list differing rows", d.table)
			return
		}
		n := len(res.Diffs)
		if err := diffThrough(ctx, cfg, tx, d.table, d.temp, d.ti, k, cols, res); err != nil {
			res.Err = fmt.Errorf("list differing rows of %s: %w", d.table, err)
			return
		}
		if i > 0 {
			for j := n; j < len(res.Diffs); j++ {
				res.Diffs[j].Key = d.table.String() + " " + res.Diffs[j].Key
			}
		}
	}
	log.Info("compared", "equal", res.Equal, "provider_rows", st.Read, "rows_kept", res.Provider.Rows, "target_rows", res.Target.Rows,
		"elapsed", time.Since(start).Round(time.Millisecond).String())
}

// throughDest is a table the handlers send rows to, and its temporary twin on the target
// that receives what they make of the provider's rows.
type throughDest struct {
	table, temp change.Table
	ti          TableInfo
	writable    []string // the table's columns that are not generated
	// cols and key are the layout of the first row the handlers send there (for the
	// destination, the probe's when none goes there itself).
	cols, key []string
}

// newThroughDest makes the temporary twin (number n) of table t.
func newThroughDest(ctx context.Context, tx pgx.Tx, t change.Table, ti TableInfo, n int) (*throughDest, error) {
	d := &throughDest{table: t, temp: rowsTable, ti: ti}
	if n > 0 {
		d.temp.Name += "_" + strconv.Itoa(n)
	}
	// CREATE TABLE pg_temp.x makes a temporary table; 8.4 refuses TEMPORARY with a schema name.
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), "CREATE TABLE "+d.temp.String()+" AS SELECT * FROM "+t.String()+" LIMIT 0"); err != nil {
		return nil, fmt.Errorf("temporary table for the handler's rows of %s: %w", t, err)
	}
	for _, c := range ti.Columns {
		if !c.Generated {
			d.writable = append(d.writable, c.Name)
		}
	}
	return d, nil
}

// compared returns the columns compared (those the handlers write that the table has, not
// generated) and the names only one side has.
func (d *throughDest) compared() (cols []Column, only []string) {
	for _, n := range d.cols {
		c, ok := d.ti.column(n)
		switch {
		case !ok:
			only = append(only, n)
		case !c.Generated:
			cols = append(cols, c)
		}
	}
	for _, c := range d.ti.Columns {
		if !slices.Contains(d.cols, c.Name) {
			only = append(only, c.Name)
		}
	}
	return cols, only
}

// addSums adds two checksums: row counts, and each half of the hash sums.
func addSums(a, b Sum) Sum {
	if a == (Sum{}) {
		return b
	}
	out := Sum{Rows: a.Rows + b.Rows}
	ah, bh := strings.Split(a.Hash, "/"), strings.Split(b.Hash, "/")
	if len(ah) != 2 || len(bh) != 2 {
		out.Hash = a.Hash + "+" + b.Hash
		return out
	}
	var parts [2]string
	for i := range parts {
		x, okx := new(big.Int).SetString(ah[i], 10)
		y, oky := new(big.Int).SetString(bh[i], 10)
		if !okx || !oky {
			return Sum{Rows: out.Rows, Hash: a.Hash + "+" + b.Hash}
		}
		parts[i] = x.Add(x, y).String()
	}
	out.Hash = parts[0] + "/" + parts[1]
	return out
}

// diffThrough lists the keys whose rows differ between the handler's rows (the temporary
// table) and the destination, joined on the target by key text.
func diffThrough(ctx context.Context, cfg Config, tx pgx.Tx, dest, temp change.Table, ti TableInfo, key []string, cols []Column, res *Result) error {
	kcols := make([]Column, len(key))
	for i, k := range key {
		c, ok := ti.column(k)
		if !ok {
			return fmt.Errorf("key column %s missing on %s", change.QuoteIdent(k), dest)
		}
		kcols[i] = c
	}
	side := func(from string) string {
		return "SELECT " + keyExpr(kcols) + " AS k, " + rowExpr(cols) + " AS h FROM " + from
	}
	q := "SELECT coalesce(p.k, t.k), p.k IS NULL, t.k IS NULL FROM (" + side(temp.String()) + ") p FULL JOIN (" +
		side(dest.String()) + ") t ON p.k = t.k WHERE p.h IS DISTINCT FROM t.h ORDER BY convert_to(coalesce(p.k, t.k), 'UTF8') LIMIT " +
		strconv.Itoa(cfg.MaxRowDiffs+1)
	rows, err := tx.Query(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var noProv, noTgt bool
		if err := rows.Scan(&k, &noProv, &noTgt); err != nil {
			return err
		}
		if len(res.Diffs) >= cfg.MaxRowDiffs {
			res.Truncated = true
			break
		}
		kind := "different"
		switch {
		case noProv:
			kind = "missing on provider"
		case noTgt:
			kind = "missing on target"
		}
		res.Diffs = append(res.Diffs, RowDiff{Key: k, Kind: kind})
	}
	return rows.Err()
}

// splitFunc is a function used as a handlers.Splitter (and Handler).
type splitFunc func(ev *change.Event, out []change.Event) ([]change.Event, error)

// Split calls f.
func (f splitFunc) Split(ev *change.Event, out []change.Event) ([]change.Event, error) {
	return f(ev, out)
}

// Handle is never called: rowcopy calls Split.
func (f splitFunc) Handle(ev *change.Event) (bool, error) {
	return false, fmt.Errorf("table %s: %w", ev.Table, handlers.ErrSplit)
}
