package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// skiffRun drives skiff through its binary, as a user would: `init provider`, `init target`,
// `table add` per group (one queue per group), `subscribe` (with --no-copy for a backlog),
// `skiff ticker` running during the load, and one `skiff worker` per queue started when the
// clock starts.
//
// With logical set it is skiff's logical-decoding source: `table add --source logical` (no
// trigger, no ticker); subscribe creates each queue's replication slot, which close drops.
type skiffRun struct {
	logical bool
	// handlers: the handlers run (handlersSystem): table legacy.bench_t0 captured with a
	// --where, subscribed with a schema map and the partition handler.
	handlers bool
	// splitRows: the initial copy is split into ranges of about this many rows
	// (subscribe --copy-split-rows); 0 copies in one stream.
	splitRows int64
	running   []*proc
}

func skiffAvailable(ctx context.Context, b *bench) error {
	if _, err := os.Stat(b.cfg.SkiffBin); err != nil {
		return fmt.Errorf("%s not built (make build)", b.cfg.SkiffBin)
	}
	for _, cmd := range [][]string{{"table", "add"}, {"subscribe"}, {"ticker"}, {"worker"}} {
		out, err := exec.CommandContext(ctx, b.cfg.SkiffBin, append(cmd, "--help")...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("`skiff %s` is not available: %s", strings.Join(cmd, " "), firstLine(string(out)))
		}
	}
	return nil
}

// skiffLogicalAvailable checks that the binary has the logical-decoding source.
func skiffLogicalAvailable(ctx context.Context, b *bench) error {
	if err := skiffAvailable(ctx, b); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, b.cfg.SkiffBin, "table", "add", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--source") {
		return fmt.Errorf("this skiff has no logical-decoding source (table add --source)")
	}
	return nil
}

// skiffCaptureAvailable checks the commands the capture-overhead measurement needs.
func skiffCaptureAvailable(ctx context.Context, b *bench) error {
	if _, err := os.Stat(b.cfg.SkiffBin); err != nil {
		return fmt.Errorf("%s not built (make build)", b.cfg.SkiffBin)
	}
	out, err := exec.CommandContext(ctx, b.cfg.SkiffBin, "table", "add", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("`skiff table add` is not available: %s", firstLine(string(out)))
	}
	return nil
}

// cmd runs a skiff command to completion; an initial copy may take long, anything else gets
// five minutes.
func (r *skiffRun) cmd(ctx context.Context, e *runEnv, args ...string) error {
	limit := 5 * time.Minute
	if e.copy && args[0] == "subscribe" {
		limit = time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	_, err := runCmd(ctx, e.dir, nil, e.b.cfg.SkiffBin, append([]string{"--log-format", "json"}, args...)...)
	return err
}

func queueName(i int) string { return fmt.Sprintf("bench%d", i) }

func (r *skiffRun) setup(ctx context.Context, e *runEnv) error {
	prov, tgt := e.pair.prov.URL(e.pdb), e.pair.tgt.URL(e.tdb)
	if err := r.cmd(ctx, e, "init", "provider", "--db", prov); err != nil {
		return err
	}
	if err := r.cmd(ctx, e, "init", "target", "--db", tgt); err != nil {
		return err
	}
	for i, g := range e.groups {
		args := []string{"table", "add", "--db", prov, "--queue", queueName(i)}
		if r.logical {
			args = append(args, "--source", "logical")
		}
		schema := "public."
		if r.handlers {
			args, schema = append(args, "--where", handlersWhere), "legacy."
		}
		for _, t := range g {
			args = append(args, schema+t)
		}
		if err := r.cmd(ctx, e, args...); err != nil {
			return err
		}
		if !e.copy {
			if err := r.subscribe(ctx, e, i); err != nil {
				return err
			}
		}
	}
	if r.logical {
		return nil // no ticker: each worker streams from its slot
	}
	p, err := startProc(e.dir, "skiff-ticker", nil, e.b.cfg.SkiffBin, "--log-format", "json", "ticker", "--db", prov)
	if err != nil {
		return err
	}
	r.running = append(r.running, p)
	return nil
}

func (r *skiffRun) subscribe(ctx context.Context, e *runEnv, i int) error {
	args := []string{"subscribe", "--provider", e.pair.prov.URL(e.pdb), "--target", e.pair.tgt.URL(e.tdb), "--queue", queueName(i)}
	if !e.copy {
		args = append(args, "--no-copy")
	}
	if r.handlers {
		args = append(args, handlersArgs(e.b)...)
	}
	if r.splitRows > 0 {
		args = append(args, "--copy-split-rows", strconv.FormatInt(r.splitRows, 10))
	}
	return r.cmd(ctx, e, args...)
}

func (r *skiffRun) settle(context.Context, *runEnv) error { return nil }

func (r *skiffRun) start(ctx context.Context, e *runEnv) error {
	for i := range e.groups {
		if e.copy {
			if err := r.subscribe(ctx, e, i); err != nil {
				return err
			}
		}
		p, err := startProc(e.dir, fmt.Sprintf("skiff-worker%d", i), nil, e.b.cfg.SkiffBin, "--log-format", "json",
			"worker", "--provider", e.pair.prov.URL(e.pdb), "--target", e.pair.tgt.URL(e.tdb), "--queue", queueName(i))
		if err != nil {
			return err
		}
		r.running = append(r.running, p)
	}
	return nil
}

func (r *skiffRun) procs() []*proc { return r.running }

func (r *skiffRun) close(ctx context.Context, e *runEnv) {
	stopAll(r.running)
	if !r.logical {
		return
	}
	// The slots hold WAL and keep the provider database from being dropped.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if err := execSQL(ctx, e.pair.prov, e.pdb, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE database = current_database() AND slot_name LIKE 'skiff\_d%'`); err != nil {
		e.b.log.Warn("drop skiff's replication slots", "err", err)
	}
}
