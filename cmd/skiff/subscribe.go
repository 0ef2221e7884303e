package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/change"
	"github.com/skiffdb/skiff/consumer/apply"
	"github.com/skiffdb/skiff/consumer/copier"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// SubscribeCmd is `skiff subscribe`: register a consumer of a queue on the provider, record
// the subscription and its table mapping on the target.
type SubscribeCmd struct {
	Provider        string            `help:"Provider database: libpq connection string or URI." required:""`
	Target          string            `help:"Target database: libpq connection string or URI." required:""`
	Queue           string            `help:"Queue (table group) to subscribe to." required:""`
	Table           []string          `help:"Table to replicate, as TABLE or TABLE:DEST (schema.name or name; DEST renames the table, or only its schema as 'schema.'). Repeatable; default: every table of the queue under its own name." sep:"none"`
	Handler         map[string]string `help:"Custom handler of a table, as TABLE=NAME (a handler registered in the worker, e.g. columns, filter)." mapsep:"none"`
	HandlerConfig   map[string]string `help:"Configuration (JSON) of a table's handler, as TABLE=JSON." mapsep:"none"`
	NoCopy          bool              `help:"Do not copy the tables: the target tables already hold the provider's rows; they are in sync at once."`
	Consumer        string            `help:"Consumer name on the provider (default: derived from the target's host, port and database)."`
	CopyParallel    int               `help:"Tables copied at once by the initial copy." default:"2"`
	CopyLockTimeout time.Duration     `help:"How long a copy waits for its destination's lock (the subscription's batches wait meanwhile) before it fails, naming the holder, and is tried again later." default:"5s"`
}

// consumerName is the default consumer name of a target: the same for subscribe and worker.
func consumerName(explicit, targetURL string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	cfg, err := pg.ParseConfig(targetURL, "")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("skiff@%s:%d/%s", cfg.Host, cfg.Port, cfg.Database), nil
}

// Run subscribes.
func (c *SubscribeCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	name, err := consumerName(c.Consumer, c.Target)
	if err != nil {
		return err
	}
	prov, err := pg.Connect(ctx, c.Provider, "skiff subscribe")
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	tgt, err := pg.Connect(ctx, c.Target, "skiff subscribe")
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if v, err := migrate.Version(ctx, tgt, migrate.Target); err != nil {
		return err
	} else if v == 0 {
		return errors.New("the target has no skiff schema: run skiff init target --db TARGET first")
	}

	captured, err := queue.Tables(ctx, prov, c.Queue)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	routes, err := c.routes(captured)
	if err != nil {
		return err
	}
	if !c.NoCopy {
		// Copied below, after the consumer's position is taken (issue 5).
		for i := range routes {
			routes[i].State = change.StateCopying
		}
	}
	reg := newRegistry()
	var problems []string
	for i := range routes {
		r := &routes[i]
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
		ev := change.Event{Op: change.Insert, Table: r.Source, Columns: cols, Key: key, Values: make([]change.Value, len(cols))}
		if _, err := h.Handle(&ev); err != nil {
			return fmt.Errorf("table %s: %w", r.Source, err)
		}
		problems = append(problems, checkTarget(ctx, tgt, r.Source, ev.Table, ev.Columns)...)
	}
	if len(problems) > 0 {
		return fmt.Errorf("the target is not ready for queue %s:\n  %s", c.Queue, strings.Join(problems, "\n  "))
	}

	if _, err := queue.RegisterConsumer(ctx, prov, c.Queue, name); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	var tick int64
	infos, err := queue.GetConsumerInfo(ctx, prov)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	for _, in := range infos {
		if in.Queue == c.Queue && in.Consumer == name {
			tick = in.LastTick
		}
	}
	provCfg, err := pg.ParseConfig(c.Provider, "")
	if err != nil {
		return err
	}
	created, err := apply.Subscribe(ctx, tgt, apply.Subscription{
		Queue: c.Queue, Consumer: name, Provider: pg.Describe(provCfg), Tick: tick,
	}, routes)
	if err != nil {
		return err
	}
	verb := "subscription updated"
	if created {
		verb = "subscribed"
	}
	rt.Log.Info(verb, "queue", c.Queue, "consumer", name, "tables", len(routes), "tick", tick)
	if !c.NoCopy {
		return c.copy(ctx, rt, name, routes)
	}
	for _, r := range routes {
		fmt.Fprintf(rt.Out, "%s -> %s (%s)\n", r.Source, r.Dest, r.State)
	}
	return nil
}

// copy runs the initial copy of the routes (state copying on the target), with a progress
// display on a terminal. A table a worker is already copying is left to it; a failed table
// stays in state copying and the worker copies it again.
func (c *SubscribeCmd) copy(ctx context.Context, rt *Runtime, consumer string, routes []change.Route) error {
	cfg, err := copyConfig(c.Provider, c.Target, "skiff subscribe copy", c.CopyParallel, rt.Log, terminal(os.Stderr))
	if err != nil {
		return err
	}
	cfg.LockTimeout = c.CopyLockTimeout
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

// routes maps the --table flags (or every captured table) to routes.
func (c *SubscribeCmd) routes(captured []queue.CapturedTable) ([]change.Route, error) {
	find := func(spec string) (change.Table, error) {
		schema, name, qualified := cutOutsideQuotes(spec, '.')
		if !qualified {
			schema, name = "", spec
		}
		schema, name = unquoteIdent(schema), unquoteIdent(name)
		var found []change.Table
		for _, t := range captured {
			if t.Table.Name == name && (schema == "" || t.Table.Schema == schema) {
				found = append(found, t.Table)
			}
		}
		switch len(found) {
		case 0:
			return change.Table{}, fmt.Errorf("table %s is not captured by queue %s (skiff table add --queue %s %s)", spec, c.Queue, c.Queue, spec)
		case 1:
			return found[0], nil
		}
		return change.Table{}, fmt.Errorf("table %s is ambiguous in queue %s: qualify it with its schema", spec, c.Queue)
	}
	var out []change.Route
	add := func(src, dst change.Table) error {
		for _, r := range out {
			if r.Source == src {
				return fmt.Errorf("table %s is given twice", src)
			}
		}
		r := change.Route{Source: src, Dest: dst, State: change.StateInSync}
		for spec, h := range c.Handler {
			if t, err := find(spec); err == nil && t == src {
				r.Handler = h
			}
		}
		for spec, cfg := range c.HandlerConfig {
			if t, err := find(spec); err == nil && t == src {
				r.Config = cfg
			}
		}
		out = append(out, r)
		return nil
	}
	if len(c.Table) == 0 {
		for _, t := range captured {
			if err := add(t.Table, t.Table); err != nil {
				return nil, err
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("queue %s captures no table (skiff table add)", c.Queue)
		}
	}
	for _, spec := range c.Table {
		srcSpec, dstSpec, renamed := cutOutsideQuotes(spec, ':')
		src, err := find(srcSpec)
		if err != nil {
			return nil, err
		}
		dst := src
		if renamed {
			schema, name, qualified := cutOutsideQuotes(dstSpec, '.')
			schema, name = unquoteIdent(schema), unquoteIdent(name)
			switch {
			case !qualified:
				dst.Name = unquoteIdent(dstSpec)
			case name == "":
				dst.Schema = schema
			default:
				dst = change.Table{Schema: schema, Name: name}
			}
			if dst.Name == "" || dst.Schema == "" {
				return nil, fmt.Errorf("--table %s: empty destination", spec)
			}
		}
		if err := add(src, dst); err != nil {
			return nil, err
		}
	}
	for spec := range c.Handler {
		if _, err := find(spec); err != nil {
			return nil, fmt.Errorf("--handler %s: %w", spec, err)
		}
	}
	return out, nil
}

// cutOutsideQuotes cuts s around the first sep that is not inside double quotes, so that
// "My.Schema"."a:b" names one table.
func cutOutsideQuotes(s string, sep byte) (before, after string, found bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted // a doubled quote toggles twice
		case s[i] == sep && !quoted:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unquoteIdent removes the double quotes of a quoted identifier ("" is one quote); unquoted
// text is taken as typed.
func unquoteIdent(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

// providerColumns reads a provider table's live columns (attnum order) and primary key from
// the catalog.
func providerColumns(ctx context.Context, conn *pgx.Conn, t change.Table) (cols, key []string, err error) {
	rows, err := conn.Query(ctx, `SELECT a.attname,
			EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey))
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, t.Schema, t.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("provider: columns of %s: %w", t, err)
	}
	for rows.Next() {
		var name string
		var isKey bool
		if err := rows.Scan(&name, &isKey); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("provider: columns of %s: %w", t, err)
		}
		cols = append(cols, name)
		if isKey {
			key = append(key, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("provider: columns of %s: %w", t, err)
	}
	if len(cols) == 0 {
		return nil, nil, fmt.Errorf("provider: table %s does not exist", t)
	}
	return cols, key, nil
}

// checkTarget lists what the target lacks to receive a table: the table, or columns.
func checkTarget(ctx context.Context, conn *pgx.Conn, src, dst change.Table, cols []string) []string {
	rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped`, dst.Schema, dst.Name)
	if err != nil {
		return []string{fmt.Sprintf("table %s: %v", dst, err)}
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return []string{fmt.Sprintf("table %s: %v", dst, err)}
	}
	if len(have) == 0 {
		return []string{fmt.Sprintf("table %s (for provider table %s) does not exist on the target", dst, src)}
	}
	var out []string
	for _, c := range cols {
		if !slices.Contains(have, c) {
			out = append(out, fmt.Sprintf("column %s of table %s (from provider table %s) does not exist on the target", change.QuoteIdent(c), dst, src))
		}
	}
	return out
}
