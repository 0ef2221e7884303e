package copier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// Merge modes of a shared table's copy (Hooks.Merge), as apply's --on-conflict values.
const (
	mergeError       = "error"
	mergeApplyRemote = "apply-remote"
)

// stage is the temporary table a merged copy's rows are written to before they are merged
// into the destination by key.
var stage = change.Table{Schema: "pg_temp", Name: "skiff_merge_stage"}

// shareBarrier replaces empty for a merged (shared) destination: the barrier (the batch in
// flight ends, the next ones see the table copying and keep its events in the backlog), no
// lock and nothing emptied: the destination holds other providers' rows, and their workers
// go on writing it while the copy runs.
func (c *tableCopy) shareBarrier(ctx context.Context) error {
	if c.cfg.Hooks.Barrier == nil {
		return nil
	}
	side, err := c.sideConn(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	release, err := c.cfg.Hooks.Barrier(ctx, side, c.t)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if err := release(); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}

// makeStage creates the stage (the destination's written columns, no row, dropped at commit)
// in the copy's target transaction.
func (c *tableCopy) makeStage(ctx context.Context) error {
	p := c.plan
	if len(p.sel.Key) == 0 {
		return fmt.Errorf("merged table %s: no key to merge the provider's rows by", p.dest)
	}
	if err := c.checkUnique(ctx); err != nil {
		return err
	}
	sql := "CREATE TEMPORARY TABLE " + stage.Name + " ON COMMIT DROP AS SELECT " + quoteList(p.sel.ColumnNames()) +
		" FROM " + p.dest.String() + " LIMIT 0"
	if _, err := pg.Exec(ctx, c.ttx.Conn().PgConn(), sql); err != nil {
		return fmt.Errorf("target: %s: %w", sql, err)
	}
	return nil
}

// checkUnique: a merged destination needs a unique index on exactly its key columns (ON
// CONFLICT names it; without one a key two providers write would be two rows).
func (c *tableCopy) checkUnique(ctx context.Context) error {
	p := c.plan
	oid, err := catalog.Lookup(ctx, c.ttx, p.dest, "rp")
	if err != nil {
		return fmt.Errorf("target: table %s: %w", p.dest, err)
	}
	idxs, err := catalog.Indexes(ctx, c.ttx, oid)
	if err != nil {
		return fmt.Errorf("target: indexes of %s: %w", p.dest, err)
	}
	for _, x := range idxs {
		cols := x.Columns[:x.NKey]
		if x.Unique && x.Valid && !x.Partial && x.Immediate && len(cols) == len(p.sel.Key) &&
			!slices.ContainsFunc(cols, func(c string) bool { return !slices.Contains(p.sel.Key, c) }) {
			return nil
		}
	}
	return fmt.Errorf("merged table %s needs a primary key or unique index on exactly its key columns (%s): "+
		"without one a key two providers write would become two rows", p.dest, strings.Join(p.sel.Key, ", "))
}

// mergeStage writes the stage into the destination by key, in the copy's transaction: a
// provider row whose key the destination holds with other values is a conflict — under
// "error" the copy fails naming the first one; "apply-remote" overwrites the row,
// "keep-local" keeps it (Hooks.Conflicts counts them). A key held with the same values (a
// resync of rows this provider wrote) is no conflict. ON CONFLICT from 9.5; before, an UPDATE
// … FROM and an INSERT … WHERE NOT EXISTS (a concurrent insert of the same key by another
// provider's worker then fails the copy, which is tried again).
func (c *tableCopy) mergeStage(ctx context.Context) error {
	p, tx := c.plan, c.ttx
	q := change.QuoteIdent
	if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	cols := p.sel.ColumnNames()
	var match, sets, upd, sCols, tCols, sKey []string
	for _, k := range p.sel.Key {
		match = append(match, "t."+q(k)+" = s."+q(k))
		sKey = append(sKey, "s."+q(k))
	}
	for _, col := range cols {
		sCols = append(sCols, "s."+q(col))
		tCols = append(tCols, "t."+q(col))
		if !slices.Contains(p.sel.Key, col) {
			sets = append(sets, q(col)+" = EXCLUDED."+q(col))
			upd = append(upd, q(col)+" = s."+q(col))
		}
	}
	dest, st := p.dest.String(), stage.String()
	text := func(xs []string) string {
		return "pg_catalog.textin(pg_catalog.record_out(ROW(" + strings.Join(xs, ", ") + ")))"
	}
	conflictSQL := "SELECT count(*) OVER (), " + text(sKey) + " FROM " + st + " s JOIN " + dest + " t ON " +
		strings.Join(match, " AND ") + " WHERE " + text(sCols) + " IS DISTINCT FROM " + text(tCols) + " LIMIT 1"
	var n int64
	var example string
	err := tx.QueryRow(ctx, conflictSQL).Scan(&n, &example)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("target: find merge conflicts: %s: %w", conflictSQL, err)
	}
	if n > 0 && c.merge == mergeError {
		return fmt.Errorf("merge conflict on table %s: %d of the provider's rows have a key the target holds with other values (another provider's rows), e.g. key (%s) = %s; "+
			"the copy fails (--on-conflict error): settle those rows on the target, or subscribe again with --merge --on-conflict apply-remote|keep-local",
			p.dest, n, strings.Join(p.sel.Key, ", "), example)
	}
	var stmts []string
	if pg.ServerVersion(c.tgt) >= 90500 {
		action := "DO NOTHING"
		if c.merge == mergeApplyRemote && len(sets) > 0 {
			action = "DO UPDATE SET " + strings.Join(sets, ", ")
		}
		stmts = append(stmts, "INSERT INTO "+dest+" ("+quoteList(cols)+") SELECT "+strings.Join(sCols, ", ")+" FROM "+st+" s ON CONFLICT ("+
			quoteList(p.sel.Key)+") "+action)
	} else {
		if c.merge == mergeApplyRemote && len(upd) > 0 {
			stmts = append(stmts, "UPDATE "+dest+" AS t SET "+strings.Join(upd, ", ")+" FROM "+st+" s WHERE "+strings.Join(match, " AND "))
		}
		stmts = append(stmts, "INSERT INTO "+dest+" ("+quoteList(cols)+") SELECT "+strings.Join(sCols, ", ")+" FROM "+st+
			" s WHERE NOT EXISTS (SELECT 1 FROM "+dest+" t WHERE "+strings.Join(match, " AND ")+")")
	}
	for _, sql := range stmts {
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), sql); err != nil {
			return fmt.Errorf("target: merge the copied rows: %s: %w", sql, err)
		}
	}
	if n > 0 {
		c.log.Warn("merge conflicts settled by the copy", "conflicts", n, "example_key", example, "on_conflict", c.merge)
		if c.cfg.Hooks.Conflicts != nil {
			last := fmt.Sprintf("copy of %s: %d rows, e.g. (%s) = %s: %s", p.dest, n, strings.Join(p.sel.Key, ", "), example, c.merge)
			if err := c.cfg.Hooks.Conflicts(ctx, tx, c.t, n, last); err != nil {
				return fmt.Errorf("count merge conflicts: %w", err)
			}
		}
	}
	return nil
}
