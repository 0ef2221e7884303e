package main

import (
	"fmt"
	"github.com/alecthomas/kong"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
)

// InitCmd installs or upgrades skiff's schemas.
type InitCmd struct {
	Provider InitRoleCmd `cmd:"" help:"Install or upgrade the provider schema (queues, capture triggers' functions)."`
	Target   InitRoleCmd `cmd:"" help:"Install or upgrade the target schema (subscriptions, applied positions, table states)."`
}

// InitRoleCmd is `init provider` and `init target`.
type InitRoleCmd struct {
	DB string `help:"Database: libpq connection string or URI." required:"" env:"SKIFF_DB"`
}

// Run installs the schema of the role named by the command.
func (c *InitRoleCmd) Run(rt *Runtime, kctx *kong.Context) error {
	role := migrate.Role(kctx.Command()[len("init "):])
	cfg, err := pg.ParseConfig(c.DB, "skiff init")
	if err != nil {
		return err
	}
	res, err := migrate.Up(rt.Ctx, cfg, role)
	if err != nil {
		return fmt.Errorf("%s %s: %w", role, pg.Describe(cfg), err)
	}
	if len(res.Applied) == 0 {
		rt.Log.Info("schema is up to date", "role", string(role), "db", pg.Describe(cfg), "version", res.To)
		return nil
	}
	rt.Log.Info("schema installed", "role", string(role), "db", pg.Describe(cfg), "from", res.From, "to", res.To, "migrations", len(res.Applied))
	return nil
}
