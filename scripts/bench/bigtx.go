package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ---- 6. one large transaction -------------------------------------------------------------

// bigTxTable has rows of about 200 bytes.
const bigTxTable = "CREATE TABLE %s (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL)"

// largeTransaction measures the apply of one provider transaction of BigTxRows inserts followed
// by an UPDATE of every one of those rows (2 × BigTxRows changes): the time from the consumer's
// start to the marker row after it on the target, the time to the first row written (the
// target table's heap grows: rows are written before the batch commits), and for skiff the
// worker's peak resident memory (VmHWM).
func (b *bench) largeTransaction(ctx context.Context) {
	const sec = "bigtx"
	n := b.cfg.Size.BigTxRows
	name := fmt.Sprintf("one transaction: %s inserts + %s updates of them", num(float64(n)), num(float64(n)))
	for rep := 1; rep <= b.cfg.Size.Reps && ctx.Err() == nil; rep++ {
		systems := b.systems()
		if b.cfg.Old != "" && b.cfg.Systems["skiff"] {
			systems = append(systems, b.oldSkiff())
			if rep == 1 {
				b.note("Large transaction, %s: the provider runs PostgreSQL %s, the target %s.", label("skiff-old"), b.cfg.Old, b.cfg.Version)
			}
		}
		for _, s := range rotate(systems, rep-1) {
			if !b.usable(ctx, s) {
				b.unavailable(sec, name, s.name, "s", true, b.disabled[s.name])
				continue
			}
			if m := b.metric(sec, name, s.name, "s", true); m.na != "" {
				continue
			}
			var took, first, rss float64
			err := b.twice(ctx, s.name, func() (err error) {
				took, first, rss, err = b.bigTxOnce(ctx, s, n)
				return err
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.log.Warn("large transaction run failed", "system", s.name, "rep", rep, "err", err)
				b.unavailable(sec, name, s.name, "s", true, err.Error())
				continue
			}
			b.record(sec, name, s.name, "s", true, took)
			b.recordDetail(sec, name+": start → first row written on the target", s.name, "s", true, first)
			if rss > 0 {
				b.recordDetail(sec, name+": consumer's peak RSS", s.name, "MB", true, rss)
			}
		}
	}
}

func (b *bench) bigTxOnce(ctx context.Context, s system, n int) (took, first, rssMB float64, err error) {
	e, err := b.newRun(ctx, s, 1, bigTxTable)
	if err != nil {
		return 0, 0, 0, err
	}
	defer b.dropRun(ctx, s, e)
	r := s.newRun()
	defer r.close(ctx, e)
	if err := r.setup(ctx, e); err != nil {
		return 0, 0, 0, fmt.Errorf("setup: %w", err)
	}
	c, err := connect(ctx, e.pair.prov, e.pdb)
	if err != nil {
		return 0, 0, 0, err
	}
	t := e.tables()[0]
	load := time.Now()
	for _, q := range []string{
		"BEGIN",
		fmt.Sprintf("INSERT INTO %s SELECT g, g %% 1000, md5(g::text) || repeat('x', 150) FROM generate_series(1, %d) g", t, n),
		fmt.Sprintf("UPDATE %s SET v = v + 1, pad = md5((-id)::text) || repeat('u', 150)", t),
		"COMMIT",
		fmt.Sprintf("INSERT INTO %s VALUES (-1, 0, 'marker')", t),
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			c.Close(context.WithoutCancel(ctx))
			return 0, 0, 0, fmt.Errorf("load: %s: %w", firstLine(q), err)
		}
	}
	c.Close(context.WithoutCancel(ctx))
	b.log.Info("large transaction written", "system", e.tag, "changes", 2*n, "seconds", round(time.Since(load).Seconds()))
	if err := r.settle(ctx, e); err != nil {
		return 0, 0, 0, fmt.Errorf("settle: %w", err)
	}
	tc, err := connect(ctx, e.pair.tgt, e.tdb)
	if err != nil {
		return 0, 0, 0, err
	}
	defer tc.Close(context.WithoutCancel(ctx))
	var size0 int64
	if err := tc.QueryRow(ctx, "SELECT pg_relation_size($1)", t).Scan(&size0); err != nil {
		return 0, 0, 0, err
	}
	t0 := time.Now()
	if err := r.start(ctx, e); err != nil {
		return 0, 0, 0, fmt.Errorf("start: %w", err)
	}
	var firstAt time.Time
	limit := time.Duration(n/2000)*time.Second + 2*time.Minute
	t1, err := waitFor(ctx, limit, 20*time.Millisecond, r.procs(), func(ctx context.Context) (bool, error) {
		var size, markers int64
		err := tc.QueryRow(ctx, "SELECT pg_relation_size($1), (SELECT count(*) FROM "+t+" WHERE id = -1)", t).Scan(&size, &markers)
		if size > size0 && firstAt.IsZero() {
			firstAt = time.Now()
		}
		return markers == 1, err
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wait for the marker row: %w", err)
	}
	if firstAt.IsZero() {
		firstAt = t1
	}
	for _, p := range r.procs() {
		if strings.HasPrefix(p.name, "skiff-worker") {
			rssMB = peakRSS(p.cmd.Process.Pid)
		}
	}
	b.log.Info("large transaction applied", "system", e.tag, "changes", 2*n, "seconds", round(t1.Sub(t0).Seconds()),
		"first_row_after", round(firstAt.Sub(t0).Seconds()), "worker_peak_rss_mb", round(rssMB))
	if err := b.compare(ctx, e); err != nil {
		return 0, 0, 0, err
	}
	return t1.Sub(t0).Seconds(), firstAt.Sub(t0).Seconds(), rssMB, nil
}

// peakRSS is a process's peak resident set (VmHWM) in MB, 0 when unknown.
func peakRSS(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
