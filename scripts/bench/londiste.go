package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// londisteRun is Londiste3 on PgQ, configured as its documentation shows: per group one queue
// with a root node on the provider and a leaf node on the target, pgqd ticking the provider
// (its defaults: 1 s ticker period; PgQ's queue defaults of 500 events / 3 s lag per tick), a
// root worker, and the leaf worker that applies. Tables are added on the leaf with
// --expect-sync for a backlog (no copy) and without it for the initial copy.
type londisteRun struct {
	running []*proc
	leaves  []string // leaf ini files, one per group
}

func (r *londisteRun) ini(e *runEnv, name, db, queue string) (string, error) {
	path := filepath.Join(e.dir, name+".ini")
	body := fmt.Sprintf(`[londiste]
job_name = %s
db = %s
queue_name = %s
logfile = %s
pidfile = %s
`, name, db, queue, filepath.Join(e.dir, name+".job.log"), filepath.Join(e.dir, name+".pid"))
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

func (r *londisteRun) setup(ctx context.Context, e *runEnv) error {
	prov, tgt := dsn(e.pair.prov, e.pdb), dsn(e.pair.tgt, e.tdb)
	pgqd := filepath.Join(e.dir, "pgqd.ini")
	body := fmt.Sprintf(`[pgqd]
logfile = %s
pidfile = %s
base_connstr = host=127.0.0.1 port=%d user=postgres sslmode=disable
initial_database = %s
database_list = %s
`, filepath.Join(e.dir, "pgqd.job.log"), filepath.Join(e.dir, "pgqd.pid"), e.pair.prov.Port, e.pdb, e.pdb)
	if err := os.WriteFile(pgqd, []byte(body), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", pgqd, err)
	}
	for i, g := range e.groups {
		queue := fmt.Sprintf("q%d", i)
		root, err := r.ini(e, fmt.Sprintf("root%d", i), prov, queue)
		if err != nil {
			return err
		}
		leaf, err := r.ini(e, fmt.Sprintf("leaf%d", i), tgt, queue)
		if err != nil {
			return err
		}
		var tables []string
		for _, t := range g {
			tables = append(tables, "public."+t)
		}
		steps := [][]string{
			{root, "create-root", "root" + queue, prov},
			{leaf, "create-leaf", "leaf" + queue, tgt, "--provider=" + prov},
			append([]string{root, "add-table"}, tables...),
		}
		leafAdd := append([]string{leaf, "add-table"}, tables...)
		if !e.copy {
			leafAdd = append(leafAdd, "--expect-sync")
		}
		steps = append(steps, leafAdd)
		for _, args := range steps {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			_, err := runCmd(cctx, e.dir, nil, "londiste", args...)
			cancel()
			if err != nil {
				return err
			}
		}
		r.leaves = append(r.leaves, leaf)
		p, err := startProc(e.dir, fmt.Sprintf("root%d-worker", i), nil, "londiste", root, "worker")
		if err != nil {
			return err
		}
		r.running = append(r.running, p)
	}
	p, err := startProc(e.dir, "pgqd", nil, "pgqd", pgqd)
	if err != nil {
		return err
	}
	r.running = append(r.running, p)
	return nil
}

// settle waits for pgqd to tick past the end of the load, so that the leaf worker finds every
// event in a batch as soon as it starts (its wait for a tick is not apply time).
func (r *londisteRun) settle(ctx context.Context, e *runEnv) error {
	c, err := connect(ctx, e.pair.prov, e.pdb)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	for i := range e.groups {
		q := fmt.Sprintf("q%d", i)
		var last int64
		if err := c.QueryRow(ctx, "SELECT pgq.force_tick($1)", q).Scan(&last); err != nil {
			return fmt.Errorf("pgq.force_tick(%s): %w", q, err)
		}
		_, err := waitFor(ctx, time.Minute, 50*time.Millisecond, r.running, func(ctx context.Context) (bool, error) {
			var pending int64
			err := c.QueryRow(ctx, "SELECT coalesce(ev_new, 0) FROM pgq.get_queue_info($1)", q).Scan(&pending)
			return pending == 0, err
		})
		if err != nil {
			return fmt.Errorf("wait for a tick of %s: %w", q, err)
		}
	}
	return nil
}

func (r *londisteRun) start(ctx context.Context, e *runEnv) error {
	for i, leaf := range r.leaves {
		p, err := startProc(e.dir, fmt.Sprintf("leaf%d-worker", i), nil, "londiste", leaf, "worker")
		if err != nil {
			return err
		}
		r.running = append(r.running, p)
	}
	return nil
}

func (r *londisteRun) procs() []*proc { return r.running }

func (r *londisteRun) close(_ context.Context, e *runEnv) {
	stopAll(r.running)
	// The leaf worker starts each table's copy as a daemon of its own (`londiste INI copy
	// TABLE -d`, pidfile <pidfile>.copy.<table>), outside our process group; end those too.
	files, _ := filepath.Glob(filepath.Join(e.dir, "*.pid.copy.*"))
	for _, f := range files {
		bs, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(bs)))
		if err != nil || pid <= 1 {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
