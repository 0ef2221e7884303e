package compare

import (
	"context"
	"fmt"
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
// they keep are written into a temporary copy of the destination on the target
// (internal/rowcopy); both are checksummed there, with the same SQL and the same column
// types, and with --rows joined key by key. The handlers must send every row of the table to
// one destination.
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
	if _, err := handlers.WithoutRouting(h).Handle(&probe); err != nil || probe.Table == (change.Table{}) {
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
	// CREATE TABLE pg_temp.x makes a temporary table; 8.4 refuses TEMPORARY with a schema name.
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), "CREATE TABLE "+rowsTable.String()+" AS SELECT * FROM "+dest.String()+" LIMIT 0"); err != nil {
		res.Err = sideErr("target", fmt.Errorf("temporary table for the handler's rows: %w", err))
		return
	}
	var writable []string
	for _, c := range ti.Columns {
		if !c.Generated {
			writable = append(writable, c.Name)
		}
	}
	// The layout of the rows the handlers return: the first kept row's.
	out := probe
	first := true
	watch := splitFunc(func(ev *change.Event, evs []change.Event) ([]change.Event, error) {
		n := len(evs)
		evs, err := handlers.Run(h, ev, evs)
		if err == nil && first && len(evs) > n {
			first = false
			out.Columns, out.Key = evs[n].Columns, evs[n].Key
		}
		return evs, err
	})
	// Tables besides dest the handler sends rows to (a partition's children): their rows go
	// to the one temporary table too, and the target side reads them with dest's.
	var others []change.Table
	st, err := rowcopy.Run(ctx, rowcopy.Config{
		Provider: s.p, Source: pair.Source, Only: pair.SourceOnly, Columns: names, Key: key, Where: pair.Where, Handler: watch, Target: tx,
		Dest: func(ctx context.Context, t change.Table) (change.Table, []string, error) {
			if t == dest {
				return rowsTable, writable, nil
			}
			oi, err := Describe(ctx, tx, t)
			if err != nil {
				return t, nil, fmt.Errorf("the handler sends rows to %s: %w", t, err)
			}
			for _, c := range ti.Columns {
				if oc, ok := oi.column(c.Name); !ok || oc.Type != c.Type {
					return t, nil, fmt.Errorf("the handler sends rows to %s and to %s, whose columns differ: compare checks tables of one shape", dest, t)
				}
			}
			others = append(others, t)
			return rowsTable, writable, nil
		},
	})
	if err != nil {
		res.Err = fmt.Errorf("cannot compare through the handler: %w", err)
		return
	}
	// Columns compared: those the handlers return that the destination writes.
	var cols []Column
	for _, n := range out.Columns {
		c, ok := ti.column(n)
		switch {
		case !ok:
			res.Skipped = append(res.Skipped, n)
		case !c.Generated:
			cols = append(cols, c)
			res.Columns = append(res.Columns, n)
		}
	}
	for _, c := range ti.Columns {
		if !slices.Contains(out.Columns, c.Name) {
			res.Skipped = append(res.Skipped, c.Name)
		}
	}
	if len(cols) == 0 {
		res.Err = fmt.Errorf("no column in common")
		return
	}
	if res.Provider, err = sumOf(ctx, tx, sumQuery(rowsTable.String(), cols), nil); err != nil {
		res.Err = sideErr("provider (through the handler)", err)
		return
	}
	target, err := targetRows(ctx, tx, dest, others, cols)
	if err != nil {
		res.Err = sideErr("target", err)
		return
	}
	if len(others) > 0 {
		log.Info("the handler sends rows to several tables: compared together", "tables", len(others)+1)
	}
	if res.Target, err = sumOf(ctx, tx, sumQuery(target, cols), nil); err != nil {
		res.Err = sideErr("target", err)
		return
	}
	res.Equal = res.Provider == res.Target
	log.Info("compared", "equal", res.Equal, "provider_rows", st.Read, "rows_kept", res.Provider.Rows, "target_rows", res.Target.Rows,
		"elapsed", time.Since(start).Round(time.Millisecond).String())
	if res.Equal || !cfg.Rows {
		return
	}
	key = out.Key
	if len(key) == 0 {
		key = ti.Key
	}
	if len(key) == 0 {
		res.Err = fmt.Errorf("no primary key: cannot list differing rows")
		return
	}
	if err := diffThrough(ctx, cfg, tx, dest, target, ti, key, cols, res); err != nil {
		res.Err = fmt.Errorf("list differing rows: %w", err)
	}
}

// diffThrough lists the keys whose rows differ between the handler's rows (the temporary
// table) and the destination, joined on the target by key text.
func diffThrough(ctx context.Context, cfg Config, tx pgx.Tx, dest change.Table, target string, ti TableInfo, key []string, cols []Column, res *Result) error {
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
	q := "SELECT coalesce(p.k, t.k), p.k IS NULL, t.k IS NULL FROM (" + side(rowsTable.String()) + ") p FULL JOIN (" +
		side(target) + ") t ON p.k = t.k WHERE p.h IS DISTINCT FROM t.h ORDER BY convert_to(coalesce(p.k, t.k), 'UTF8') LIMIT " +
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

// targetRows is what the target side of a comparison through a handler reads: dest, and the
// other tables the handler sent rows to that reading dest does not read already (a
// partitioned dest reads its partitions; a child made LIKE it is a table of its own).
func targetRows(ctx context.Context, tx pgx.Tx, dest change.Table, others []change.Table, cols []Column) (string, error) {
	var extra []change.Table
	for _, t := range others {
		in, err := catalog.InheritsFrom(ctx, tx, t, dest)
		if err != nil {
			return "", err
		}
		if !in {
			extra = append(extra, t)
		}
	}
	if len(extra) == 0 {
		return dest.String(), nil
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = change.QuoteIdent(c.Name)
	}
	list := strings.Join(names, ", ")
	q := "(SELECT " + list + " FROM " + dest.String()
	for _, t := range extra {
		q += " UNION ALL SELECT " + list + " FROM " + t.String()
	}
	return q + ") skiff_rows", nil
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
