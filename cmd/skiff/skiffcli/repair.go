package skiffcli

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
)

// RepairCmd is `skiff repair`: the rows of a subscription's tables that differ between
// provider and target (as `compare --rows` finds them), fixed by key on the target. Without
// --apply it prints the SQL and changes nothing.
type RepairCmd struct {
	Provider string   `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Target   string   `help:"Target database: libpq connection string or URI." required:"" env:"SKIFF_TARGET"`
	Queue    string   `help:"Queue whose subscription's tables to repair." required:"" env:"SKIFF_QUEUE"`
	Consumer string   `help:"Consumer of the subscription, when the target holds several of the queue (default: the target's own, as the worker finds it)."`
	Table    []string `help:"Repair only this table (names as SQL writes them; a name without schema follows the provider's search_path); repeatable." sep:"none"`
	Apply    bool     `help:"Run the statements on the target, in one transaction (default: print them and change nothing)."`
	MaxRows  int      `help:"Fix at most this many differing rows per table in one run." default:"10000"`
	Parallel int      `help:"Tables compared at once." default:"2"`
}

// Run repairs the tables and prints the SQL (a script for psql). Exit status 0 when every
// table is equal or was repaired, 1 when rows were left different (dry run, rows replication
// has yet to bring, a table that cannot be repaired).
func (c *RepairCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	pcfg, err := pg.ParseConfig(c.Provider, "skiff repair")
	if err != nil {
		return err
	}
	tcfg, err := pg.ParseConfig(c.Target, "skiff repair")
	if err != nil {
		return err
	}
	if err := providerInstalled(ctx, pcfg); err != nil {
		return err
	}
	name, routes, err := c.subscription(ctx, tcfg)
	if err != nil {
		return err
	}
	cc := &CompareCmd{Provider: c.Provider, Target: c.Target, Queue: c.Queue, Consumer: name, Table: c.Table}
	pairs, err := cc.pairs(ctx, pcfg, tcfg, rt.Registry)
	if err != nil {
		return err
	}
	// Only tables in sync: a table still copying or catching up differs as it should, and
	// its copy or the queue will write the rows repair would write.
	var refused []string
	for _, p := range pairs {
		state := change.TableState("not subscribed")
		for _, r := range routes {
			if r.Source == p.Source {
				state = r.State
			}
		}
		if state != change.StateInSync {
			refused = append(refused, fmt.Sprintf("%s is %s", p.Source, state))
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("repair works on tables in sync only, and %s (skiff status shows the states; nothing changed)", strings.Join(refused, ", "))
	}
	if len(pairs) == 0 {
		return fmt.Errorf("queue %q: no table to repair", c.Queue)
	}
	if err := cc.addFilters(ctx, pcfg, pairs); err != nil {
		return err
	}
	rt.Log.Info("repairing", "queue", c.Queue, "consumer", name, "tables", len(pairs), "apply", c.Apply,
		"provider", pg.Describe(pcfg), "target", pg.Describe(tcfg))
	rep, err := compare.Repair(ctx, compare.RepairConfig{
		Provider: pcfg, Target: tcfg, Pairs: pairs, Subscription: target.Key{Queue: c.Queue, Consumer: name},
		Apply: c.Apply, MaxRows: c.MaxRows, Parallel: c.Parallel, Log: rt.Log,
	})
	if err != nil {
		return fmt.Errorf("repair: %w (nothing changed)", err)
	}
	return c.print(rt, name, rep)
}

// print writes the report as an SQL script and sets the exit status.
func (c *RepairCmd) print(rt *Runtime, consumer string, rep compare.RepairReport) error {
	out := rt.Out
	mode := "dry run: nothing changed (--apply runs these statements)"
	if rep.Applied {
		mode = "applied"
	}
	fmt.Fprintf(out, "-- skiff repair of subscription %s/%s at tick %d: %s\n", c.Queue, consumer, rep.Tick, mode)
	fixes, left := 0, 0
	for _, r := range rep.Results {
		fixes += len(r.Fixes)
	}
	if fixes > 0 {
		fmt.Fprintln(out, "BEGIN;")
		if rep.Replica {
			fmt.Fprintln(out, "SET LOCAL session_replication_role = replica;")
		}
	}
	for _, r := range rep.Results {
		switch {
		case r.Err != nil:
			fmt.Fprintf(out, "-- %s: cannot repair: %v\n", r.Pair, r.Err)
			left++
			continue
		case r.Equal:
			fmt.Fprintf(out, "-- %s: equal\n", r.Pair)
			continue
		case len(r.Fixes) == 0 && len(r.Pending) == 0:
			fmt.Fprintf(out, "-- %s: equal by now (the differing rows were changed meanwhile)\n", r.Pair)
		case len(r.Fixes) > 0:
			fmt.Fprintf(out, "-- %s: %d rows to fix\n", r.Pair, len(r.Fixes))
		}
		for _, f := range r.Fixes {
			fmt.Fprintln(out, f.SQL)
		}
		for _, p := range r.Pending {
			fmt.Fprintf(out, "-- %s: key %s (%s) was written on the provider after the worker's position: left to replication (run repair again once the worker has caught up)\n",
				r.Pair, p.Key, p.Kind)
		}
		if r.Truncated {
			fmt.Fprintf(out, "-- %s: more rows differ than --max-rows: run repair again\n", r.Pair)
		}
		left += len(r.Pending)
		if r.Truncated {
			left++
		}
	}
	if fixes > 0 {
		fmt.Fprintln(out, "COMMIT;")
	}
	switch {
	case rep.Applied:
		rt.Log.Info("repair applied", "queue", c.Queue, "statements", fixes, "left", left)
	case fixes > 0:
		rt.Log.Warn("rows differ; dry run, nothing changed: run again with --apply", "queue", c.Queue, "statements", fixes)
		left += fixes
	}
	if left > 0 {
		return exitError{code: 1}
	}
	return nil
}

// subscription finds the target's subscription of the queue (--consumer's, else the
// target's own) and its tables; repair holds its lock while it writes.
func (c *RepairCmd) subscription(ctx context.Context, tcfg *pgx.ConnConfig) (string, []change.Route, error) {
	conn, err := pg.ConnectConfig(ctx, tcfg.Copy())
	if err != nil {
		return "", nil, fmt.Errorf("target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := migrate.Require(ctx, conn, migrate.Target, pg.Describe(tcfg), identityVersion); err != nil {
		return "", nil, err
	}
	name, found, err := consumerFor(ctx, conn, c.Consumer, c.Queue, c.Target, c.Provider)
	if err != nil {
		return "", nil, err
	}
	if !found {
		return "", nil, fmt.Errorf("the target %s has no subscription of queue %s: repair fixes a subscription's tables (skiff compare --table compares any two tables)",
			pg.Describe(tcfg), c.Queue)
	}
	id, err := target.SubscriptionID(ctx, conn, target.Key{Queue: c.Queue, Consumer: name})
	if err != nil {
		return "", nil, fmt.Errorf("target: subscription %s/%s: %w", c.Queue, name, err)
	}
	routes, err := target.Routes(ctx, conn, id)
	if err != nil {
		return "", nil, fmt.Errorf("target: read the tables of subscription %s/%s: %w", c.Queue, name, err)
	}
	return name, routes, nil
}
