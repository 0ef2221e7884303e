package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// UnsubscribeCmd is `skiff unsubscribe`: the end of a subscription, on both sides.
type UnsubscribeCmd struct {
	Provider string `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Target   string `help:"Target database: its subscription and table states are removed. Omit it (and give --consumer) when the target is gone: only the consumer's registration on the provider is removed." env:"SKIFF_TARGET"`
	Queue    string `help:"Queue subscribed to." required:""`
	Consumer string `help:"Consumer name on the provider (default: derived from the target's host, port and database, as skiff subscribe does)."`
	Force    bool   `help:"Remove the subscription even while a worker holds it (that worker stops at its next batch)."`
}

// Run unregisters the consumer on the provider and removes the subscription on the target,
// holding the subscription's worker lock on the target meanwhile.
func (c *UnsubscribeCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	if c.Target == "" && c.Consumer == "" {
		return errors.New("give --target (the consumer name derives from it), or --consumer NAME to unregister it on the provider alone")
	}
	// The consumer's name: --consumer, else the one the target's subscription to the queue
	// records (however the target's URL is spelt).
	name := c.Consumer
	var tgt *pgx.Conn
	tgtVersion := int64(0)
	if c.Target != "" {
		var err error
		if tgt, err = pg.Connect(ctx, c.Target, "skiff unsubscribe"); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		defer tgt.Close(context.WithoutCancel(ctx))
		if tgtVersion, err = migrate.Version(ctx, tgt, migrate.Target); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		if name == "" && tgtVersion > 0 {
			if name, _, err = consumerFor(ctx, tgt, "", c.Queue, c.Target, c.Provider); err != nil {
				return err
			}
		}
	}
	if name == "" {
		return errors.New("the target has no skiff schema to name the consumer: give --consumer NAME")
	}
	prov, err := pg.Connect(ctx, c.Provider, "skiff unsubscribe")
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	registered := false
	unregister := func(ctx context.Context) error {
		ok, err := queue.UnregisterConsumer(ctx, prov, c.Queue, name)
		switch {
		case errors.Is(err, queue.ErrNoQueue):
			// Dropped with queue drop --force: no consumer left to unregister.
		case err != nil:
			return fmt.Errorf("provider: %w", oneLine(err))
		}
		registered = ok
		return nil
	}
	var res *apply.Unsubscribed
	if c.Target == "" {
		if err := unregister(ctx); err != nil {
			return err
		}
	} else if tgtVersion == 0 {
		if err := unregister(ctx); err != nil {
			return err
		}
	} else if res, err = apply.Unsubscribe(ctx, tgt, c.Queue, name, c.Force, unregister); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	found := res != nil && res.Found
	if !registered && !found {
		if c.Target == "" {
			return fmt.Errorf("consumer %s is not registered on queue %s of the provider", name, c.Queue)
		}
		return fmt.Errorf("consumer %s is not registered on queue %s of the provider and has no subscription on the target", name, c.Queue)
	}
	if registered {
		fmt.Fprintf(rt.Out, "consumer %s unregistered from queue %s on the provider\n", name, c.Queue)
	} else {
		fmt.Fprintf(rt.Out, "consumer %s was not registered on queue %s of the provider\n", name, c.Queue)
	}
	if found {
		if res.Holder != "" {
			rt.Log.Warn("a worker holds the subscription: removed anyway (--force); that worker stops at its next batch",
				"queue", c.Queue, "consumer", name, "holder", res.Holder)
		}
		fmt.Fprintf(rt.Out, "subscription of consumer %s to queue %s removed from the target (%s)\n", name, c.Queue, plural(res.Tables, "table"))
	} else if c.Target != "" {
		fmt.Fprintf(rt.Out, "the target has no subscription of consumer %s to queue %s\n", name, c.Queue)
	}
	return nil
}

// QueueDropCmd is `skiff queue drop`.
type QueueDropCmd struct {
	DB    string `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_DB"`
	Queue string `help:"Queue (table group) to drop." required:""`
	Force bool   `help:"Drop it even while consumers are registered (they are unregistered; their workers stop)."`
}

// Run drops the queue with its capture triggers and functions, event tables and sequence.
func (c *QueueDropCmd) Run(rt *Runtime) error {
	conn, err := pg.Connect(rt.Ctx, c.DB, "skiff queue drop")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(rt.Ctx))
	d, err := queue.DropQueue(rt.Ctx, conn, c.Queue, c.Force)
	if err != nil {
		return oneLine(err)
	}
	printDropped(rt, c.Queue, d)
	return nil
}

func printDropped(rt *Runtime, name string, d *queue.Dropped) {
	fmt.Fprintf(rt.Out, "dropped queue %s (%s, %s no longer captured; %s unregistered)\n", name,
		plural(len(d.Tables), "table"), plural(len(d.Sequences), "sequence"), plural(len(d.Consumers), "consumer"))
	for _, cons := range d.Consumers {
		rt.Log.Warn("consumer unregistered with its queue: remove its subscription on its target with skiff unsubscribe --provider URL --target URL",
			"queue", name, "consumer", cons)
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// UninstallCmd removes skiff's schemas.
type UninstallCmd struct {
	Provider UninstallRoleCmd `cmd:"" help:"Remove the provider schema: queues, capture triggers and functions, event tables."`
	Target   UninstallRoleCmd `cmd:"" help:"Remove the target schema: subscriptions, applied positions, table states."`
}

// UninstallRoleCmd is `uninstall provider` and `uninstall target`.
type UninstallRoleCmd struct {
	DB    string `help:"Database: libpq connection string or URI." required:"" env:"SKIFF_DB"`
	Force bool   `help:"Uninstall even while queues (provider) or subscriptions (target) exist: they are dropped."`
}

// Run removes the schema of the role named by the command: everything its migrations made
// (by running them down), then schema skiff itself unless the other role still uses it.
func (c *UninstallRoleCmd) Run(rt *Runtime, kctx *kong.Context) error {
	role := migrate.Role(kctx.Command()[len("uninstall "):])
	ctx := rt.Ctx
	cfg, err := pg.ParseConfig(c.DB, "skiff uninstall")
	if err != nil {
		return err
	}
	conn, err := pg.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if v, err := migrate.Version(ctx, conn, role); err != nil {
		return err
	} else if v == 0 {
		fmt.Fprintf(rt.Out, "no %s schema of skiff in %s: nothing to uninstall\n", role, pg.Describe(cfg))
		return nil
	}
	switch role {
	case migrate.Provider:
		if err := c.dropQueues(rt, conn); err != nil {
			return err
		}
	case migrate.Target:
		if err := c.checkSubscriptions(rt, conn); err != nil {
			return err
		}
	}
	res, err := migrate.Uninstall(ctx, cfg, role)
	if err != nil {
		return fmt.Errorf("%s %s: %w", role, pg.Describe(cfg), err)
	}
	msg := "schema skiff dropped"
	switch {
	case res.SchemaKeptFor != "":
		msg = "schema skiff kept: the " + string(res.SchemaKeptFor) + " schema is installed in it"
	case len(res.SchemaKeptWith) > 0:
		msg = "schema skiff kept: it holds objects skiff did not make: " + strings.Join(res.SchemaKeptWith, ", ")
		rt.Log.Warn(msg, "db", pg.Describe(cfg))
	}
	fmt.Fprintf(rt.Out, "%s schema removed from %s (%s)\n", role, pg.Describe(cfg), msg)
	return nil
}

// dropQueues drops every queue of the provider (refused without --force while there are any).
func (c *UninstallRoleCmd) dropQueues(rt *Runtime, conn *pgx.Conn) error {
	infos, err := queue.GetQueueInfo(rt.Ctx, conn)
	if err != nil {
		return err
	}
	if len(infos) == 0 {
		return nil
	}
	names := make([]string, len(infos))
	for i, q := range infos {
		names[i] = q.Name
	}
	if !c.Force {
		return fmt.Errorf("the provider has queues: %s; drop them first (skiff queue drop --db URL --queue Q), or give --force", strings.Join(names, ", "))
	}
	for _, q := range names {
		d, err := queue.DropQueue(rt.Ctx, conn, q, true)
		if err != nil {
			return oneLine(err)
		}
		printDropped(rt, q, d)
	}
	return nil
}

// checkSubscriptions refuses, without --force, while the target has subscriptions; with it,
// it says which consumers stay registered on their providers (they hold back rotation there
// until unregistered).
func (c *UninstallRoleCmd) checkSubscriptions(rt *Runtime, conn *pgx.Conn) error {
	subs, err := target.Subscriptions(rt.Ctx, conn)
	if err != nil {
		return fmt.Errorf("read subscriptions: %w", err)
	}
	if len(subs) == 0 {
		return nil
	}
	if !c.Force {
		names := make([]string, len(subs))
		for i, s := range subs {
			names[i] = s.Queue + "/" + s.Consumer
		}
		return fmt.Errorf("the target has subscriptions: %s; end them first (skiff unsubscribe --provider URL --target URL --queue Q), or give --force",
			strings.Join(names, ", "))
	}
	for _, s := range subs {
		rt.Log.Warn(fmt.Sprintf("consumer %s stays registered on the provider of queue %s and holds back its event table rotation: "+
			"skiff unsubscribe --provider URL --queue %s --consumer %s", s.Consumer, s.Queue, s.Queue, shellWord(s.Consumer)),
			"provider", s.Provider)
	}
	return nil
}
