package skiffcli

import (
	"context"
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// identityVersion is the target schema version subscribe, resync and the worker need: 4 gives
// a target its identity (skiff.target), which default consumer names come from; 5 records a
// failed copy's error (table_state.copy_error).
const identityVersion = 5

// requireSchema checks that the database conn is connected to has skiff's schema of a role,
// or says how to install it.
func requireSchema(ctx context.Context, conn *pgx.Conn, role migrate.Role) error {
	return migrate.Require(ctx, conn, role, pg.Describe(conn.Config()), 1)
}

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
		return oneLine(fmt.Errorf("init %s %s: %w", role, pg.Describe(cfg), err))
	}
	if len(res.Applied) == 0 {
		rt.Log.Info("schema is up to date", "role", string(role), "db", pg.Describe(cfg), "version", res.To)
	} else {
		rt.Log.Info("schema installed", "role", string(role), "db", pg.Describe(cfg), "from", res.From, "to", res.To, "migrations", len(res.Applied))
	}
	if role != migrate.Provider {
		return nil
	}
	return upgradeCaptures(rt, cfg)
}

// upgradeCaptures regenerates the capture functions an older skiff made, and fails naming
// each table whose function could not be regenerated.
func upgradeCaptures(rt *Runtime, cfg *pgx.ConnConfig) error {
	conn, err := pg.ConnectConfig(rt.Ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(rt.Ctx))
	done, err := queue.UpgradeCaptures(rt.Ctx, conn)
	if err != nil {
		return err
	}
	var failed []string
	for _, u := range done {
		if u.Err != nil {
			rt.Log.Error("capture trigger not regenerated", "queue", u.Queue, "table", u.Table.String(), "err", u.Err)
			failed = append(failed, u.Table.String())
			continue
		}
		rt.Log.Info("capture trigger regenerated", "queue", u.Queue, "table", u.Table.String())
	}
	if len(failed) > 0 {
		return fmt.Errorf("capture triggers of %s were not regenerated (see above): fix each with skiff table add --refresh [--where ...]",
			strings.Join(failed, ", "))
	}
	late, err := queue.CapturesFiredBefore(rt.Ctx, conn)
	if err != nil {
		return err
	}
	for _, f := range late {
		rt.Log.Warn("capture triggers fire after triggers of the table's own, whose changes to the row that fired them "+
			"(or rows inserted after a TRUNCATE) reach the queue before that change: move the capture to the new trigger names",
			"queue", f.Queue, "table", f.Table.String(), "triggers", strings.Join(f.Triggers, ", "),
			"fix", fmt.Sprintf("as the table's owner: DROP TRIGGER %s ON %s; then at once skiff table add --db PROVIDER --queue %s --refresh %s",
				change.QuoteIdent(f.Drop), f.Table, f.Queue, f.Table))
	}
	gaps, err := queue.CaptureGaps(rt.Ctx, conn)
	if err != nil {
		return err
	}
	for _, g := range gaps {
		rt.Log.Warn("writes not captured", "queue", g.Queue, "table", g.Table.String(), "problem", g.Problem())
	}
	return nil
}
