// Command bench measures skiff against the replicators a user would pick instead — Londiste3
// with PgQ, built-in logical replication and pglogical — side by side in one run, and writes a
// table of ratios (skiff / peer): printed, and written to the file -out names (`make bench`
// writes docs/benchmarks.md).
//
// Run it with `make bench` (full size) or `make bench BENCH_SIZE=quick`, or directly:
//
//	go run ./scripts/bench -size quick -skiff bin/skiff -out docs/benchmarks.md
//
// The quick size takes about 15 minutes on a 2-core machine, the full size about 2½ hours.
// With -old VERSION (make bench BENCH_FLAGS='-old 8.4', the server found through
// SKIFF_PG_BINDIRS) the capture overhead is measured on that older server too, and skiff's
// large transaction with a provider of that version.
//
// Every system gets its own provider and target clusters (PostgreSQL 15, started with
// internal/pgtest, fsync and synchronous_commit on). Repetitions are interleaved (A 1, B 1, A 2,
// …) so that the noise of the machine hits every system alike. A peer that cannot run here is
// skipped with its reason; so is skiff while its commands are not built. Benchmarks are not
// tests: nothing here passes or fails on a figure.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// size is one benchmark size: how much work each measurement does.
type size struct {
	Name           string
	Reps           int           // repetitions of every measurement
	PgbenchScale   int           // pgbench scale of the capture-overhead database
	PgbenchTime    time.Duration // duration of one pgbench run
	PgbenchClients int
	BulkRows       int     // rows of the bulk insert of the capture-overhead measurement
	ApplyRows      int     // changes in the apply backlog
	TxnRows        int     // rows per provider transaction when building a backlog
	CopyMB         float64 // size of the initial-copy table
	LagRates       []int   // provider transactions per second while measuring lag, one measurement each
	LagTime        time.Duration
	BigTxRows      int // rows inserted, then updated, in the one provider transaction of "bigtx"
}

var sizes = map[string]size{
	"quick": {Name: "quick", Reps: 3, PgbenchScale: 5, PgbenchTime: 8 * time.Second, PgbenchClients: 8,
		BulkRows: 100_000, ApplyRows: 100_000, TxnRows: 200, CopyMB: 200, LagRates: []int{200, 2000}, LagTime: 10 * time.Second, BigTxRows: 200_000},
	"full": {Name: "full", Reps: 5, PgbenchScale: 20, PgbenchTime: 30 * time.Second, PgbenchClients: 8,
		BulkRows: 1_000_000, ApplyRows: 1_000_000, TxnRows: 200, CopyMB: 2000, LagRates: []int{200, 2000}, LagTime: 60 * time.Second, BigTxRows: 1_000_000},
}

// config is the command line.
type config struct {
	Size     size
	SkiffBin string
	Out      string
	Sections map[string]bool
	Systems  map[string]bool
	Version  string
	Command  string
	Note     string // printed at the top of the report
	// Old is an older major version on which the capture overhead is measured too, and
	// skiff's large transaction with a provider of it (empty: none).
	Old string
}

var allSections = []string{"capture", "apply", "parallel", "copy", "lag", "bigtx", "handlers"}

func main() {
	sizeName := flag.String("size", "full", "benchmark size: quick (a few minutes) or full")
	reps := flag.Int("reps", 0, "repetitions of every measurement (0: the size's default)")
	skiffBin := flag.String("skiff", "bin/skiff", "the skiff binary to drive")
	// No default file: a partial run (-only, -systems, -reps 1) must not overwrite the record
	// that `make bench` writes (it passes -out docs/benchmarks.md).
	out := flag.String("out", "", "markdown report (and its .svg plot) to write, e.g. docs/benchmarks.md; empty: print only")
	sections := flag.String("only", strings.Join(allSections, ","), "sections to run: "+strings.Join(allSections, ","))
	systems := flag.String("systems", "skiff,skiff-logical,londiste,builtin,pglogical", "systems to measure (capture overhead always has its own variants)")
	note := flag.String("note", "", "a note printed at the top of the report (e.g. the machine was shared)")
	version := flag.String("pg", "15", "PostgreSQL major version of the clusters")
	oldVersion := flag.String("old", "", "an older PostgreSQL version (e.g. 8.4, found through SKIFF_PG_BINDIRS): the capture overhead is measured on it too, and skiff's large transaction with a provider of it")
	flag.Parse()

	if *sizeName == "" {
		*sizeName = "full"
	}
	sz, ok := sizes[*sizeName]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: unknown size %q (quick or full)\n", *sizeName)
		os.Exit(2)
	}
	if *reps > 0 {
		sz.Reps = *reps
	}
	if abs, err := filepath.Abs(*skiffBin); err == nil {
		*skiffBin = abs
	}
	cfg := config{
		Size: sz, SkiffBin: *skiffBin, Out: *out, Version: *version,
		Sections: set(*sections), Systems: set(*systems),
		Command: commandLine(), Note: *note, Old: *oldVersion,
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("bench failed", "err", err)
		os.Exit(1)
	}
}

func set(list string) map[string]bool {
	m := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			m[s] = true
		}
	}
	return m
}

// commandLine is the command that ran the benchmark: make's (BENCH_COMMAND) and the driver's own.
func commandLine() string {
	args := make([]string, 0, len(os.Args)-1)
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$`") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	self := "go run ./scripts/bench " + strings.Join(args, " ")
	if c := os.Getenv("BENCH_COMMAND"); c != "" {
		return c + "`, which ran `" + self
	}
	return self
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	b, err := newBench(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	started := time.Now()

	if cfg.Sections["capture"] {
		b.captureOverhead(ctx)
	}
	if cfg.Sections["apply"] {
		b.applyRate(ctx, "insert")
		b.applyRate(ctx, "mixed")
	}
	if cfg.Sections["parallel"] {
		b.parallelApply(ctx)
	}
	if cfg.Sections["copy"] {
		b.initialCopy(ctx)
	}
	if cfg.Sections["lag"] {
		b.lagUnderLoad(ctx)
	}
	if cfg.Sections["bigtx"] {
		b.largeTransaction(ctx)
	}
	if cfg.Sections["handlers"] {
		b.handlersApply(ctx)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	b.elapsed = time.Since(started)

	var plot string
	if cfg.Out != "" {
		if svg := b.svg(); svg != "" {
			plot = strings.TrimSuffix(cfg.Out, ".md") + ".svg"
			if err := os.WriteFile(plot, []byte(svg), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", plot, err)
			}
		}
	}
	report := b.report(filepath.Base(plot))
	fmt.Println(report)
	if cfg.Out != "" {
		if err := os.WriteFile(cfg.Out, []byte(report), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", cfg.Out, err)
		}
		log.Info("report written", "path", cfg.Out, "plot", plot)
	}
	return nil
}
