package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestApplyRate measures the rows per second one worker applies from a backlog on the
// provider: N inserts, N inserts + N updates, and N inserts + N updates in each of two queues
// replayed in parallel. It is a measurement, not a timed test: it runs only with
// SKIFF_APPLY_BENCH=N (e.g. 200000) and logs the figures.
//
//	SKIFF_APPLY_BENCH=200000 go test ./tests -run TestApplyRate -v -timeout 30m
//
// SKIFF_APPLY_BENCH_CASE picks one case by name; SKIFF_MAX_EVENTS (batch size) and
// SKIFF_MAX_PENDING_ROWS (applier run size) change the worker's settings for experiments. It
// logs, per case, the wall-clock rate, the load average, and the CPU each part spent per row
// (provider backend, target backend, worker process): on a shared machine the wall-clock rate
// says as much about the neighbours as about skiff, the CPU per row does not.
func TestApplyRate(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SKIFF_APPLY_BENCH"))
	if n <= 0 {
		t.Skip("set SKIFF_APPLY_BENCH=rows to measure the apply rate")
	}
	// As skiff worker runs (internal/worker).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for _, c := range []struct {
		name    string
		queues  int
		updates bool
	}{
		{"inserts", 1, false},
		{"inserts+updates", 1, true},
		{"inserts+updates, 2 queues in parallel", 2, true},
	} {
		if only := os.Getenv("SKIFF_APPLY_BENCH_CASE"); only != "" && only != c.name {
			continue
		}
		// Servers of its own per case: no checkpoint or vacuum left over from the last one.
		provSrv := pgtest.New(t, pgtest.Options{Durable: true})
		tgtSrv := pgtest.New(t, pgtest.Options{Durable: true})
		ddl := ""
		for i := range c.queues {
			ddl += fmt.Sprintf("CREATE TABLE r%d (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);", i)
		}
		p := newPairOn(t, provSrv, tgtSrv, ddl)
		var queues []string
		for i := range c.queues {
			q := fmt.Sprintf("r%d", i)
			queues = append(queues, q)
			p.capture(t, q, "public."+q)
			p.subscribeDirect(t, q)
		}
		// The backlog, ticked every 10k rows as a ticker would.
		prov := connect(t, p.prov)
		ctx := context.Background()
		rows := 0
		for _, q := range queues {
			for lo := 1; lo <= n; lo += 1000 {
				exec1(t, prov, `INSERT INTO `+q+` SELECT g, g % 1000, repeat('x', 60) FROM generate_series($1::bigint, $2::bigint) g`, lo, min(lo+999, n))
				if lo%10000 == 1 {
					_, err := queue.ForceTick(ctx, prov, q)
					require.NoError(t, err)
				}
			}
			rows += n
			if c.updates {
				for lo := 1; lo <= n; lo += 1000 {
					exec1(t, prov, `UPDATE `+q+` SET v = v + 1, pad = 'updated' WHERE id BETWEEN $1 AND $2`, lo, min(lo+999, n))
					if lo%10000 == 1 {
						_, err := queue.ForceTick(ctx, prov, q)
						require.NoError(t, err)
					}
				}
				rows += n
			}
		}
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var pids []uint32
		cpu0 := selfCPU()
		t0 := time.Now()
		for _, q := range queues {
			pp, tp := p.runWorker(t, wctx, &wg, q)
			pids = append(pids, pp, tp)
		}
		p.caughtUp(t, 20*time.Minute, queues...)
		d := time.Since(t0)
		var provCPU, tgtCPU time.Duration
		for i, pid := range pids {
			if i%2 == 0 {
				provCPU += procCPU(t, pid)
			} else {
				tgtCPU += procCPU(t, pid)
			}
		}
		workerCPU := selfCPU() - cpu0
		stop()
		wg.Wait()
		// CPU per component: on a busy machine the wall-clock rate says more about the
		// neighbours than about skiff; the CPU each part spends per row does not.
		per := func(c time.Duration) float64 { return c.Seconds() * 1e6 / float64(rows) }
		bound := max(provCPU, tgtCPU, workerCPU, (provCPU+tgtCPU+workerCPU)/2)
		load, _ := os.ReadFile("/proc/loadavg")
		t.Logf("apply rate, %s: %d rows in %.2fs = %.0f rows/s (load %.4s); CPU µs/row: provider backend %.2f, target backend %.2f, worker %.2f; CPU-bound rate on 2 idle cores ≈ %.0f rows/s",
			c.name, rows, d.Seconds(), float64(rows)/d.Seconds(), load, per(provCPU), per(tgtCPU), per(workerCPU), float64(rows)/bound.Seconds())
		p.compare(t, queues...)
		provSrv.Stop()
		tgtSrv.Stop()
	}
}

// procCPU is the user+system CPU time a process (a server backend) has used so far.
func procCPU(t testing.TB, pid uint32) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// Fields after the command name (which may hold spaces, in parentheses).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// selfCPU is the CPU time this test process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
