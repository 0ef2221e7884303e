package ticker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// cpuTime returns a process's user+system CPU time from /proc/<pid>/stat.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// Fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err := strconv.ParseInt(f[11], 10, 64) // field 14 of the whole line
	require.NoError(t, err)
	stime, err := strconv.ParseInt(f[12], 10, 64) // field 15
	require.NoError(t, err)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clkTck
}

// TestCost measures what the ticker costs with 50 idle queues (default thresholds, default
// --poll 100ms): its own CPU, the CPU of its server backend, and the provider's transactions
// per second (pg_stat_database.xact_commit) and the transaction ids it consumes. It runs only
// when SKIFF_TICKER_COST names the measuring window; SKIFF_TICKER_COST_POLL sets --poll:
//
//	SKIFF_TICKER_COST=60s go test ./ticker/ -run TestCost -count=1 -v
func TestCost(t *testing.T) {
	window, err := time.ParseDuration(os.Getenv("SKIFF_TICKER_COST"))
	if err != nil {
		t.Skip("set SKIFF_TICKER_COST=60s to measure the ticker's cost")
	}
	queues := 50
	poll := "100ms"
	if p := os.Getenv("SKIFF_TICKER_COST_POLL"); p != "" {
		poll = p
	}
	bin := buildSkiff(t)
	srv := pgtest.New(t, pgtest.Options{})
	url := providerDB(t, srv)
	conn := pgtest.Connect(t, url)
	for i := 0; i < queues; i++ {
		createQueue(t, conn, fmt.Sprintf("q%02d", i), nil)
	}
	var dbname string
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&dbname))

	cmd := exec.Command(bin, "ticker", "--db", url, "--poll", poll, "--log-format", "json")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ctx := context.Background()
	var backend int
	pgtest.Eventually(t, 20*time.Second, "ticker holds its lock", func() bool {
		err := conn.QueryRow(ctx, `SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
			WHERE a.application_name = 'skiff ticker' AND l.locktype = 'advisory' AND l.granted`).Scan(&backend)
		return err == nil
	})

	commits := func() int64 {
		var n int64
		_, err := conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()")
		require.NoError(t, err)
		require.NoError(t, conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", dbname).Scan(&n))
		return n
	}
	xid := func() int64 {
		var n int64
		require.NoError(t, conn.QueryRow(ctx, "SELECT txid_current()").Scan(&n))
		return n
	}
	c0, x0, cpu0, be0, t0 := commits(), xid(), cpuTime(t, cmd.Process.Pid), cpuTime(t, backend), time.Now()
	time.Sleep(window) // the measuring window, not a synchronisation
	c1, x1, cpu1, be1, t1 := commits(), xid(), cpuTime(t, cmd.Process.Pid), cpuTime(t, backend), time.Now()
	secs := t1.Sub(t0).Seconds()
	// The measuring queries add 5 transactions of the test's own to the delta, 1 xid.
	tps := float64(c1-c0-5) / secs
	xps := float64(x1-x0-1) / secs
	ticker := (cpu1 - cpu0).Seconds() / secs * 100
	server := (be1 - be0).Seconds() / secs * 100
	t.Logf("%d idle queues, --poll %s, %.0fs: ticker CPU %.2f%% of a core, its backend %.2f%%, provider %.1f transactions/s, %.1f xids/s",
		queues, poll, secs, ticker, server, tps, xps)
	require.Less(t, tps, 15.0, "more than one transaction per poll")
	require.Less(t, ticker, 5.0)
}
