package ticker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestLogicalQueuesIgnored: the ticker neither lists nor ticks a logical queue (its
// subscriptions stream from replication slots), and goes on ticking the trigger queues beside it.
func TestLogicalQueuesIgnored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn, err := pg.Connect(ctx, url, "test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if pg.ServerVersion(conn) < 90400 {
		t.Skip("no logical queue before 9.4")
	}
	createQueue(t, conn, "tq", nil)
	_, err = conn.Exec(ctx, `CREATE TABLE lt (id int PRIMARY KEY)`)
	require.NoError(t, err)
	_, err = queue.AddTable(ctx, conn, "lq", queue.TableSpec{Name: "lt", Source: queue.SourceLogical})
	require.NoError(t, err)

	lqTicks := func() int {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM skiff.tick k JOIN skiff.queue q ON q.queue_id = k.queue_id
			WHERE q.queue_name = 'lq'`).Scan(&n))
		return n
	}
	before := lqTicks() // the queue's creation tick

	infos, err := openQueue(conn).Queues(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.Equal(t, "tq", infos[0].Name)

	startTicker(t, testConfig(url))
	writeEvents(t, conn, "tq", 3)
	require.Eventually(t, func() bool { return tickCount(t, conn, "tq") >= 2 }, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, before, lqTicks(), "a logical queue gets no tick")
}
