package ticker

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// tickTimes returns the tick times of a queue in tick order.
func tickTimes(t testing.TB, conn *pgx.Conn, q string) []time.Time {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT tick_time FROM skiff.tick WHERE queue_id = skiff.queue_id($1) ORDER BY tick_id", q)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	require.NoError(t, err)
	return out
}

// TestTickThresholds runs one ticker over three queues whose thresholds isolate the count,
// lag and idle rules of skiff.ticker, and checks each rule from the ticks it leaves, on every
// installed server version.
func TestTickThresholds(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			testTickThresholds(t, v)
		})
	}
}

func testTickThresholds(t *testing.T, version string) {
	url := providerDB(t, pgtest.Shared(t, version))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "by_count", map[string]string{"ticker_max_events": "5", "ticker_max_lag": "1 hour", "ticker_idle_period": "1 hour"})
	createQueue(t, conn, "by_lag", map[string]string{"ticker_max_events": "1000", "ticker_max_lag": "300 milliseconds", "ticker_idle_period": "1 hour"})
	createQueue(t, conn, "idle", map[string]string{"ticker_max_events": "1000", "ticker_max_lag": "1 hour", "ticker_idle_period": "500 milliseconds"})
	tk, reg := startTicker(t, testConfig(url))
	db := dbName(t, url)

	// Nothing pending, idle period not passed: no tick however often the ticker asks.
	waitPolls(t, reg, db, 10)
	require.Equal(t, int64(1), tickCount(t, conn, "by_count"), "tick without events before the idle period")
	require.Equal(t, int64(1), tickCount(t, conn, "by_lag"), "tick without events before the idle period")

	// Count: 3 events stay below the threshold of 5; 2 more reach it.
	writeEvents(t, conn, "by_count", 3)
	waitPolls(t, reg, db, 10)
	require.Equal(t, int64(1), tickCount(t, conn, "by_count"), "tick below ticker_max_events")
	writeEvents(t, conn, "by_count", 2)
	pgtest.Eventually(t, 5*time.Second, "tick at ticker_max_events", func() bool { return tickCount(t, conn, "by_count") == 2 })

	// Lag: a pending event ticks once the last tick is ticker_max_lag old, not before. The
	// first event finds an old tick and ticks at once; the second one waits for the lag.
	writeEvents(t, conn, "by_lag", 1)
	pgtest.Eventually(t, 5*time.Second, "tick at ticker_max_lag", func() bool { return tickCount(t, conn, "by_lag") == 2 })
	writeEvents(t, conn, "by_lag", 1)
	pgtest.Eventually(t, 5*time.Second, "tick at ticker_max_lag", func() bool { return tickCount(t, conn, "by_lag") == 3 })
	// skiff.ticker compares clock_timestamp() with the last tick_time, but a tick records
	// now(), the start of the ticking statement: gaps may fall short by a poll's duration.
	const slack = 20 * time.Millisecond
	lt := tickTimes(t, conn, "by_lag")
	require.GreaterOrEqual(t, lt[2].Sub(lt[1]), 300*time.Millisecond-slack, "lag tick came before ticker_max_lag")
	require.Less(t, lt[2].Sub(lt[1]), 1300*time.Millisecond, "lag tick came late")

	// Idle: ticks keep coming without events, never closer than the idle period.
	pgtest.Eventually(t, 10*time.Second, "idle ticks", func() bool { return tickCount(t, conn, "idle") >= 5 })
	times := tickTimes(t, conn, "idle")
	for i := 1; i < len(times); i++ {
		gap := times[i].Sub(times[i-1])
		require.GreaterOrEqual(t, gap, 500*time.Millisecond-slack, "idle tick %d came before ticker_idle_period", i)
		require.Less(t, gap, 2*time.Second, "idle tick %d came late", i)
	}

	// The counter moves after the tick's commit, which the query above may see first.
	pgtest.Eventually(t, 5*time.Second, "idle ticks counted", func() bool { return metricValue(tk.m.ticks, db, "idle") >= 4.0 })
	require.Equal(t, 1.0, metricValue(tk.m.ticks, db, "by_count"))
	require.Equal(t, 1.0, metricValue(tk.m.up, db))
	require.Equal(t, 1.0, metricValue(tk.m.leader, db))
}
