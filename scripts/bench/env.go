package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// benchSettings are the postgresql.conf settings of every cluster, besides pgtest's defaults
// (fsync and synchronous_commit stay on: Durable). They are printed in the report.
var benchSettings = map[string]string{
	"shared_buffers":                  "256MB",
	"max_wal_size":                    "2GB",
	"checkpoint_timeout":              "15min",
	"max_worker_processes":            "64",
	"max_replication_slots":           "32",
	"max_wal_senders":                 "32",
	"max_logical_replication_workers": "16",
	// The logical replication launcher starts a newly enabled subscription's worker at most
	// this often (default 5 s); the default would add up to 5 s of waiting to a run.
	"wal_retrieve_retry_interval": "200ms",
}

// bench holds the run: its clusters, its results and the temporary directory.
type bench struct {
	cfg     config
	log     *slog.Logger
	tmp     string
	bin     string // PostgreSQL bin directory
	pgVer   string // e.g. "PostgreSQL 15.18"
	elapsed time.Duration

	mu       sync.Mutex
	servers  map[string]*pgtest.Server
	seq      int
	results  []*metric
	notes    []string
	disabled map[string]string // system → why it is skipped
	// applyWarm: the apply section's unmeasured runs are done (warmApply).
	applyWarm bool
}

func newBench(ctx context.Context, cfg config, log *slog.Logger) (*bench, error) {
	in, err := pgtest.Find(cfg.Version)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "skiff-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	out, _ := exec.CommandContext(ctx, filepath.Join(in.BinDir, "postgres"), "--version").Output()
	b := &bench{
		cfg: cfg, log: log, tmp: tmp, bin: in.BinDir,
		pgVer:    strings.TrimSpace(strings.Replace(string(out), "postgres (PostgreSQL)", "PostgreSQL", 1)),
		servers:  map[string]*pgtest.Server{},
		disabled: map[string]string{},
	}
	return b, nil
}

// Close stops every cluster and removes the temporary directory.
func (b *bench) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.servers {
		s.Stop()
	}
	if os.Getenv("SKIFF_PG_KEEP") == "" {
		_ = os.RemoveAll(b.tmp)
	}
}

// server returns the cluster of a name ("skiff-provider", "pglogical-target", …), starting it
// on first use with the bench settings plus extra.
func (b *bench) server(ctx context.Context, name string, extra map[string]string) (*pgtest.Server, error) {
	b.mu.Lock()
	s, ok := b.servers[name]
	b.mu.Unlock()
	if ok {
		return s, nil
	}
	settings := map[string]string{}
	for k, v := range benchSettings {
		settings[k] = v
	}
	for k, v := range extra {
		settings[k] = v
	}
	b.log.Info("starting cluster", "name", name)
	s, err := pgtest.Start(ctx, pgtest.Options{Version: b.cfg.Version, Durable: true, Settings: settings})
	if err != nil {
		return nil, fmt.Errorf("start cluster %s: %w", name, err)
	}
	b.mu.Lock()
	b.servers[name] = s
	b.mu.Unlock()
	return s, nil
}

// oldServer returns a cluster of an older major version (-old), starting it on first use
// with the bench settings that version knows (checkpoint_segments before 9.5).
func (b *bench) oldServer(ctx context.Context, name, version string) (*pgtest.Server, error) {
	b.mu.Lock()
	s, ok := b.servers[name]
	b.mu.Unlock()
	if ok {
		return s, nil
	}
	in, err := pgtest.Find(version)
	if err != nil {
		return nil, err
	}
	settings := map[string]string{"shared_buffers": "256MB", "checkpoint_timeout": "15min"}
	if in.Num >= 90500 {
		settings["max_wal_size"] = "2GB"
	} else {
		settings["checkpoint_segments"] = "128"
	}
	b.log.Info("starting cluster", "name", name, "version", in.Major)
	s, err = pgtest.Start(ctx, pgtest.Options{Version: version, Durable: true, Settings: settings})
	if err != nil {
		return nil, fmt.Errorf("start cluster %s (%s): %w", name, version, err)
	}
	b.mu.Lock()
	b.servers[name] = s
	b.mu.Unlock()
	return s, nil
}

// pair is a provider and a target cluster of one system.
type pair struct{ prov, tgt *pgtest.Server }

func (b *bench) pair(ctx context.Context, system string, extra map[string]string) (pair, error) {
	p, err := b.server(ctx, system+"-provider", extra)
	if err != nil {
		return pair{}, err
	}
	t, err := b.server(ctx, system+"-target", extra)
	if err != nil {
		return pair{}, err
	}
	return pair{p, t}, nil
}

// name returns a fresh name with a prefix: databases, slots and queues of one repetition never
// collide with those of another.
func (b *bench) name(prefix string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	return fmt.Sprintf("%s_%d", prefix, b.seq)
}

// dir makes a fresh directory for one run's configuration files and logs.
func (b *bench) dir(name string) (string, error) {
	d := filepath.Join(b.tmp, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("mkdir %s: %w", d, err)
	}
	return d, nil
}

func (b *bench) note(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// dsn is a libpq keyword/value connection string for a database of a server.
func dsn(s *pgtest.Server, db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", s.Port, db)
}

// connect opens a session on a database of a server.
func connect(ctx context.Context, s *pgtest.Server, db string) (*pgx.Conn, error) {
	c, err := pg.Connect(ctx, s.URL(db), "skiff-bench")
	if err != nil {
		return nil, fmt.Errorf("connect to %s on port %d: %w", db, s.Port, err)
	}
	return c, nil
}

// execSQL runs statements on a database of a server.
func execSQL(ctx context.Context, s *pgtest.Server, db string, stmts ...string) error {
	c, err := connect(ctx, s, db)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	for _, q := range stmts {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", firstLine(q), err)
		}
	}
	return nil
}

// createDB creates a database (from a template when given).
func createDB(ctx context.Context, s *pgtest.Server, db, template string) error {
	q := "CREATE DATABASE " + pgx.Identifier{db}.Sanitize()
	if template != "" {
		q += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
		if s.Install.Num >= 150000 {
			q += " STRATEGY file_copy" // 15's default (wal_log) writes the whole copy to WAL
		}
	}
	return execSQL(ctx, s, "postgres", q)
}

// dropDB drops a database, disconnecting its sessions. Never called on pglogical's clusters:
// with pglogical loaded, DROP DATABASE hangs on 15 (pglogical issues 399, 418).
func dropDB(ctx context.Context, s *pgtest.Server, db string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	_ = execSQL(ctx, s, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > 120 {
		s = s[:120] + " …"
	}
	return s
}

// runCmd runs a program to completion in dir and returns its combined output; a failure
// carries the output's last lines.
func runCmd(ctx context.Context, dir string, env []string, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), firstArg(args), err, tail(string(out), 6))
	}
	return string(out), nil
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		return args[0] + " " + args[1]
	}
	return args[0]
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// proc is a long-running program the bench started (a worker, a ticker, pgqd).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startProc starts prog in dir with its output in dir/<name>.log.
func startProc(dir, name string, env []string, prog string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", logPath, err)
	}
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports, without waiting, whether the program has ended, and why.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.logTail(8))
	default:
		return nil
	}
}

func (p *proc) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	return tail(string(b), n)
}

// stop asks the program and its children to finish (SIGINT to its process group), then kills
// the group after 15 s.
func (p *proc) stop() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT) // the group: Londiste's copy children too
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func stopAll(ps []*proc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// firstExited returns the error of the first program of ps that has ended.
func firstExited(ps []*proc) error {
	for _, p := range ps {
		if err := p.exited(); err != nil {
			return err
		}
	}
	return nil
}

// errTimeout is returned by waitFor when the condition did not come true in time.
var errTimeout = errors.New("timed out")

// waitFor polls cond every interval until it is true, ctx ends, a watched program exits or
// limit passes. It returns the time at which cond was first seen true.
func waitFor(ctx context.Context, limit, interval time.Duration, watch []*proc, cond func(context.Context) (bool, error)) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond(ctx)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if err := firstExited(watch); err != nil {
			return time.Time{}, err
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%w after %s", errTimeout, limit)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// machine describes the host for the report.
func (b *bench) machine() []string {
	var out []string
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	out = append(out, fmt.Sprintf("CPU: %d × %s (nproc %d)", runtime.NumCPU(), cpu, runtime.NumCPU()))
	if bs, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(bs), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:")), "%d", &kb)
				out = append(out, fmt.Sprintf("Memory: %.1f GiB", float64(kb)/1024/1024))
			}
		}
	}
	if bs, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(bs), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				out = append(out, "OS: "+strings.Trim(v, `"`))
			}
		}
	}
	out = append(out, "Server: "+b.pgVer+" ("+b.bin+"), every cluster local on 127.0.0.1")
	return out
}

// packageVersion returns the installed version of a Debian package, or "".
func packageVersion(ctx context.Context, name string) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
