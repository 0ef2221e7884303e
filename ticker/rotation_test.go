package ticker

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// consumeBatch reads and finishes the consumer's next batch through the queue package and
// records the ids of the rows it carries; false when no batch was ready.
func consumeBatch(t testing.TB, conn *pgx.Conn, q, consumer string, seen map[int64]int) bool {
	t.Helper()
	ctx := context.Background()
	id, ok, err := queue.NextBatch(ctx, conn, q, consumer, 0)
	require.NoError(t, err)
	if !ok {
		return false
	}
	sql, err := queue.BatchEventSQL(ctx, conn, id)
	require.NoError(t, err)
	rows, err := conn.Query(ctx, sql)
	require.NoError(t, err)
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		data, _ := vals[5].(string) // ev_data: the row as a record literal "(id,v)"
		rowID, err := strconv.ParseInt(strings.SplitN(strings.TrimPrefix(data, "("), ",", 2)[0], 10, 64)
		require.NoError(t, err, "ev_data %q", data)
		seen[rowID]++
	}
	require.NoError(t, rows.Err())
	_, err = queue.FinishBatch(ctx, conn, id)
	require.NoError(t, err)
	return true
}

// eventRows counts the rows left in a queue's three event tables.
func eventRows(t testing.TB, conn *pgx.Conn, q string) int64 {
	t.Helper()
	var n int64
	ctx := context.Background()
	var qid int
	require.NoError(t, conn.QueryRow(ctx, "SELECT skiff.queue_id($1)", q).Scan(&qid))
	for i := 0; i < 3; i++ {
		var c int64
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM skiff.event_"+strconv.Itoa(qid)+"_"+strconv.Itoa(i)).Scan(&c))
		n += c
	}
	return n
}

// TestRotationWithSlowConsumer rotates event tables every 200ms under continuous writes while a
// consumer lags behind: no event is lost or repeated, and once the consumer has caught up the
// event tables are truncated.
func TestRotationWithSlowConsumer(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	ctx := context.Background()
	createQueue(t, conn, "rq", map[string]string{
		queue.SettingTickerMaxLag:     "20 milliseconds",
		queue.SettingTickerIdlePeriod: "100 milliseconds",
		queue.SettingRotationPeriod:   "200 milliseconds",
	})
	_, err := queue.RegisterConsumer(ctx, conn, "rq", "slow")
	require.NoError(t, err)

	cfg := testConfig(url)
	cfg.MaintSchedule = Every(50 * time.Millisecond)
	cfg.CleanupSchedule = Every(100 * time.Millisecond)
	cfg.RetrySchedule = Every(100 * time.Millisecond)
	tk, _ := startTicker(t, cfg)
	db := dbName(t, url)
	rotations := func() float64 { return metricValue(tk.m.rotations, db, "rq") }
	rotateRuns := func() float64 { return metricValue(tk.m.maintenance, db, "rotate") }

	// A writer inserts continuously: single-row transactions and, every tenth, five rows.
	wconn := pgtest.Connect(t, url)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var writeErr error
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n := 1
			if i%10 == 0 {
				n = 5
			}
			if _, err := wconn.Exec(ctx, `INSERT INTO rq (v) SELECT generate_series(1, $1)`, n); err != nil {
				writeErr = err
				return
			}
		}
	}()

	// The slow consumer takes one batch per two rotation attempts, until the queue rotated
	// several times under the writes.
	seen := map[int64]int{}
	for rotations() < 6 {
		consumeBatch(t, conn, "rq", "slow", seen)
		from := rotateRuns()
		pgtest.Eventually(t, 10*time.Second, "rotation attempts", func() bool { return rotateRuns() >= from+2 })
	}
	close(stop)
	wg.Wait()
	require.NoError(t, writeErr)

	// Catch up: every row written is read exactly once.
	var written int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM rq").Scan(&written))
	pgtest.Eventually(t, 60*time.Second, "consumer catches up", func() bool {
		for consumeBatch(t, conn, "rq", "slow", seen) {
		}
		return int64(len(seen)) == written
	})
	var ids []int64
	rows, err := conn.Query(ctx, "SELECT id FROM rq ORDER BY id")
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	for _, id := range ids {
		require.Equal(t, 1, seen[id], "row %d seen %d times", id, seen[id])
	}
	t.Logf("%d rows written and read back, %v rotations", written, rotations())

	// With the consumer keeping up, rotation truncates every table it has passed.
	pgtest.Eventually(t, 30*time.Second, "event tables truncated", func() bool {
		for consumeBatch(t, conn, "rq", "slow", seen) {
		}
		return eventRows(t, conn, "rq") == 0
	})
	require.Greater(t, metricValue(tk.m.maintenance, db, "vacuum"), 0.0)
	require.Greater(t, metricValue(tk.m.maintenance, db, "cleanup"), 0.0)
	require.Greater(t, metricValue(tk.m.maintenance, db, "retry"), 0.0)
}
