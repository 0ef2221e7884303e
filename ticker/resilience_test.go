package ticker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// idleEvery makes a queue tick on its own every period (idle ticks), so tests can watch a
// ticker work without writing events.
func idleEvery(period string) map[string]string {
	return map[string]string{"ticker_idle_period": period}
}

// TestProviderRestart crashes and restarts one provider under a ticker serving two: the other
// keeps ticking meanwhile, and the ticker resumes on the restarted one by itself.
func TestProviderRestart(t *testing.T) {
	t.Parallel()
	srvA := pgtest.New(t, pgtest.Options{})
	urlA := providerDB(t, srvA)
	urlB := providerDB(t, pgtest.Shared(t, ""))
	for _, u := range []string{urlA, urlB} {
		createQueue(t, pgtest.Connect(t, u), "q", idleEvery("50 milliseconds"))
	}
	tk, _ := startTicker(t, testConfig(urlA, urlB))
	a, b := dbName(t, urlA), dbName(t, urlB)
	ticks := func(db string) float64 { return metricValue(tk.m.ticks, db, "q") }
	pgtest.Eventually(t, 10*time.Second, "both databases tick", func() bool { return ticks(a) >= 3 && ticks(b) >= 3 })

	ctx := context.Background()
	for _, how := range []string{"crash", "restart"} {
		switch how {
		case "crash":
			srvA.Crash()
			pgtest.Eventually(t, 10*time.Second, "A reported down", func() bool { return metricValue(tk.m.up, a) == 0 })
			fromB := ticks(b)
			pgtest.Eventually(t, 10*time.Second, "B ticks while A is down", func() bool { return ticks(b) >= fromB+5 })
			require.Equal(t, 0.0, metricValue(tk.m.up, a), "A came back by itself")
			require.NoError(t, srvA.Resume(ctx))
		case "restart":
			require.NoError(t, srvA.Restart(ctx))
		}
		fromA := ticks(a)
		pgtest.Eventually(t, 20*time.Second, "A ticks again after "+how, func() bool {
			return ticks(a) >= fromA+3 && metricValue(tk.m.up, a) == 1
		})
	}
	require.Greater(t, metricValue(tk.m.errors, a, "connect"), 0.0, "no failed reconnection counted while A was down")
}

// TestTwoTickers runs two tickers on one database: only the holder of the advisory lock ticks,
// and the other takes over when it stops.
func TestTwoTickers(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "q", idleEvery("50 milliseconds"))
	db := dbName(t, url)

	first, _ := startTicker(t, testConfig(url))
	pgtest.Eventually(t, 10*time.Second, "first ticker ticks", func() bool { return metricValue(first.m.ticks, db, "q") >= 1 })
	second, _ := startTicker(t, testConfig(url))
	pgtest.Eventually(t, 10*time.Second, "second ticker connected", func() bool { return metricValue(second.m.up, db) == 1 })

	from := metricValue(first.m.ticks, db, "q")
	pgtest.Eventually(t, 10*time.Second, "first ticker keeps ticking", func() bool { return metricValue(first.m.ticks, db, "q") >= from+5 })
	require.Equal(t, 0.0, metricValue(second.m.ticks, db, "q"), "the standby ticked")
	require.Equal(t, 0.0, metricValue(second.m.leader, db))
	require.Equal(t, 1.0, metricValue(first.m.leader, db))

	before := tickCount(t, conn, "q")
	first.Stop()
	first.Stop() // idempotent
	pgtest.Eventually(t, 10*time.Second, "second ticker takes over", func() bool {
		return metricValue(second.m.leader, db) == 1 && metricValue(second.m.ticks, db, "q") >= 3
	})
	require.Greater(t, tickCount(t, conn, "q"), before+2)
}

// TestNewQueueGetsTicks creates a queue while the ticker runs.
func TestNewQueueGetsTicks(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	tk, reg := startTicker(t, testConfig(url))
	db := dbName(t, url)
	pgtest.Eventually(t, 10*time.Second, "ticker connected", func() bool { return metricValue(tk.m.leader, db) == 1 })

	createQueue(t, conn, "late", idleEvery("50 milliseconds"))
	pgtest.Eventually(t, 10*time.Second, "new queue ticks", func() bool { return metricValue(tk.m.ticks, db, "late") >= 3 })
	require.Greater(t, tickCount(t, conn, "late"), int64(3))
	require.Positive(t, polls(t, reg, db))

	// A queue dropped while the ticker runs is forgotten quietly; the others keep ticking.
	createQueue(t, conn, "doomed", idleEvery("50 milliseconds"))
	pgtest.Eventually(t, 10*time.Second, "second queue ticks", func() bool { return metricValue(tk.m.ticks, db, "doomed") >= 1 })
	_, err := queue.DropQueue(context.Background(), conn, "doomed", true)
	require.NoError(t, err)
	from := metricValue(tk.m.ticks, db, "late")
	pgtest.Eventually(t, 10*time.Second, "remaining queue ticks", func() bool { return metricValue(tk.m.ticks, db, "late") >= from+5 })
	require.Equal(t, 0.0, metricValue(tk.m.errors, db, "tick"), "a dropped queue counted as a tick error")
}

// TestAllDatabases serves a whole server from one entry point and picks up a database that
// gets the provider schema while the ticker runs.
func TestAllDatabases(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t, pgtest.Options{})
	first := providerDB(t, srv)
	createQueue(t, pgtest.Connect(t, first), "q", idleEvery("50 milliseconds"))
	plain := srv.NewDB(t) // no provider schema yet
	cfg := testConfig(srv.URL("postgres"))
	cfg.AllDatabases = true
	tk, _ := startTicker(t, cfg)
	pgtest.Eventually(t, 10*time.Second, "first database ticks", func() bool { return metricValue(tk.m.ticks, dbName(t, first), "q") >= 2 })

	installProvider(t, plain)
	createQueue(t, pgtest.Connect(t, plain), "q", idleEvery("50 milliseconds"))
	pgtest.Eventually(t, 10*time.Second, "database given the schema later ticks", func() bool {
		return metricValue(tk.m.ticks, dbName(t, plain), "q") >= 2
	})

	// A database dropped while served (its sessions terminated) is let go at the next rescan.
	if srv.Install.Num < 130000 {
		return // DROP DATABASE ... WITH (FORCE) arrived in 13
	}
	var name string
	require.NoError(t, pgtest.Connect(t, plain).QueryRow(context.Background(), "SELECT current_database()").Scan(&name))
	require.NoError(t, srv.Exec(context.Background(), "postgres", "DROP DATABASE "+name+" WITH (FORCE)"))
	served := func(db string) bool {
		tk.mu.Lock()
		defer tk.mu.Unlock()
		return tk.active[db]
	}
	pgtest.Eventually(t, 10*time.Second, "dropped database let go", func() bool { return !served(dbName(t, plain)) })
	require.True(t, served(dbName(t, first)))
}

// TestQueryTimeout blocks the ticker's tick on a lock of the tick table: the statement times
// out, the ticker reconnects, and ticks resume once the lock is gone. (A lock on the queue's
// row no longer blocks it: skiff.ticker skips a queue whose row another session holds.)
func TestQueryTimeout(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "q", idleEvery("50 milliseconds"))
	cfg := testConfig(url)
	cfg.QueryTimeout = 300 * time.Millisecond
	tk, _ := startTicker(t, cfg)
	db := dbName(t, url)
	pgtest.Eventually(t, 10*time.Second, "ticks", func() bool { return metricValue(tk.m.ticks, db, "q") >= 1 })

	ctx := context.Background()
	blocker, err := pgtest.Connect(t, url).Begin(ctx)
	require.NoError(t, err)
	_, err = blocker.Exec(ctx, "LOCK TABLE skiff.tick IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	// The poll's tick or the rescan's queue list (it reads the tick table too), whichever
	// comes first, times out; after a rescan's timeout the reopened connection's first queue
	// list blocks again, so the poll may never run while the lock is held.
	pgtest.Eventually(t, 10*time.Second, "tick times out", func() bool {
		return metricValue(tk.m.errors, db, "tick")+metricValue(tk.m.errors, db, "queues") >= 1
	})
	require.NoError(t, blocker.Rollback(ctx))

	from := metricValue(tk.m.ticks, db, "q")
	start := time.Now()
	pgtest.Eventually(t, 10*time.Second, "ticks resume", func() bool { return metricValue(tk.m.ticks, db, "q") >= from+3 })
	t.Logf("ticks resumed %v after the lock was released", time.Since(start).Round(time.Millisecond))
}
