package ticker

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/queue"
)

// createQueue creates a queue capturing a table of the same name (id serial, v int) and
// applies settings (queue.Setting* names) to it.
func createQueue(t testing.TB, conn *pgx.Conn, q string, settings map[string]string) {
	t.Helper()
	ctx := context.Background()
	_, err := conn.Exec(ctx, "CREATE TABLE "+pgx.Identifier{q}.Sanitize()+" (id serial PRIMARY KEY, v int)")
	require.NoError(t, err)
	_, err = queue.AddTable(ctx, conn, q, queue.TableSpec{Name: pgx.Identifier{q}.Sanitize()})
	require.NoError(t, err)
	for k, v := range settings {
		require.NoError(t, queue.SetQueueConfig(ctx, conn, q, k, v))
	}
}

// writeEvents inserts n rows into the queue's table in one transaction: n events.
func writeEvents(t testing.TB, conn *pgx.Conn, q string, n int) {
	t.Helper()
	_, err := conn.Exec(context.Background(), "INSERT INTO "+pgx.Identifier{q}.Sanitize()+" (v) SELECT generate_series(1, $1)", n)
	require.NoError(t, err)
}

// tickCount returns the number of ticks of a queue.
func tickCount(t testing.TB, conn *pgx.Conn, q string) int64 {
	t.Helper()
	infos, err := queue.GetQueueInfo(context.Background(), conn)
	require.NoError(t, err)
	for _, qi := range infos {
		if qi.Name == q {
			return countTicks(t, conn, qi.ID)
		}
	}
	t.Fatalf("no queue %s", q)
	return 0
}

func countTicks(t testing.TB, conn *pgx.Conn, queueID int) int64 {
	t.Helper()
	var n int64
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT count(*) FROM skiff.tick WHERE queue_id = $1", queueID).Scan(&n))
	return n
}
