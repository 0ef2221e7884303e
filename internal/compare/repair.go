package compare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// Repair makes target tables equal to what replication must make of the provider's rows
// (skiff repair). It finds the differing keys as Run with Rows does, then re-checks each of
// them and writes the SQL that fixes it — INSERT, UPDATE or DELETE by key, values as typed
// literals — in one target transaction, leaving the subscription's position untouched.
//
// Why it never writes an older value over a newer one, nor a row replication is about to
// write (the scheme; docs/internals.md "skiff repair"):
//
//  1. The target transaction first locks the subscription's row (FOR UPDATE, as every
//     batch's transaction does first): the worker finishes the batch in hand and then waits
//     until the repair commits. The position it has applied, tick T, cannot move meanwhile.
//  2. Only then a provider snapshot P is taken (REPEATABLE READ). Everything T's snapshot
//     S_T shows is committed before P, so P holds at least what the target was given.
//  3. Each differing key is read again, in P on the provider and, FOR UPDATE, in the
//     target transaction. A key equal by now is left alone: only rows still differing are
//     written, with P's values — never the values of the first, unlocked pass.
//  4. A provider row whose last writer (its xmin, widened to a txid) is not older than S_T's
//     xmin may have events the worker has not applied yet. Writing it now would race them
//     (its queued INSERT would then find the row and fail the batch), and the queue brings
//     that row anyway: repair leaves it to replication and reports it as pending. A row whose
//     xmin is older than S_T's xmin was written by a transaction that had ended when T was
//     taken, hence already applied: no later event of that key exists before P (any write
//     after T would have left a newer xmin), and events after P come after the repair.
//     A row missing on the provider is deleted on the target: an event that deletes it
//     later finds nothing to delete (the worker warns).
//
// Only tables whose handlers keep values as they are (rename, column selection, a row
// filter; an SQL form whose columns are source columns unchanged) can be repaired; others are
// refused with a reason (resync them). A subscription fed by logical decoding has no tick: it
// is refused.
type RepairConfig struct {
	// Provider and Target are the connection settings of both sides (from pg.ParseConfig).
	Provider, Target *pgx.ConnConfig
	// Pairs are the tables to repair (as for Run: handlers, filter, key).
	Pairs []Pair
	// Subscription is the target's subscription whose worker writes the tables.
	Subscription target.Key
	// Apply runs the statements; false only reports them (the target transaction is rolled
	// back and the subscription is not locked).
	Apply bool
	// MaxRows bounds the differing rows handled per table in one run; 0 means 10000.
	MaxRows int
	// Parallel is how many tables are compared at once; 0 means 2.
	Parallel int
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// BeforeFix, when set, runs after the differing keys are known and before they are read
	// again (tests: a write racing the repair).
	BeforeFix func(context.Context) error
}

// Fix is one statement of a repair.
type Fix struct {
	Key  string // the key as compare prints it
	Kind string // "missing on target" (INSERT), "different" (UPDATE), "missing on provider" (DELETE)
	SQL  string
}

// RepairResult is the outcome for one table.
type RepairResult struct {
	Pair Pair
	// Equal: the table compared equal; nothing to do.
	Equal bool
	// Fixes are the statements that make the target's rows equal to the provider's.
	Fixes []Fix
	// Pending are differing keys whose provider row was written after the worker's position:
	// replication brings them (run repair again once the worker has caught up).
	Pending []RowDiff
	// Truncated: more rows differ than RepairConfig.MaxRows; run again.
	Truncated bool
	// Err says why the table could not be repaired.
	Err error
}

// RepairReport is the outcome of a repair.
type RepairReport struct {
	Results []RepairResult
	// Tick is the worker's position the rows were re-checked at (0 when nothing differed).
	Tick int64
	// Replica: the statements run with session_replication_role = replica (as the worker's).
	Replica bool
	// Applied: the statements were committed.
	Applied bool
}

// keyBatch is how many keys one re-read statement names.
const keyBatch = 200

// Repair compares the pairs, re-checks the differing rows and fixes them (see RepairConfig).
// An error is returned when the repair could not run at all, or when applying failed (then
// nothing was changed); a table that cannot be repaired has RepairResult.Err set.
func Repair(ctx context.Context, cfg RepairConfig) (RepairReport, error) {
	var rep RepairReport
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = 10000
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	results, err := Run(ctx, Config{Provider: cfg.Provider, Target: cfg.Target, Pairs: cfg.Pairs, Rows: true,
		MaxRowDiffs: cfg.MaxRows, Parallel: cfg.Parallel, Log: cfg.Log})
	if err != nil {
		return rep, err
	}
	rep.Results = make([]RepairResult, len(results))
	work := false
	for i, r := range results {
		rr := RepairResult{Pair: r.Pair, Equal: r.Equal && r.Err == nil, Truncated: r.Truncated, Err: r.Err}
		if rr.Err == nil && !r.Equal && len(r.Diffs) == 0 {
			rr.Err = errors.New("rows differ but no differing key was found (columns compared differently?)")
		}
		rep.Results[i] = rr
		work = work || rr.Err == nil && len(r.Diffs) > 0
	}
	if !work {
		return rep, nil
	}
	if cfg.BeforeFix != nil {
		if err := cfg.BeforeFix(ctx); err != nil {
			return rep, err
		}
	}
	s, err := openSides(ctx, Config{Provider: cfg.Provider, Target: cfg.Target})
	if err != nil {
		return rep, err
	}
	defer s.close()

	// 1. The subscription's row, locked: the worker waits; its position stays.
	tx, err := s.t.Begin(ctx)
	if err != nil {
		return rep, fmt.Errorf("target: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	k := cfg.Subscription
	if cfg.Apply {
		if _, err := target.LockSubscription(ctx, tx, k); errors.Is(err, pgx.ErrNoRows) {
			return rep, fmt.Errorf("target: no subscription of queue %s for consumer %s", k.Queue, k.Consumer)
		} else if err != nil {
			return rep, fmt.Errorf("target: lock subscription %s/%s: %w", k.Queue, k.Consumer, err)
		}
	}
	pos, err := target.PositionOf(ctx, tx, k)
	tick := pos.Tick
	if err != nil {
		return rep, fmt.Errorf("target: position of subscription %s/%s: %w", k.Queue, k.Consumer, err)
	}
	if tick == 0 {
		return rep, fmt.Errorf("subscription %s/%s has no tick position (logical decoding, or no batch applied yet): repair needs a trigger-queue subscription whose worker has applied a batch", k.Queue, k.Consumer)
	}
	rep.Tick = tick

	// 2. The provider's snapshot, taken after the lock.
	if pg.ServerVersion(s.p) < 90100 {
		_, err = s.p.Exec(ctx, "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY") // snapshot isolation before 9.1
	} else {
		_, err = s.p.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	}
	if err != nil {
		return rep, fmt.Errorf("provider: %w", err)
	}
	defer func() { _, _ = s.p.Exec(context.WithoutCancel(ctx), "ROLLBACK") }()
	if pg.ServerVersion(s.p) >= 90000 && pg.ServerVersion(s.t) < 90000 {
		// A target before 9.0 reads bytea only in escape format.
		if _, err := s.p.Exec(ctx, "SET LOCAL bytea_output = 'escape'"); err != nil {
			return rep, fmt.Errorf("provider: %w", err)
		}
	}
	snap, ok, err := queue.TickSnapshot(ctx, s.p, k.Queue, tick)
	if err != nil {
		return rep, fmt.Errorf("provider: %w", err)
	}
	if !ok {
		return rep, fmt.Errorf("provider: tick %d of queue %s, the position of subscription %s/%s, is gone", tick, k.Queue, k.Queue, k.Consumer)
	}
	applied, err := strconv.ParseInt(strings.SplitN(snap, ":", 2)[0], 10, 64)
	if err != nil {
		return rep, fmt.Errorf("provider: snapshot %q of tick %d: %w", snap, tick, err)
	}
	var next int64
	if err := s.p.QueryRow(ctx, "SELECT txid_snapshot_xmax(txid_current_snapshot())").Scan(&next); err != nil {
		return rep, fmt.Errorf("provider: %w", err)
	}
	w := rowWindow{applied: applied, next: next}

	if rep.Replica, err = catalog.MayReplica(ctx, tx); err != nil {
		return rep, fmt.Errorf("target: %w", err)
	}
	if rep.Replica && cfg.Apply {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return rep, fmt.Errorf("target: %w", err)
		}
	}

	// 3. and 4. Every differing key again, on both sides.
	for i, r := range results {
		rr := &rep.Results[i]
		if rr.Err != nil || len(r.Diffs) == 0 {
			continue
		}
		if err := s.fixTable(ctx, tx, cfg.Apply, r, w, rr); err != nil {
			var no refusal
			if !cfg.Apply || errors.As(err, &no) {
				rr.Err, rr.Fixes, rr.Pending = err, nil, nil
				continue
			}
			return rep, fmt.Errorf("repair %s: %w", r.Pair, err)
		}
	}
	if !cfg.Apply {
		return rep, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return rep, fmt.Errorf("target: commit: %w", err)
	}
	rep.Applied = true
	return rep, nil
}

// refusal is why a table cannot be repaired (it is left alone; the others are repaired).
type refusal struct{ reason string }

func (r refusal) Error() string { return r.reason }

// rowWindow places a provider row's last writer relative to the worker's position.
type rowWindow struct {
	applied int64 // xmin of the snapshot of the tick the worker has applied
	next    int64 // the provider's next txid now (epoch of xmin)
}

// writtenBefore reports whether a row whose xmin is xid was last written by a transaction
// that had ended when the worker's tick was taken. The 32-bit xid is widened to a txid with
// the epoch of next (the newest it can be); a frozen xid (2 before 9.4) comes out very old.
func (w rowWindow) writtenBefore(xid int64) bool {
	txid := w.next - ((w.next - xid) & 0xFFFFFFFF)
	return txid < w.applied
}

// sideRow is one row read again by key.
type sideRow struct {
	key, hash string
	xmin      int64
	keyVals   []*string // key column texts
	vals      []*string // written column texts (provider), nil on the target
}

// fixTable re-reads the differing keys of one table and fills rr with the statements that
// fix those still differing (run in tx when apply).
func (s *sides) fixTable(ctx context.Context, tx pgx.Tx, apply bool, r Result, w rowWindow, rr *RepairResult) error {
	pair := r.Pair
	for _, d := range r.Diffs {
		if d.Values == nil {
			return refusal{"its handlers have no SQL form: repair cannot tell which target rows they make (resync the table: skiff table resync)"}
		}
	}
	pi, err := Describe(ctx, s.p, pair.Source)
	if err != nil {
		return sideErr("provider", err)
	}
	sel, ok, err := pair.selectOf(pi)
	if err != nil {
		return err
	}
	if !ok {
		return refusal{"its handlers have no SQL form: repair cannot tell which target rows they make (resync the table: skiff table resync)"}
	}
	for _, c := range sel.Columns {
		if c.Source == "" || c.Expr != change.QuoteIdent(c.Source) {
			return refusal{fmt.Sprintf("its handlers compute column %s: repair writes only values kept as they are (resync the table: skiff table resync)", change.QuoteIdent(c.Name))}
		}
	}
	ti, err := Describe(ctx, tx, sel.Table)
	if err != nil {
		return sideErr("target", err)
	}
	// The columns compared (both sides have them, by target name) and written (not
	// generated on the target), as compare checks them.
	var pcols, tcols []Column
	var write []int // indexes into pcols/tcols
	for _, c := range sel.Columns {
		tc, ok := ti.column(c.Name)
		if !ok {
			continue
		}
		pc, _ := pi.column(c.Source)
		pc.Name = c.Name
		pcols, tcols = append(pcols, pc), append(tcols, tc)
		if !tc.Generated {
			write = append(write, len(pcols)-1)
		}
	}
	key := sel.Key
	if len(key) == 0 {
		key = ti.Key
	}
	var pk, tk []Column
	for _, k := range key {
		pc, ok1 := columnOf(pcols, k)
		tc, ok2 := ti.column(k)
		if !ok1 || !ok2 {
			return refusal{fmt.Sprintf("key column %s is not on both sides", change.QuoteIdent(k))}
		}
		pk, tk = append(pk, pc), append(tk, tc)
	}

	// The provider's rows as the handlers make them, with their last writer.
	inner := make([]string, 0, len(sel.Columns)+1)
	for _, c := range sel.Columns {
		inner = append(inner, c.Expr+" AS "+change.QuoteIdent(c.Name))
	}
	inner = append(inner, "xmin::text::bigint AS "+change.QuoteIdent("skiff xmin"))
	from := "SELECT " + strings.Join(inner, ", ") + " FROM "
	if sel.Only {
		from += "ONLY "
	}
	from += sel.Source.String()
	if c := sel.Condition(); c != "" {
		from += " WHERE " + c
	}
	var pvals []string
	for _, i := range write {
		pvals = append(pvals, textExpr(pcols[i]))
	}
	pq := "SELECT " + keyExpr(pk) + ", " + rowExpr(pcols) + ", " + change.QuoteIdent("skiff xmin") + ", " + textList(pk) +
		", " + strings.Join(pvals, ", ") + " FROM (" + from + ") AS s WHERE "
	lock := ""
	if apply {
		lock = " FOR UPDATE"
	}
	tq := "SELECT " + keyExpr(tk) + ", " + rowExpr(tcols) + ", 0::bigint, " + textList(tk) + " FROM " + ti.Table.String() + " AS s WHERE "

	kinds := map[string]string{}
	for start := 0; start < len(r.Diffs); start += keyBatch {
		batch := r.Diffs[start:min(start+keyBatch, len(r.Diffs))]
		var pw, tw []string
		for _, d := range batch {
			kinds[d.Key] = d.Kind
			pw = append(pw, keyMatch(pk, d.Values))
			tw = append(tw, keyMatch(tk, d.Values))
		}
		prows, err := readRows(ctx, s.p, pq+strings.Join(pw, " OR "), len(key), len(write))
		if err != nil {
			return sideErr("provider", err)
		}
		trows, err := readRows(ctx, tx, tq+strings.Join(tw, " OR ")+lock, len(key), 0)
		if err != nil {
			return sideErr("target", err)
		}
		var dels, upds, inss []Fix
		for _, d := range batch {
			p, inP := prows[d.Key]
			t, inT := trows[d.Key]
			switch {
			case inP && inT && p.hash == t.hash, !inP && !inT:
				// Equal by now: nothing to do.
			case !inP:
				dels = append(dels, Fix{Key: d.Key, Kind: "missing on provider", SQL: "DELETE FROM " + ti.Table.String() +
					" WHERE " + keyMatch(tk, t.keyVals) + ";"})
			case !w.writtenBefore(p.xmin):
				kind := "different"
				if !inT {
					kind = "missing on target"
				}
				rr.Pending = append(rr.Pending, RowDiff{Key: d.Key, Kind: kind, Values: d.Values})
			case inT:
				var sets []string
				for j, i := range write {
					if !isKey(key, tcols[i].Name) {
						sets = append(sets, change.QuoteIdent(tcols[i].Name)+" = "+literal(p.vals[j], tcols[i].Format))
					}
				}
				if len(sets) == 0 {
					continue
				}
				upds = append(upds, Fix{Key: d.Key, Kind: "different", SQL: "UPDATE " + ti.Table.String() + " SET " +
					strings.Join(sets, ", ") + " WHERE " + keyMatch(tk, t.keyVals) + ";"})
			default:
				names, lits := make([]string, len(write)), make([]string, len(write))
				for j, i := range write {
					names[j], lits[j] = change.QuoteIdent(tcols[i].Name), literal(p.vals[j], tcols[i].Format)
				}
				inss = append(inss, Fix{Key: d.Key, Kind: "missing on target", SQL: "INSERT INTO " + ti.Table.String() + " (" +
					strings.Join(names, ", ") + ") VALUES (" + strings.Join(lits, ", ") + ");"})
			}
		}
		// Deletes first: a row whose key changed on the provider makes room for its new key.
		for _, f := range append(append(dels, upds...), inss...) {
			if apply {
				if _, err := pg.Exec(ctx, tx.Conn().PgConn(), f.SQL); err != nil {
					return fmt.Errorf("key %s (%s): %s: %w", f.Key, f.Kind, f.SQL, err)
				}
			}
			rr.Fixes = append(rr.Fixes, f)
		}
	}
	return nil
}

func columnOf(cols []Column, name string) (Column, bool) {
	for _, c := range cols {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

func isKey(key []string, name string) bool {
	for _, k := range key {
		if k == name {
			return true
		}
	}
	return false
}

// textList lists the columns' values as text, comma-separated.
func textList(cols []Column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = textExpr(c)
	}
	return strings.Join(parts, ", ")
}

// keyMatch is the condition that finds a row by its key values (texts, as their types print
// them), as typed literals: an index on the key serves it.
func keyMatch[T string | *string](cols []Column, vals []T) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		var v *string
		switch x := any(vals[i]).(type) {
		case string:
			v = &x
		case *string:
			v = x
		}
		parts[i] = change.QuoteIdent(c.Name) + " = " + literal(v, c.Format)
	}
	return "(" + strings.Join(parts, " AND ") + ")"
}

// literal writes a value (its type's text form; nil for NULL) as an SQL literal of type typ:
// the type's input function reads it, whatever the value holds. A value with a backslash
// becomes an E” literal, which reads the same whether standard_conforming_strings is on or
// off (8.4 defaults to off).
func literal(v *string, typ string) string {
	if v == nil {
		return "NULL"
	}
	q := strings.ReplaceAll(*v, "'", "''")
	if strings.Contains(q, `\`) {
		return "E'" + strings.ReplaceAll(q, `\`, `\\`) + "'::" + typ
	}
	return "'" + q + "'::" + typ
}

// readRows runs a re-read query (key text, hash, xmin, nkey key texts, nval value texts) and
// returns its rows by key text.
func readRows(ctx context.Context, db pg.DB, query string, nkey, nval int) (map[string]sideRow, error) {
	rows, err := db.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, query)
	}
	defer rows.Close()
	out := map[string]sideRow{}
	for rows.Next() {
		r := sideRow{keyVals: make([]*string, nkey), vals: make([]*string, nval)}
		dest := []any{&r.key, &r.hash, &r.xmin}
		for i := range r.keyVals {
			dest = append(dest, &r.keyVals[i])
		}
		for i := range r.vals {
			dest = append(dest, &r.vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out[r.key] = r
	}
	return out, rows.Err()
}
