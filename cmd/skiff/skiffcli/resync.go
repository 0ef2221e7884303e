package skiffcli

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
)

// TableResyncCmd is `skiff table resync`: put subscribed tables back to state copying on the
// target. The worker's table manager copies them again (truncate and copy in one target
// transaction, under a new provider snapshot; with worker --copy-split-rows a large table in
// key ranges, each its own transaction), then they catch up; the subscription's other tables
// keep replicating meanwhile.
type TableResyncCmd struct {
	Provider string   `help:"Provider database (a table name without schema follows its search_path)." required:"" env:"SKIFF_PROVIDER"`
	Target   string   `help:"Target database: libpq connection string or URI." required:"" env:"SKIFF_TARGET"`
	Queue    string   `help:"Queue of the subscription." required:"" env:"SKIFF_QUEUE"`
	Consumer string   `help:"Consumer name on the provider (default: the one of the queue's subscription on the target)."`
	Tables   []string `arg:"" name:"table" help:"Provider tables to copy again, as SQL writes them: name, schema.name or quoted (\"My Schema\".\"Odd Table\"); unquoted parts fold to lower case."`
}

// Run marks the tables for a new copy.
func (c *TableResyncCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	tgt, err := pg.Connect(ctx, c.Target, "skiff table resync")
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := migrate.Require(ctx, tgt, migrate.Target, pg.Describe(tgt.Config()), identityVersion); err != nil {
		return err
	}
	name, _, err := consumerFor(ctx, tgt, c.Consumer, c.Queue, c.Target, c.Provider)
	if err != nil {
		return err
	}
	// The tables are the provider's: a name without schema follows its search_path.
	prov, err := pg.Connect(ctx, c.Provider, "skiff table resync")
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	sub := copier.Subscription{Queue: c.Queue, Consumer: name}
	var missing []string
	for _, spec := range c.Tables {
		t, err := change.ParseTableName(spec)
		if err != nil {
			return err
		}
		if t, err = resolve(ctx, prov, "provider", t); err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
		ok, err := sub.Resync(ctx, tgt, t)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		if !ok {
			missing = append(missing, t.String())
			continue
		}
		rt.Log.Info("table set to copying; the worker copies it again", "queue", c.Queue, "consumer", name, "table", t.String())
		fmt.Fprintf(rt.Out, "%s: copying (the worker copies it again)\n", t)
	}
	if len(missing) > 0 {
		return errors.New("not subscribed by " + name + " to queue " + c.Queue + ": " + fmt.Sprint(missing))
	}
	return nil
}
