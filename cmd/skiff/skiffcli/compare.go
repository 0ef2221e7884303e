package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// CompareCmd is `skiff compare`: row count and checksum of every table of a queue, computed in
// the database on both sides. Exit status 0 when every table is equal, 1 otherwise.
type CompareCmd struct {
	Provider string   `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Target   string   `help:"Target database: libpq connection string or URI." required:"" env:"SKIFF_TARGET"`
	Queue    string   `help:"Queue whose tables to compare." required:"" env:"SKIFF_QUEUE"`
	Consumer string   `help:"Consumer of the subscription whose tables to compare, when the target holds several of the queue (default: the target's own, as the worker finds it)."`
	Table    []string `help:"Compare only this table (TABLE, or TABLE:DEST when no subscription records the mapping; names as SQL writes them, a name without schema follows the search_path of the provider for TABLE, of the target for DEST); repeatable." sep:"none"`
	Rows     bool     `help:"List the keys of differing rows (streams every row's key and hash: for small tables)."`
	MaxRows  int      `help:"List at most this many differing keys per table." default:"100"`
	Parallel int      `help:"Tables compared at once." default:"2"`

	// subscribed: the tables come from a subscription the target records (pairs).
	subscribed bool
	// merged: the subscription is merged (subscribe --merge): its tables are compared as
	// shared ones (compare.Pair.Merged).
	merged bool
	// schemaMap is the subscription's schema map: a captured sequence of provider schema A is
	// compared with the target's of the schema A maps to.
	schemaMap map[string]string
	// skipped lists the subscription's skipped tables (handler skip): not compared.
	skipped []change.Table
}

// Run compares the tables and prints one line per table.
func (c *CompareCmd) Run(rt *Runtime) error {
	pcfg, err := pg.ParseConfig(c.Provider, "skiff compare")
	if err != nil {
		return err
	}
	tcfg, err := pg.ParseConfig(c.Target, "skiff compare")
	if err != nil {
		return err
	}
	if len(c.Table) == 0 {
		// The queue's tables and sequences come from the provider's skiff schema (with
		// --table, compare works between any two databases).
		if err := providerInstalled(rt.Ctx, pcfg); err != nil {
			return err
		}
	}
	pairs, err := c.pairs(rt.Ctx, pcfg, tcfg, rt.Registry)
	if err != nil {
		return err
	}
	for _, t := range c.skipped {
		fmt.Fprintf(rt.Out, "%-50s skipped (the target takes none of its rows: not compared)\n", t)
	}
	if len(pairs) == 0 && len(c.skipped) == 0 {
		return fmt.Errorf("queue %q: no table to compare", c.Queue)
	}
	if err := c.addFilters(rt.Ctx, pcfg, pairs); err != nil {
		return err
	}
	rt.Log.Info("comparing", "queue", c.Queue, "tables", len(pairs), "provider", pg.Describe(pcfg), "target", pg.Describe(tcfg))
	results, err := compare.Run(rt.Ctx, compare.Config{
		Provider: pcfg, Target: tcfg, Pairs: pairs, Rows: c.Rows, MaxRowDiffs: c.MaxRows,
		Parallel: c.Parallel, Log: rt.Log,
	})
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	var differ []string
	for _, r := range results {
		fmt.Fprintf(rt.Out, "%-50s %s\n", r.Pair, r.Summary())
		if len(r.Skipped) > 0 {
			fmt.Fprintf(rt.Out, "    columns on one side only (not compared): %s\n", strings.Join(r.Skipped, ", "))
		}
		for _, d := range r.Diffs {
			fmt.Fprintf(rt.Out, "    key %s: %s\n", d.Key, d.Kind)
		}
		if r.Truncated {
			fmt.Fprintf(rt.Out, "    (more differing keys not listed; --max-rows)\n")
		}
		if r.Err != nil || !r.Equal {
			differ = append(differ, r.Pair.String())
		}
	}
	seqs, err := c.sequences(rt.Ctx, pcfg, tcfg, pairs)
	if err != nil {
		return err
	}
	for _, s := range seqs {
		name := "sequence " + s.name.String()
		switch {
		case s.notCaptured:
			fmt.Fprintf(rt.Out, "%-50s NOT CAPTURED by queue %s (used by table %s): skiff table add --db URL --queue %s %s\n",
				name, c.Queue, s.usedBy, c.Queue, shellWord(sqlName(s.name)))
			differ = append(differ, name)
		case s.Err != nil:
			fmt.Fprintf(rt.Out, "%-50s ERROR: %v\n", name, s.Err)
			differ = append(differ, name)
		case s.Behind:
			fmt.Fprintf(rt.Out, "%-50s BEHIND (provider %s, target %s)\n", name, s.Provider, s.Target)
			differ = append(differ, name)
		default:
			fmt.Fprintf(rt.Out, "%-50s in order (provider %s, target %s)\n", name, s.Provider, s.Target)
		}
	}
	if len(differ) > 0 {
		rt.Log.Warn("tables or sequences differ", "queue", c.Queue, "tables", strings.Join(differ, ", "))
		return exitError{code: 1}
	}
	rt.Log.Info("all tables equal", "queue", c.Queue, "tables", len(results))
	return nil
}

// providerInstalled checks that the provider has skiff's schema.
func providerInstalled(ctx context.Context, pcfg *pgx.ConnConfig) error {
	conn, err := pg.ConnectConfig(ctx, pcfg.Copy())
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return requireSchema(ctx, conn, migrate.Provider)
}

// addFilters sets each pair's Where and Key to its table's capture filter (--where) and key:
// the target holds only the provider rows the filter keeps, and handlers see that key; and
// SourceOnly when the capture does not cover the table's inheritance children (they are not
// its rows on the target, and may be compared on their own).
func (c *CompareCmd) addFilters(ctx context.Context, pcfg *pgx.ConnConfig, pairs []compare.Pair) error {
	conn, err := pg.ConnectConfig(ctx, pcfg.Copy())
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	captured, err := queue.Tables(ctx, conn, c.Queue)
	switch {
	case errors.Is(err, queue.ErrNoQueue) || errors.Is(err, queue.ErrNotInstalled):
		return nil // --table on a provider without the queue (or without skiff): no filters
	case err != nil:
		return fmt.Errorf("provider: %w", err)
	}
	for i := range pairs {
		for _, t := range captured {
			if t.Table == pairs[i].Source {
				pairs[i].Where, pairs[i].Key, pairs[i].SourceOnly = t.Where, t.Key, !t.WithChildren
			}
		}
	}
	return nil
}

// pairs lists the tables to compare: --table when given, else the tables the target's
// subscription to the queue records (with their destination names and handlers: the target
// is compared with what the handlers make of the provider's rows), else every table the
// queue captures under its own name. The subscription is one: --consumer's, else the one
// the worker would replay (consumerFor); other subscriptions of the queue — other consumers
// into this target — have tables of their own.
func (c *CompareCmd) pairs(ctx context.Context, pcfg, tcfg *pgx.ConnConfig, reg *handlers.Registry) ([]compare.Pair, error) {
	routes, found, err := c.subscribedTables(ctx, tcfg)
	if err != nil {
		return nil, err
	}
	c.subscribed = found && len(routes) > 0
	recorded := make([]compare.Pair, 0, len(routes))
	var skipped []change.Table
	for _, r := range routes {
		h, err := reg.ForRoute(r)
		if err != nil {
			return nil, fmt.Errorf("cannot compare through the handlers: %w", err) // names the table
		}
		if handlers.Skips(h) {
			skipped = append(skipped, r.Source) // the target takes nothing of it
			continue
		}
		recorded = append(recorded, compare.Pair{Source: r.Source, Dest: r.Dest, Handler: h, Merged: c.merged})
	}
	c.skipped = skipped
	if len(c.Table) == 0 {
		if c.subscribed {
			return recorded, nil
		}
		// No subscription yet: every table the queue captures, under its own name.
		conn, err := pg.ConnectConfig(ctx, pcfg.Copy())
		if err != nil {
			return nil, fmt.Errorf("provider: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		captured, err := queue.Tables(ctx, conn, c.Queue)
		if err != nil {
			return nil, fmt.Errorf("provider: %w", err)
		}
		out := make([]compare.Pair, 0, len(captured))
		for _, t := range captured {
			out = append(out, compare.Pair{Source: t.Table, Dest: t.Table})
		}
		return out, nil
	}
	prov, err := pg.ConnectConfig(ctx, pcfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	tgt, err := pg.ConnectConfig(ctx, tcfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	var out []compare.Pair
	c.skipped = nil // only those --table names
	for _, spec := range c.Table {
		ts, err := parseTableSpec(spec)
		if err != nil {
			return nil, fmt.Errorf("--table %s: %w", spec, err)
		}
		p := compare.Pair{}
		if p.Source, err = resolve(ctx, prov, "provider", ts.Source); err != nil {
			return nil, fmt.Errorf("--table %s: %w", spec, err)
		}
		if slices.Contains(skipped, p.Source) && !ts.HasDest {
			c.skipped = append(c.skipped, p.Source)
			continue
		}
		p.Dest = ts.dest(p.Source)
		switch {
		case ts.HasDest && !ts.DestSchemaOnly:
			if p.Dest, err = resolve(ctx, tgt, "target", p.Dest); err != nil {
				return nil, fmt.Errorf("--table %s: %w", spec, err)
			}
		case !ts.HasDest:
			for _, r := range recorded {
				if r.Source == p.Source {
					p.Dest, p.Handler = r.Dest, r.Handler
				}
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// sequenceResult is a sequence compare checks: a captured one compared with the target's, or
// one a compared table uses that the queue does not capture (nothing moves the target's).
type sequenceResult struct {
	compare.Sequence
	name        change.Table
	notCaptured bool
	usedBy      change.Table
}

// sequences compares the sequences of the compared tables (owned by their serial or identity
// columns, or called by their defaults) and, without --table, every sequence the queue
// captures — of a subscription, only those of its tables and those of no table of the queue:
// another target's tables' sequences are not this target's. A sequence of a compared table
// the queue does not capture, and a target sequence behind the provider's, are differences.
func (c *CompareCmd) sequences(ctx context.Context, pcfg, tcfg *pgx.ConnConfig, pairs []compare.Pair) ([]sequenceResult, error) {
	conn, err := pg.ConnectConfig(ctx, pcfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	vals, err := queue.GetSequences(ctx, conn, c.Queue)
	switch {
	case len(c.Table) > 0 && (errors.Is(err, queue.ErrNoQueue) || errors.Is(err, queue.ErrNotInstalled)):
		// --table on a provider without the queue: only the tables are compared.
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("provider: %w", err)
	}
	captured := make(map[change.Table]compare.SequenceValue, len(vals))
	for _, v := range vals {
		captured[change.Table{Schema: v.Schema, Name: v.Name}] = compare.SequenceValue{Last: v.LastValue, Called: v.Called}
	}
	check := map[change.Table]compare.SequenceValue{}
	if len(c.Table) == 0 {
		if c.subscribed {
			// The subscription's tables bring their sequences (below); a sequence the queue
			// captures that no table of it draws from stands alone and goes to every target.
			alone, err := c.standaloneSequences(ctx, conn, captured)
			if err != nil {
				return nil, err
			}
			maps.Copy(check, alone)
		} else {
			maps.Copy(check, captured)
		}
	}
	var out []sequenceResult
	missing := map[change.Table]bool{}
	for _, p := range pairs {
		used, err := queue.TableSequences(ctx, conn, p.Source)
		if err != nil {
			return nil, fmt.Errorf("provider: %w", err)
		}
		for _, sq := range used {
			v, ok := captured[sq]
			switch {
			case ok:
				check[sq] = v
			case !missing[sq]:
				missing[sq] = true
				out = append(out, sequenceResult{name: sq, notCaptured: true, usedBy: p.Source})
			}
		}
	}
	if len(c.schemaMap) > 0 {
		mapped := make(map[change.Table]compare.SequenceValue, len(check))
		for sq, v := range check {
			if s, ok := c.schemaMap[sq.Schema]; ok {
				sq.Schema = s
			}
			mapped[sq] = v
		}
		check = mapped
	}
	cmp, err := compare.Sequences(ctx, tcfg, check)
	if err != nil {
		return nil, err
	}
	for _, s := range cmp {
		out = append(out, sequenceResult{Sequence: s, name: s.Sequence})
	}
	slices.SortFunc(out, func(a, b sequenceResult) int { return strings.Compare(a.name.String(), b.name.String()) })
	return out, nil
}

// sqlName writes a table or sequence name as a user would type it: parts quoted only when
// they need it.
func sqlName(t change.Table) string {
	part := func(s string) string {
		for i, r := range s {
			if !(r == '_' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
				return change.QuoteIdent(s)
			}
		}
		if s == "" {
			return `""`
		}
		return s
	}
	return part(t.Schema) + "." + part(t.Name)
}

// shellWord quotes s for a POSIX shell when it holds anything but letters, digits and ._-@:/.
func shellWord(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@:/,=", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

// standaloneSequences returns the captured sequences that no table of the queue draws from.
func (c *CompareCmd) standaloneSequences(ctx context.Context, conn *pgx.Conn, captured map[change.Table]compare.SequenceValue) (map[change.Table]compare.SequenceValue, error) {
	users, err := queue.SequenceUsers(ctx, conn, c.Queue)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	out := map[change.Table]compare.SequenceValue{}
	for sq, v := range captured {
		if queue.SequenceBelongs(users[sq], nil) {
			out[sq] = v
		}
	}
	return out, nil
}

// subscribedTables reads the routes (source → destination, handler and its configuration)
// the target records for the queue's subscription — --consumer's, else the target's own
// (consumerFor: by queue, however the target's URL is spelt) — and whether there is one;
// none when the target has no skiff schema or no such subscription yet. An explicit
// --consumer the target does not know is an error.
func (c *CompareCmd) subscribedTables(ctx context.Context, tcfg *pgx.ConnConfig) ([]change.Route, bool, error) {
	conn, err := pg.ConnectConfig(ctx, tcfg.Copy())
	if err != nil {
		return nil, false, fmt.Errorf("target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'skiff' AND c.relname = 'table_state')`).Scan(&exists); err != nil {
		return nil, false, fmt.Errorf("target: %w", err)
	}
	if !exists {
		if c.Consumer != "" {
			return nil, false, fmt.Errorf("the target %s has no skiff schema, hence no subscription of consumer %s", pg.Describe(tcfg), c.Consumer)
		}
		return nil, false, nil
	}
	if err := migrate.Require(ctx, conn, migrate.Target, pg.Describe(tcfg), identityVersion); err != nil {
		return nil, false, err
	}
	name, found, err := consumerFor(ctx, conn, c.Consumer, c.Queue, c.Target, c.Provider)
	if err != nil {
		return nil, false, err
	}
	if !found {
		if c.Consumer != "" {
			return nil, false, fmt.Errorf("the target %s has no subscription of queue %s for consumer %s", pg.Describe(tcfg), c.Queue, c.Consumer)
		}
		return nil, false, nil
	}
	out, err := target.RoutesOf(ctx, conn, target.Key{Queue: c.Queue, Consumer: name})
	if err != nil {
		return nil, false, fmt.Errorf("target: read the tables of subscription %s/%s: %w", c.Queue, name, err)
	}
	v, err := target.ReadVersion(ctx, conn)
	if err != nil {
		return nil, false, fmt.Errorf("target: %w", err)
	}
	m, err := copier.Subscription{Queue: c.Queue, Consumer: name}.MergeMode(ctx, conn)
	if err != nil {
		return nil, false, fmt.Errorf("target: read the merge settings of subscription %s/%s: %w", c.Queue, name, err)
	}
	c.merged = m != ""
	if c.schemaMap, err = target.SchemaMap(ctx, conn, v, target.Key{Queue: c.Queue, Consumer: name}); err != nil {
		return nil, false, fmt.Errorf("target: read the schema map of subscription %s/%s: %w", c.Queue, name, err)
	}
	return out, true, nil
}
