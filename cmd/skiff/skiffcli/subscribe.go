package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/tabledef"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// SubscribeCmd is `skiff subscribe`: register a consumer of a queue on the provider, record
// the subscription and its table mapping on the target.
type SubscribeCmd struct {
	Provider        string            `help:"Provider database: libpq connection string or URI." required:""`
	Target          string            `help:"Target database: libpq connection string or URI." required:""`
	Queue           string            `help:"Queue (table group) to subscribe to." required:""`
	Table           []string          `help:"Table to replicate, as TABLE or TABLE:DEST (schema.name or name, as SQL writes them: unquoted parts fold to lower case, \"Quoted\" parts are exact, a name without schema follows the search_path of the provider for TABLE, of the target for DEST; DEST renames the table, or only its schema as 'schema.'). Repeatable; default: every table of the queue under its own name." sep:"none"`
	SchemaMap       []string          `help:"Send every table of provider schema A to target schema B, as A=B (schema names as SQL writes them). Repeatable. Recorded with the subscription: tables subscribed later (a second subscribe) follow it too. A --table T:DEST names its own destination." placeholder:"A=B" sep:"none"`
	Skip            []string          `help:"Subscribe TABLE without replicating it: its events are dropped, it is not copied, the target need not have it (the skip handler; skiff status shows it skipped). Repeatable." placeholder:"TABLE" sep:"none"`
	Handler         map[string]string `help:"Custom handler of a table, as TABLE=NAME (a handler registered in the worker, e.g. columns, filter)." mapsep:"none"`
	HandlerConfig   map[string]string `help:"Configuration (JSON) of a table's handler, as TABLE=JSON." mapsep:"none"`
	NoCopy          bool              `help:"Do not copy the tables: the target tables already hold the provider's rows; they are in sync at once."`
	Consumer        string            `help:"Consumer name on the provider (default: the one of the queue's subscription on the target if there is one, else skiff@<target database>/<target id>, the same however the target's URL is spelt)."`
	CopyParallel    int               `help:"Tables copied at once by the initial copy." default:"2"`
	CopySplitRows   int64             `help:"Split the copy of a table the provider estimates at more rows than this into ranges of about this many rows each, copied at once (by as many connections as --copy-parallel) under one exported snapshot: ranges of its pages on a provider 14+ (a plain table, any key; read without an index), else ranges of its primary key (9.2+, a key of one integer column). Otherwise, or with 0, the table is copied in one stream (the log says why). The ranges commit apart: the destination is emptied first and fills as they commit; a copy cut short starts over." default:"0"`
	CopyLockTimeout time.Duration     `help:"How long a copy waits for its destination's lock (the subscription's batches wait meanwhile) before it fails, naming the holder, and is tried again later." default:"5s"`
	Merge           bool              `help:"The subscription's tables are shared with other providers' subscriptions (shards, or an old and a new database during a consolidation): its copy and resyncs truncate nothing and write the provider's rows by key, never erasing another provider's; a TRUNCATE on the provider stops the worker instead of emptying the table. The destination needs a primary key or unique index on the key columns."`
	OnConflict      string            `help:"With --merge, how a conflict on a key is settled (an insert whose key the target holds, an update or delete whose key it lacks): error (the worker stops, naming the table and key), apply-remote (the provider's change wins), keep-local (the target's row stays). Default error; given again on a subscribed queue, it changes the setting (the worker reads it when it starts)." enum:",error,apply-remote,keep-local" default:""`
	CreateTables    bool              `help:"Create the target tables that do not exist, from the provider's definition, in one target transaction before the copy: columns (types, NOT NULL, collations, defaults), the primary key, the sequences the tables' columns draw from and the queue's other captured sequences, missing schemas, and the enum types and domains the columns use (any other type the target lacks is an error naming table, column and type). A table is created in the shape its handlers give the rows: renamed by --table SRC:DEST, with the columns handler's renames and exclusions. The other indexes are created after the copy. Foreign keys, CHECK constraints, triggers and grants are not created. Tables that exist are left alone."`
}

// legacyConsumer is the consumer name skiff derived from the target's connection string
// before targets had an identity (skiff@host:port/db): subscriptions made then keep it.
func legacyConsumer(targetURL string) string {
	cfg, err := pg.ParseConfig(targetURL, "")
	if err != nil {
		return ""
	}
	return fmt.Sprintf("skiff@%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// consumerFor names the consumer of a queue's subscription on the target tgt is connected to:
// explicit when given, else the subscription the target records for the queue (however the
// target's URL is spelt), else the target's default name (apply.DefaultConsumer). found says
// whether the target has that subscription already. When the target has several
// subscriptions of the queue (queues of one name on several providers), the one whose consumer
// the provider at providerURL has registered is taken (connecting to it only then).
func consumerFor(ctx context.Context, tgt *pgx.Conn, explicit, queueName, targetURL, providerURL string) (name string, found bool, err error) {
	if explicit == "" {
		return apply.FindConsumer(ctx, tgt, queueName, legacyConsumer(targetURL), providerConsumers(providerURL, queueName))
	}
	found, err = apply.SubscriptionExists(ctx, tgt, queueName, explicit)
	if err != nil {
		return "", false, fmt.Errorf("target: %w", err)
	}
	return explicit, found, nil
}

// providerConsumers returns a function listing the consumers the provider at url has
// registered for queue ("" url: nil, unknown).
func providerConsumers(url, queueName string) func(context.Context) ([]string, error) {
	if url == "" {
		return nil
	}
	return func(ctx context.Context) ([]string, error) {
		prov, err := pg.Connect(ctx, url, "skiff")
		if err != nil {
			return nil, err
		}
		defer prov.Close(context.WithoutCancel(ctx))
		infos, err := queue.GetConsumerInfo(ctx, prov)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, in := range infos {
			if in.Queue == queueName {
				out = append(out, in.Consumer)
			}
		}
		return out, nil
	}
}

// Run subscribes. A second run for a queue the target already subscribes to resumes it:
// tables subscribed keep their state (only new ones, and ones left copying, are copied).
func (c *SubscribeCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	prov, err := pg.Connect(ctx, c.Provider, "skiff subscribe")
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	if err := requireSchema(ctx, prov, migrate.Provider); err != nil {
		return err
	}
	tgt, err := pg.Connect(ctx, c.Target, "skiff subscribe")
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := migrate.Require(ctx, tgt, migrate.Target, pg.Describe(tgt.Config()), identityVersion); err != nil {
		return err
	}
	if c.OnConflict != "" && !c.Merge {
		return errors.New("--on-conflict is for merged subscriptions: give --merge too")
	}
	merge := ""
	if c.Merge {
		merge = c.OnConflict
		if merge == "" {
			merge = apply.MergeError
		}
		if !slices.Contains(apply.MergeModes, merge) {
			return fmt.Errorf("--on-conflict %s: one of %s", merge, strings.Join(apply.MergeModes, ", "))
		}
	}
	name, existing, err := consumerFor(ctx, tgt, c.Consumer, c.Queue, c.Target, c.Provider)
	if err != nil {
		return err
	}
	infos, err := queue.GetConsumerInfo(ctx, prov)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	registered := slices.ContainsFunc(infos, func(in queue.ConsumerInfo) bool { return in.Queue == c.Queue && in.Consumer == name })
	if existing && !registered && c.Consumer == "" {
		// The target replays a queue of this name from another provider: this provider's
		// subscription is another one, named after the provider too (its identity is the
		// queue, the consumer and the provider that registered it).
		name = name + "/" + pg.Describe(prov.Config())
		if existing, err = apply.SubscriptionExists(ctx, tgt, c.Queue, name); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		registered = slices.ContainsFunc(infos, func(in queue.ConsumerInfo) bool { return in.Queue == c.Queue && in.Consumer == name })
	}
	if existing && !registered {
		// The target replays this queue from a provider that is not this one (or that lost
		// the consumer): its position means nothing here.
		return fmt.Errorf("the target %s already subscribes to queue %s as consumer %s, which the provider %s does not know; "+
			"to subscribe a second provider's queue %s, give another --consumer",
			pg.Describe(tgt.Config()), c.Queue, name, pg.Describe(prov.Config()), c.Queue)
	}

	schemaMap, given, err := c.schemaMap(ctx, tgt, target.Key{Queue: c.Queue, Consumer: name})
	if err != nil {
		return err
	}
	captured, err := queue.Tables(ctx, prov, c.Queue)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	routes, err := c.routes(ctx, prov, tgt, captured, schemaMap)
	if err != nil {
		return err
	}
	if !c.NoCopy {
		// Copied below, after the consumer's position is taken (issue 5).
		for i := range routes {
			if routes[i].Handler != handlers.SkipName {
				routes[i].State = change.StateCopying
			}
		}
	}
	reg := rt.Registry
	var problems []string
	var create []tabledef.Spec
	for i := range routes {
		r := &routes[i]
		if r.Handler == handlers.SkipName {
			continue // the target need not have it
		}
		cols, key, err := providerColumns(ctx, prov, r.Source)
		if err != nil {
			return err
		}
		// The columns the target receives are what the table's handlers make of the
		// provider's: run them over a row of the layout.
		h, err := reg.ForRoute(*r)
		if err != nil {
			return err
		}
		// A partition handler's children are made on demand (or must exist): the table
		// checked, or created, is the one it routes from.
		h = handlers.WithoutRouting(h)
		ev := change.Event{Op: change.Insert, Table: r.Source, Columns: cols, Key: key, Values: make([]change.Value, len(cols))}
		evs, err := handlers.Run(h, &ev, nil)
		if err != nil {
			return fmt.Errorf("table %s: %w", r.Source, err)
		}
		if len(evs) == 0 {
			evs = append(evs, ev) // dropped (a filter on NULL): where it was going
		}
		if c.CreateTables {
			_, exists, err := pg.ResolveTable(ctx, tgt, evs[0].Table)
			if err != nil {
				return fmt.Errorf("target: %w", err)
			}
			if !exists {
				spec, err := createSpec(h, r.Source, cols, key)
				if err != nil {
					return err
				}
				create = append(create, spec)
				continue
			}
		}
		checked := map[change.Table]bool{}
		for _, e := range evs {
			if !checked[e.Table] {
				checked[e.Table] = true
				problems = append(problems, checkTarget(ctx, tgt, r.Source, e.Table, e.Columns)...)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the target is not ready for queue %s:\n  %s", c.Queue, strings.Join(problems, "\n  "))
	}
	var plan *tabledef.Plan
	if c.CreateTables {
		if plan, err = c.createTables(ctx, rt, prov, tgt, routes, create); err != nil {
			return err
		}
	}

	if !registered {
		if _, err := queue.RegisterConsumer(ctx, prov, c.Queue, name); err != nil {
			return fmt.Errorf("provider: %w", err)
		}
		if infos, err = queue.GetConsumerInfo(ctx, prov); err != nil {
			return fmt.Errorf("provider: %w", err)
		}
	}
	var tick int64
	for _, in := range infos {
		if in.Queue == c.Queue && in.Consumer == name {
			tick = in.LastTick
		}
	}
	kind, err := queue.QueueKind(ctx, prov, c.Queue)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	if kind.Logical() {
		// The slot first: every transaction that commits after its confirmed position
		// (settled past the transactions running while it was created, see EnsureSlot) is
		// decoded, and the copies below take their snapshots after it (those they see are
		// skipped by the worker, the others applied).
		slot, created, err := queue.EnsureSlot(ctx, prov, c.Queue, name)
		if err != nil {
			if !registered {
				if _, uerr := queue.UnregisterConsumer(context.WithoutCancel(ctx), prov, c.Queue, name); uerr != nil {
					err = errors.Join(err, fmt.Errorf("provider: %w", uerr))
				}
			}
			return fmt.Errorf("provider: %w", err)
		}
		if created {
			fmt.Fprintf(rt.Out, "replication slot %s created (plugin %s)\n", slot.Name, kind.Plugin)
		}
		if slot.Unsettled != nil {
			rt.Log.Warn("grant TEMPORARY on the provider's database to this role, or check that no DDL ran while the slot was created",
				"queue", c.Queue, "consumer", name, "err", slot.Unsettled)
		}
		tick = 0 // a logical subscription's position is an LSN, recorded by its first batch
	}
	res, err := apply.Subscribe(ctx, tgt, apply.Subscription{
		Queue: c.Queue, Consumer: name, Provider: pg.Describe(prov.Config()), Tick: tick, SchemaMap: given, Merge: merge,
	}, routes)
	if err != nil {
		if !registered {
			// Registered above for nothing: the provider would keep every event for a
			// consumer nobody runs.
			if _, uerr := queue.UnregisterConsumer(context.WithoutCancel(ctx), prov, c.Queue, name); uerr != nil {
				err = errors.Join(err, fmt.Errorf("provider: %w", uerr))
			}
		}
		return err
	}
	if res.Created {
		rt.Log.Info("subscribed", "queue", c.Queue, "consumer", name, "tables", len(routes), "tick", tick)
	} else {
		rt.Log.Info("subscription resumed: tables already subscribed keep their state", "queue", c.Queue, "consumer", name,
			"tables", len(routes), "kept", len(res.Kept))
	}
	var toCopy []change.Route
	for _, r := range res.Routes {
		switch {
		case r.Handler == handlers.SkipName && r.State != change.StateCopying:
			fmt.Fprintf(rt.Out, "%s (skipped)\n", r.Source)
		case slices.Contains(res.Kept, r.Source) && r.State != change.StateCopying:
			fmt.Fprintf(rt.Out, "%s -> %s (%s: already subscribed)\n", r.Source, r.Dest, r.State)
		case r.State == change.StateCopying:
			toCopy = append(toCopy, r)
		default:
			fmt.Fprintf(rt.Out, "%s -> %s (%s)\n", r.Source, r.Dest, r.State)
		}
	}
	if len(toCopy) > 0 {
		err = c.copy(ctx, rt, name, toCopy)
	}
	if plan != nil {
		// Indexes after the copy (faster than maintaining them row by row); also when a
		// table's copy failed: the worker copies it again, into a table with its indexes.
		for _, ix := range plan.Indexes {
			fmt.Fprintf(rt.Out, "create index: %s\n", ix.SQL)
		}
		err = errors.Join(err, plan.CreateIndexes(ctx, tgt))
	}
	return err
}

// createTables creates, in one target transaction, the destination tables of create and the
// sequences of the subscribed tables (and, without --table, every sequence the queue
// captures) that the target lacks.
func (c *SubscribeCmd) createTables(ctx context.Context, rt *Runtime, prov, tgt *pgx.Conn, routes []change.Route, create []tabledef.Spec) (*tabledef.Plan, error) {
	var seqs []change.Table
	if len(c.Table) == 0 {
		all, err := queue.Sequences(ctx, prov, c.Queue)
		if err != nil {
			return nil, fmt.Errorf("provider: %w", err)
		}
		seqs = append(seqs, all...)
	}
	for _, r := range routes {
		ts, err := queue.TableSequences(ctx, prov, r.Source)
		if err != nil {
			return nil, fmt.Errorf("provider: %w", err)
		}
		for _, s := range ts {
			if !slices.Contains(seqs, s) {
				seqs = append(seqs, s)
			}
		}
	}
	plan, err := tabledef.NewPlan(ctx, prov, tgt, create, seqs)
	if err != nil {
		return nil, err
	}
	if err := plan.Create(ctx, tgt); err != nil {
		return nil, err
	}
	for _, s := range plan.Schemas {
		fmt.Fprintf(rt.Out, "created schema %s\n", change.QuoteIdent(s))
	}
	for _, t := range plan.Types {
		fmt.Fprintf(rt.Out, "created type %s\n", t)
	}
	for _, s := range plan.Sequences {
		fmt.Fprintf(rt.Out, "created sequence %s\n", s)
	}
	for _, t := range plan.Tables {
		fmt.Fprintf(rt.Out, "created table %s\n", t)
	}
	for _, w := range plan.Warnings {
		rt.Log.Warn(w)
	}
	return plan, nil
}

// createSpec is the shape a table's handlers h give the rows of provider table src (columns
// cols, key): the destination and each of its columns with the source column it receives.
// Handlers with an SQL form say it; any other is run over a row whose values name their
// columns.
func createSpec(h handlers.Handler, src change.Table, cols, key []string) (tabledef.Spec, error) {
	scols := make([]handlers.SourceColumn, len(cols))
	for i, c := range cols {
		scols[i] = handlers.SourceColumn{Name: c}
	}
	sel, ok, err := handlers.SelectOf(h, handlers.NewSelect(src, scols, key))
	if err != nil {
		return tabledef.Spec{}, fmt.Errorf("table %s: %w", src, err)
	}
	if ok {
		spec := tabledef.Spec{Source: src, Dest: sel.Table}
		for _, c := range sel.Columns {
			spec.Columns = append(spec.Columns, tabledef.Mapped{Name: c.Name, Source: c.Source})
		}
		return spec, nil
	}
	const marker = "skiff --create-tables: the value of column "
	ev := change.Event{Op: change.Insert, Table: src, Columns: cols, Key: key, Values: make([]change.Value, len(cols))}
	for i, c := range cols {
		ev.Values[i] = change.Text(marker + c)
	}
	evs, err := handlers.Run(h, &ev, nil)
	if err != nil {
		return tabledef.Spec{}, fmt.Errorf("table %s: %w", src, err)
	}
	if len(evs) > 1 {
		return tabledef.Spec{}, fmt.Errorf("table %s: its handler sends a row to several tables, so --create-tables cannot tell the shape of its destination: create the tables on the target", src)
	}
	if len(evs) == 1 {
		ev = evs[0]
	}
	if len(evs) == 0 {
		return tabledef.Spec{}, fmt.Errorf("table %s: its handler drops a sample row, so --create-tables cannot tell the shape of its destination: create the table on the target", src)
	}
	spec := tabledef.Spec{Source: src, Dest: ev.Table}
	for i, c := range ev.Columns {
		m := tabledef.Mapped{Name: c}
		if i < len(ev.Values) {
			if s, ok := strings.CutPrefix(ev.Values[i].Text, marker); ok && slices.Contains(cols, s) {
				m.Source = s
			}
		}
		spec.Columns = append(spec.Columns, m)
	}
	return spec, nil
}

// copy runs the initial copy of the routes (state copying on the target), with a progress
// display on a terminal. A table a worker is already copying is left to it; a failed table
// stays in state copying and the worker copies it again.
func (c *SubscribeCmd) copy(ctx context.Context, rt *Runtime, consumer string, routes []change.Route) error {
	cfg, err := copyConfig(c.Provider, c.Target, "skiff subscribe copy", c.CopyParallel, rt.Log, terminal(os.Stderr), rt.Registry)
	if err != nil {
		return err
	}
	cfg.LockTimeout = c.CopyLockTimeout
	cfg.SplitRows = c.CopySplitRows
	res, err := copyRoutes(ctx, cfg, copier.Subscription{Queue: c.Queue, Consumer: consumer}, routes)
	if err != nil && len(res) == 0 {
		return err
	}
	var failed []error
	for _, r := range res {
		switch {
		case r.Err == nil:
			fmt.Fprintf(rt.Out, "%s -> %s (catching-up: %d rows copied)\n", r.Table.Source, r.Table.Dest, r.Rows)
		case errors.Is(r.Err, copier.ErrBusy), errors.Is(r.Err, copier.ErrNotCopying):
			// A worker's table manager copies it, or already has.
			fmt.Fprintf(rt.Out, "%s -> %s (copied by another process)\n", r.Table.Source, r.Table.Dest)
		default:
			fmt.Fprintf(rt.Out, "%s -> %s (copying: FAILED, the worker retries: %v)\n", r.Table.Source, r.Table.Dest, r.Err)
			failed = append(failed, fmt.Errorf("copy %s: %w", r.Table, r.Err))
		}
	}
	return errors.Join(failed...)
}

// routes maps the --table flags (or every captured table) to routes. Source names are
// completed from the provider's search_path, destination names from the target's.
//
// schemaMap (provider schema → target schema) sends a table to the target schema its
// schema maps to, under its own name, unless its --table gives a DEST.
func (c *SubscribeCmd) routes(ctx context.Context, prov, tgt *pgx.Conn, captured []queue.CapturedTable, schemaMap map[string]string) ([]change.Route, error) {
	source := func(flag, spec string, t change.Table) (change.Table, error) {
		t, err := resolve(ctx, prov, "provider", t)
		if err != nil {
			return t, fmt.Errorf("--%s %s: %w", flag, spec, err)
		}
		for _, ct := range captured {
			if ct.Table == t {
				return t, nil
			}
		}
		return t, fmt.Errorf("--%s %s: table %s is not captured by queue %s (skiff table add --queue %s %s)",
			flag, spec, t, c.Queue, c.Queue, t)
	}
	keyed := func(flag string, m map[string]string) (map[change.Table]string, error) {
		out := map[change.Table]string{}
		for spec, v := range m {
			t, err := change.ParseTableName(spec)
			if err != nil {
				return nil, fmt.Errorf("--%s %s: %w", flag, spec, err)
			}
			if t, err = source(flag, spec, t); err != nil {
				return nil, err
			}
			out[t] = v
		}
		return out, nil
	}
	handler, err := keyed("handler", c.Handler)
	if err != nil {
		return nil, err
	}
	config, err := keyed("handler-config", c.HandlerConfig)
	if err != nil {
		return nil, err
	}
	var skipped []change.Table
	for _, spec := range c.Skip {
		t, err := change.ParseTableName(spec)
		if err != nil {
			return nil, fmt.Errorf("--skip %s: %w", spec, err)
		}
		if t, err = source("skip", spec, t); err != nil {
			return nil, err
		}
		if h, ok := handler[t]; ok && h != handlers.SkipName {
			return nil, fmt.Errorf("--skip %s: table %s has --handler %s", spec, t, h)
		}
		handler[t] = handlers.SkipName
		skipped = append(skipped, t)
	}

	mapped := func(src change.Table) change.Table {
		if s, ok := schemaMap[src.Schema]; ok {
			return change.Table{Schema: s, Name: src.Name}
		}
		return src
	}
	var out []change.Route
	add := func(src, dst change.Table) error {
		for _, r := range out {
			if r.Source == src {
				return fmt.Errorf("table %s is given twice", src)
			}
		}
		out = append(out, change.Route{Source: src, Dest: dst, State: change.StateInSync, Handler: handler[src], Config: config[src]})
		return nil
	}
	if len(c.Table) == 0 {
		for _, t := range captured {
			if err := add(t.Table, mapped(t.Table)); err != nil {
				return nil, err
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("queue %s captures no table (skiff table add)", c.Queue)
		}
	}
	for _, spec := range c.Table {
		ts, err := parseTableSpec(spec)
		if err != nil {
			return nil, fmt.Errorf("--table %s: %w", spec, err)
		}
		src, err := source("table", spec, ts.Source)
		if err != nil {
			return nil, err
		}
		dst := ts.dest(src)
		if !ts.HasDest {
			dst = mapped(src)
		}
		if ts.HasDest && !ts.DestSchemaOnly {
			if dst, err = resolve(ctx, tgt, "target", dst); err != nil {
				return nil, fmt.Errorf("--table %s: %w", spec, err)
			}
		}
		if err := add(src, dst); err != nil {
			return nil, err
		}
	}
	for _, t := range skipped {
		if !slices.ContainsFunc(out, func(r change.Route) bool { return r.Source == t }) {
			out = append(out, change.Route{Source: t, Dest: mapped(t), State: change.StateInSync, Handler: handlers.SkipName})
		}
	}
	return out, nil
}

// schemaMap returns the schema map of subscription k: the one the target records (none for
// a new subscription) with the --schema-map flags over it, and the flags alone (given), which
// Subscribe adds to the record.
func (c *SubscribeCmd) schemaMap(ctx context.Context, tgt *pgx.Conn, k target.Key) (all, given map[string]string, err error) {
	given = map[string]string{}
	for _, spec := range c.SchemaMap {
		a, b, ok := cutOutsideQuotes(spec, '=')
		var src, dst change.Table
		if ok {
			src, err = change.ParseTableName(strings.TrimSpace(a))
			if err == nil {
				dst, err = change.ParseTableName(strings.TrimSpace(b))
			}
		}
		if !ok || err != nil || src.Schema != "" || dst.Schema != "" {
			return nil, nil, fmt.Errorf("--schema-map %s: write PROVIDER_SCHEMA=TARGET_SCHEMA (e.g. legacy=app)", spec)
		}
		if prev, dup := given[src.Name]; dup && prev != dst.Name {
			return nil, nil, fmt.Errorf("--schema-map %s: schema %s is mapped twice", spec, change.QuoteIdent(src.Name))
		}
		given[src.Name] = dst.Name
	}
	v, err := target.ReadVersion(ctx, tgt)
	if err != nil {
		return nil, nil, fmt.Errorf("target: %w", err)
	}
	if len(given) > 0 && !v.HasSchemaMap() {
		return nil, nil, fmt.Errorf("--schema-map needs the target schema at version 7 (it is at %d): run skiff init target --db ...", v)
	}
	all, err = target.SchemaMap(ctx, tgt, v, k)
	if err != nil {
		return nil, nil, fmt.Errorf("target: schema map: %w", err)
	}
	for a, b := range given {
		all[a] = b
	}
	return all, given, nil
}

// providerColumns reads a provider table's live columns (attnum order) and primary key from
// the catalog.
func providerColumns(ctx context.Context, conn *pgx.Conn, t change.Table) (cols, key []string, err error) {
	oid, err := catalog.Lookup(ctx, conn, t, "")
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("provider: table %s does not exist", t)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("provider: columns of %s: %w", t, err)
	}
	live, err := catalog.Columns(ctx, conn, oid)
	if err != nil {
		return nil, nil, fmt.Errorf("provider: columns of %s: %w", t, err)
	}
	for _, c := range live {
		cols = append(cols, c.Name)
		if c.Key > 0 {
			key = append(key, c.Name)
		}
	}
	if len(cols) == 0 {
		return nil, nil, fmt.Errorf("provider: table %s does not exist", t)
	}
	return cols, key, nil
}

// checkTarget lists what the target lacks to receive a table: the table, or columns.
func checkTarget(ctx context.Context, conn *pgx.Conn, src, dst change.Table, cols []string) []string {
	var have []string
	oid, err := catalog.Lookup(ctx, conn, dst, "rpf")
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return []string{fmt.Sprintf("table %s: %v", dst, err)}
	}
	if err == nil {
		live, err := catalog.Columns(ctx, conn, oid)
		if err != nil {
			return []string{fmt.Sprintf("table %s: %v", dst, err)}
		}
		have = catalog.Names(live)
	}
	if len(have) == 0 {
		return []string{fmt.Sprintf("table %s (for provider table %s) does not exist on the target (--create-tables creates it from the provider's definition)", dst, src)}
	}
	var out []string
	for _, c := range cols {
		if !slices.Contains(have, c) {
			out = append(out, fmt.Sprintf("column %s of table %s (from provider table %s) does not exist on the target", change.QuoteIdent(c), dst, src))
		}
	}
	return out
}
