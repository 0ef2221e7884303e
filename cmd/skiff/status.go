package main

import (
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/status"
)

// StatusCmd is `skiff status`: queues, consumers, lag, table states and stalls. The JSON form
// (--json) is status.Report; its fields are documented there and only ever added to.
type StatusCmd struct {
	Provider        string        `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Target          string        `help:"Target database: adds subscriptions, table states and last errors." env:"SKIFF_TARGET"`
	JSON            bool          `name:"json" help:"Print the report as JSON (stable field names, see status.Report)."`
	StallAfter      time.Duration `help:"Report a ticker or worker silent for this long past its due time." default:"30s"`
	LongTransaction time.Duration `help:"Report provider transactions older than this (they hold back event table rotation)." default:"5m"`
	AbandonedAfter  time.Duration `help:"Report a consumer not seen on the provider for this long as abandoned (it holds back event table rotation), with the command that removes it." default:"1h"`
}

// Run prints the status report.
func (c *StatusCmd) Run(rt *Runtime) error {
	cfg := status.Config{StallAfter: c.StallAfter, LongTransaction: c.LongTransaction, AbandonedAfter: c.AbandonedAfter}
	var err error
	if cfg.Provider, err = pg.ParseConfig(c.Provider, "skiff status"); err != nil {
		return err
	}
	if c.Target != "" {
		var t *pgx.ConnConfig
		if t, err = pg.ParseConfig(c.Target, "skiff status"); err != nil {
			return err
		}
		cfg.Target = t
	}
	report, err := status.Collect(rt.Ctx, cfg)
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(rt.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return status.Text(rt.Out, report)
}
