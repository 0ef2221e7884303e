// Package skiffcli is skiff's command line as a library: cmd/skiff is Main with the built-in
// handlers, and a custom binary is Main with the user's handlers added
// (skiffcli.Main(skiffcli.WithHandler("name", factory)); see examples/customhandler and
// docs/handlers.md). skiff replicates PostgreSQL tables from a provider to a target
// through capture triggers and an in-database event queue, on every server from PostgreSQL 8.4
// on.
package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/lmittmann/tint"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/pg"
	"golang.org/x/term"
)

// Options configure the command line that Main and Run build.
type Options struct {
	// Registry holds the handlers that subscribe --handler may name and that the worker, the
	// initial copy, resync and compare run. Nil means handlers.NewRegistry(): the built-in ones.
	// Every command of one process uses this one registry, so a custom handler is honoured by
	// all of them.
	Registry *handlers.Registry
	// Version is what --version prints. Empty means what the build knows: the module version,
	// the VCS revision and time.
	Version string
}

// CLI is the whole command line. Every flag can also come from a JSON config file (--config)
// and from a SKIFF_* environment variable (e.g. --log-format from SKIFF_LOG_FORMAT).
type CLI struct {
	Config    kong.ConfigFlag  `help:"Read flags from this JSON file (keys are flag names, e.g. {\"provider\": \"...\"}; an unknown key is an error)." type:"existingfile"`
	LogFormat string           `help:"Log format: auto (text on a terminal, JSON otherwise), text (coloured on a terminal unless NO_COLOR is set) or json (durations in seconds, keys ending in _s)." enum:"auto,text,json" default:"auto"`
	LogLevel  slog.Level       `help:"Log level: debug, info, warn or error." default:"info"`
	Version   kong.VersionFlag `help:"Print the version and exit." env:"-"`

	Init      InitCmd      `cmd:"" help:"Install or upgrade skiff's schema on a provider or a target."`
	Table     TableCmd     `cmd:"" help:"Add, remove or resync captured tables."`
	Queue     QueueCmd     `cmd:"" help:"Show or change a queue's ticker and rotation settings, or drop a queue."`
	Subscribe SubscribeCmd `cmd:"" help:"Subscribe a target to a queue: register the consumer, map tables, copy them."`
	Ticker    TickerCmd    `cmd:"" help:"Run the ticker daemon: cut batches and run queue maintenance."`
	Worker    WorkerCmd    `cmd:"" help:"Run the worker: replay batches of one or more queues on the target."`
	Status    StatusCmd    `cmd:"" help:"Show queues, consumers, lag, table states and stalls."`
	Compare   CompareCmd   `cmd:"" help:"Compare provider and target tables row by row (exit 0 equal, 1 different)."`
	Execute   ExecuteCmd   `cmd:"" help:"Run SQL files (DDL) on the provider and, through the queue, on every target at the same point of the stream."`
	Repair    RepairCmd    `cmd:"" help:"Fix the rows that differ on the target (INSERT/UPDATE/DELETE by key): prints the SQL, runs it with --apply."`
	Event     EventCmd     `cmd:"" help:"Show an event the worker cannot apply; set events aside into a dead-letter table."`

	Switchover SwitchoverCmd `cmd:"" help:"Move the writes of a queue's tables from OLD (provider) to NEW (target): checks, blocks writes on OLD, waits until NEW has applied them, moves sequences, compares; --reverse also replicates NEW back to OLD."`

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
	// Registry holds the handlers of the binary (Options.Registry).
	Registry *handlers.Registry
}

// exitError makes the process exit with a code without being reported as a failure
// (compare's "different" is an answer, not an error).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs the command line on os.Args and exits the process with its code: 0 done, 1
// failed (or compare found differences), 2 bad usage. opts are WithHandler, WithRegistry,
// WithVersion or an Options value, applied in order:
//
//	skiffcli.Main(skiffcli.WithHandler("legacy", legacy.New))
//	skiffcli.Main(skiffcli.Options{Registry: reg, Version: version})
func Main(opts ...Option) {
	os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr, opts...))
}

// kongExit carries the exit code kong asks for (--help, --version) out of the parser, so
// that run returns it instead of ending the process.
type kongExit int

// Run runs the command line on args (without the program name), writing command output to
// stdout and logs to stderr, and returns the exit code. SIGINT and SIGTERM are handled while
// it runs: the first finishes the work in hand, the second abandons it.
func Run(args []string, stdout, stderr io.Writer, options ...Option) (code int) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(e)
		}
	}()
	opts, err := resolveOptions(options)
	if err != nil {
		fmt.Fprintln(stderr, "skiff:", err)
		return 2
	}
	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("skiff"),
		kong.Description("skiff replicates PostgreSQL tables through capture triggers and an in-database queue, from PostgreSQL 8.4 on."),
		kong.UsageOnError(),
		kong.DefaultEnvars("SKIFF"),
		kong.Configuration(strictJSON),
		kong.Vars{"version": versionString(opts.Version)},
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(kongExit(code)) }),
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

	rt := &Runtime{Ctx: soft, Hard: hard, Log: log, Out: stdout, Registry: opts.Registry}
	if err := kctx.Run(rt); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		if errors.Is(err, context.Canceled) && soft.Err() != nil {
			return 0
		}
		log.Error(err.Error(), pg.WithHint(err)...)
		return 1
	}
	return 0
}

// newLogger makes the logger of a command: text (tint) on a terminal, coloured unless
// NO_COLOR is set, JSON otherwise (format "auto"), or the format asked for. In JSON every
// duration is a number of seconds under its key with "_s" appended, so that a machine reads
// one unit everywhere; text shows durations as Go writes them (1.5s).
func newLogger(format string, level slog.Level, w io.Writer) *slog.Logger {
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: !colour(w)}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: secondsAttr}))
}

// secondsAttr renders a duration attribute as seconds: retry_in=1.5s becomes retry_in_s=1.5.
func secondsAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.Float64(a.Key+"_s", a.Value.Duration().Seconds())
	}
	return a
}

// isTerminal reports whether w is a terminal (not merely a character device: /dev/null is
// one too).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// colour reports whether text written to w may be coloured: w is a terminal and NO_COLOR
// (https://no-color.org) is unset or empty.
func colour(w io.Writer) bool {
	return isTerminal(w) && os.Getenv("NO_COLOR") == ""
}

// versionString is the version --version prints: the one given, else the build's.
func versionString(version string) string {
	if version != "" {
		return version
	}
	info, _ := debug.ReadBuildInfo()
	return buildVersion(info)
}

// buildVersion describes a build from its embedded information: the module version
// ("(devel)" for a build from a checkout), the VCS revision (12 digits) and commit time, and
// "modified" when the tree had uncommitted changes.
func buildVersion(info *debug.BuildInfo) string {
	if info == nil {
		return "unknown"
	}
	parts := []string{info.Main.Version}
	if parts[0] == "" {
		parts[0] = "(devel)"
	}
	var rev, when, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	for _, p := range []string{rev, when} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if modified == "true" {
		parts = append(parts, "modified")
	}
	return strings.Join(parts, " ")
}
