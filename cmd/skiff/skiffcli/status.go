package skiffcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/status"
)

// StatusCmd is `skiff status`: queues, consumers, lag, table states and stalls. The JSON form
// (--json) is status.Report; its fields are documented there and only ever added to. It exits
// 1 when the report lists a problem, 0 otherwise.
type StatusCmd struct {
	Provider        string        `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Target          string        `help:"Target database: adds subscriptions, table states and last errors." env:"SKIFF_TARGET"`
	JSON            bool          `name:"json" help:"Print the report as JSON (stable field names, see status.Report)."`
	StallAfter      time.Duration `help:"Report a ticker or worker silent for this long past its due time." default:"30s"`
	LongTransaction time.Duration `help:"Report provider transactions older than this (they hold back event table rotation)." default:"5m"`
	Watch           watchInterval `help:"Redraw the report every interval until interrupted: --watch (every 2s), --watch 5s or --watch=5s."`
	AbandonedAfter  time.Duration `help:"Report a consumer not seen on the provider for this long as abandoned (it holds back event table rotation), with the command that removes it." default:"1h"`
}

// watchInterval is the optional value of --watch: 0 when the flag is not given, the interval
// that follows it (a duration, or seconds) when there is one, else defaultWatch.
type watchInterval time.Duration

const defaultWatch = 2 * time.Second

// Decode takes the value of --watch=5s, or a duration or a number of seconds that follows
// --watch (status has no positional arguments to confuse it with).
func (w *watchInterval) Decode(ctx *kong.DecodeContext) error {
	*w = watchInterval(defaultWatch)
	tok := ctx.Scan.Peek()
	if !tok.IsValue() {
		return nil // --watch alone, or another flag follows
	}
	s := fmt.Sprint(tok.Value)
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, serr := strconv.ParseFloat(s, 64)
		if serr != nil {
			if tok.Type == kong.FlagValueToken {
				return fmt.Errorf("--watch: %q is not an interval (e.g. 5s, 1m, or seconds)", s)
			}
			return nil // not ours
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return fmt.Errorf("--watch: the interval must be positive, not %q", s)
	}
	ctx.Scan.Pop()
	*w = watchInterval(d)
	return nil
}

// IsBool lets --watch stand without a value.
func (w *watchInterval) IsBool() bool { return true }

// Run prints the status report; with --watch it redraws it every interval until interrupted.
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
	if c.Watch == 0 {
		report, err := status.Collect(rt.Ctx, cfg)
		if err != nil {
			return err
		}
		if err := c.print(rt, report); err != nil {
			return err
		}
		if len(report.Problems) > 0 {
			return exitError{1}
		}
		return nil
	}
	return c.watch(rt, cfg, time.Duration(c.Watch))
}

// watch redraws the report every interval until rt.Ctx ends (a signal); the exit status is
// that of the last report. A report that cannot be taken (a server down) is shown as such and
// counts as a problem; the next round tries again.
func (c *StatusCmd) watch(rt *Runtime, cfg status.Config, every time.Duration) error {
	redraw := !c.JSON && terminal(rt.Out) != nil
	t := time.NewTicker(every)
	defer t.Stop()
	problems := false
	for {
		report, err := status.Collect(rt.Ctx, cfg)
		if rt.Ctx.Err() != nil {
			break
		}
		if redraw {
			fmt.Fprint(rt.Out, "\033[H\033[2J") // cursor home, clear screen
		}
		switch {
		case err != nil:
			problems = true
			fmt.Fprintf(rt.Out, "%s  skiff status: %v (trying again every %s)\n", time.Now().UTC().Format(time.RFC3339), err, every)
		default:
			problems = len(report.Problems) > 0
			if err := c.print(rt, report); err != nil {
				return err
			}
		}
		if !redraw && !c.JSON {
			fmt.Fprintln(rt.Out)
		}
		if !sleep(rt.Ctx, t.C) {
			break
		}
	}
	if problems {
		return exitError{1}
	}
	return nil
}

func sleep(ctx context.Context, c <-chan time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-c:
		return true
	}
}

func (c *StatusCmd) print(rt *Runtime, report *status.Report) error {
	if c.JSON {
		enc := json.NewEncoder(rt.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return status.Text(rt.Out, report)
}
