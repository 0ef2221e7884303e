package skiffcli

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/skiffdb/skiff/internal/metrics"
	"github.com/skiffdb/skiff/ticker"
)

// TickerCmd is `skiff ticker`: the daemon that ticks every queue of one or many provider
// databases and runs their maintenance.
type TickerCmd struct {
	DB              []string      `help:"Provider database (libpq connection string or URI); repeat for several." required:"" sep:"none" env:"SKIFF_DB"`
	AllDatabases    bool          `help:"Treat each --db as an entry point to its server: tick every database of the server that has the provider schema, including ones created later."`
	MetricsAddr     string        `help:"Serve Prometheus metrics on this address (e.g. :9187); empty disables." default:""`
	Poll            time.Duration `help:"How often each queue is offered a tick; its thresholds in the database decide whether it ticks." default:"100ms"`
	Rescan          time.Duration `help:"How often the queue list (and with --all-databases the database list) is read again." default:"30s"`
	MaintSchedule   string        `help:"When to rotate event tables, VACUUM skiff's hot tables and give new partitions or inheritance children of captured tables their capture triggers: a cron expression (5 or 6 fields) or @every DURATION; 'off' disables. Every maintenance step also runs once at start." default:"@every 30s"`
	RetrySchedule   string        `help:"When to move due retry events back into their queues (cron or @every; 'off' disables)." default:"@every 30s"`
	CleanupSchedule string        `help:"When to delete ticks no consumer needs (cron or @every; 'off' disables)." default:"@every 1m"`
	QueryTimeout    time.Duration `help:"Timeout of every statement but VACUUM." default:"10s"`
	LockRetry       time.Duration `help:"How often a standby ticker tries to take over a database another ticker holds." default:"5s"`
	BackoffMax      time.Duration `help:"Longest delay between reconnection attempts to a database that is down." default:"30s"`
}

// Run runs the ticker until the first SIGINT/SIGTERM, then finishes the step in hand and
// returns; a second signal abandons it.
func (c *TickerCmd) Run(rt *Runtime) error {
	cfg := ticker.Config{
		DBs:          c.DB,
		AllDatabases: c.AllDatabases,
		Poll:         c.Poll,
		Rescan:       c.Rescan,
		QueryTimeout: c.QueryTimeout,
		LockRetry:    c.LockRetry,
		BackoffMax:   c.BackoffMax,
	}
	var err error
	if cfg.MaintSchedule, err = parseSchedule("maint-schedule", c.MaintSchedule); err != nil {
		return err
	}
	if cfg.RetrySchedule, err = parseSchedule("retry-schedule", c.RetrySchedule); err != nil {
		return err
	}
	if cfg.CleanupSchedule, err = parseSchedule("cleanup-schedule", c.CleanupSchedule); err != nil {
		return err
	}

	reg := metrics.NewRegistry()
	t, err := ticker.New(cfg, rt.Log, reg)
	if err != nil {
		return err
	}
	srv := metrics.NewServer(c.MetricsAddr, reg, rt.Log)
	if err := srv.Start(rt.Ctx); err != nil {
		return err
	}
	if err := t.Start(rt.Ctx); err != nil {
		srv.Stop()
		return err
	}
	rt.Log.Info("ticker started", "databases", len(c.DB), "all_databases", c.AllDatabases, "poll", c.Poll)
	if err := untilStopped(rt, t, srv); err != nil {
		return err
	}
	rt.Log.Info("ticker stopped")
	return nil
}

// parseSchedule turns a --*-schedule flag into a ticker.Schedule: a standard 5-field cron
// expression, one with a leading seconds field, or a descriptor such as @hourly or
// @every 30s. "off" (or "") disables the step and yields nil.
func parseSchedule(flag, spec string) (ticker.Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || strings.EqualFold(spec, "off") {
		return nil, nil
	}
	p := cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
	s, err := p.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: %w", flag, spec, err)
	}
	return s, nil
}
