// Command skiff replicates PostgreSQL tables from a provider to a target through capture
// triggers and an in-database event queue, on every server from PostgreSQL 8.4 on.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/lmittmann/tint"
)

// version is set by the linker (-X main.version=...).
var version = "dev"

// CLI is the whole command line. Every flag can also come from a JSON config file (--config)
// and from a SKIFF_* environment variable (e.g. --log-format from SKIFF_LOG_FORMAT).
type CLI struct {
	Config    kong.ConfigFlag  `help:"Read flags from this JSON file (keys are flag names, e.g. {\"provider\": \"...\"})." type:"existingfile"`
	LogFormat string           `help:"Log format: auto (colour on a terminal, JSON otherwise), text or json." enum:"auto,text,json" default:"auto"`
	LogLevel  slog.Level       `help:"Log level: debug, info, warn or error." default:"info"`
	Version   kong.VersionFlag `help:"Print the version and exit."`

	Init      InitCmd      `cmd:"" help:"Install or upgrade skiff's schema on a provider or a target."`
	Table     TableCmd     `cmd:"" help:"Add, remove or resync captured tables."`
	Queue     QueueCmd     `cmd:"" help:"Show or change a queue's ticker and rotation settings, or drop a queue."`
	Subscribe SubscribeCmd `cmd:"" help:"Subscribe a target to a queue: register the consumer, map tables, copy them."`
	Ticker    TickerCmd    `cmd:"" help:"Run the ticker daemon: cut batches and run queue maintenance."`
	Worker    WorkerCmd    `cmd:"" help:"Run the worker: replay batches of one or more queues on the target."`
	Status    StatusCmd    `cmd:"" help:"Show queues, consumers, lag, table states and stalls."`
	Compare   CompareCmd   `cmd:"" help:"Compare provider and target tables row by row (exit 0 equal, 1 different)."`

	Unsubscribe UnsubscribeCmd `cmd:"" help:"End a subscription: unregister the consumer on the provider, remove the subscription and its table states on the target."`
	Uninstall   UninstallCmd   `cmd:"" help:"Remove skiff's schema (and, on a provider, its queues and capture triggers) from a database."`
}

// Runtime is what every command's Run receives besides its flags.
type Runtime struct {
	// Ctx is cancelled on the first SIGINT/SIGTERM: finish the work in hand and stop.
	Ctx context.Context
	// Hard is cancelled on the second signal: abandon the work in hand (roll back) and stop.
	Hard context.Context
	Log  *slog.Logger
	Out  io.Writer // command output (tables, JSON) goes here, logs go to stderr
}

// exitError makes the process exit with a code without being reported as a failure
// (compare's "different" is an answer, not an error).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("skiff"),
		kong.Description("skiff replicates PostgreSQL tables through capture triggers and an in-database queue, from PostgreSQL 8.4 on."),
		kong.UsageOnError(),
		kong.DefaultEnvars("SKIFF"),
		kong.Configuration(kong.JSON),
		kong.Vars{"version": version},
		kong.Writers(stdout, stderr),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintln(stderr, "skiff:", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "skiff:", err)
		return 2
	}
	log := newLogger(cli.LogFormat, cli.LogLevel, stderr)
	warnPasswordArgs(log, args)

	soft, stopSoft := context.WithCancel(context.Background())
	hard, stopHard := context.WithCancel(context.Background())
	defer stopSoft()
	defer stopHard()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for sig := range sigs {
			n++
			if n == 1 {
				log.Info("signal received: finishing the work in hand; send again to abort", "signal", sig.String())
				stopSoft()
				continue
			}
			log.Warn("second signal: aborting", "signal", sig.String())
			stopHard()
			return
		}
	}()

	rt := &Runtime{Ctx: soft, Hard: hard, Log: log, Out: stdout}
	if err := kctx.Run(rt); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		if errors.Is(err, context.Canceled) && soft.Err() != nil {
			return 0
		}
		log.Error(err.Error())
		return 1
	}
	return 0
}

func newLogger(format string, level slog.Level, w io.Writer) *slog.Logger {
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}
