package ticker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestTickerAdoptsNewChildren: with its maintenance, the ticker gives an inheritance child
// created after table add the capture's triggers, queues the rows it got before, and takes the
// triggers back from a child that leaves the parent.
func TestTickerAdoptsNewChildren(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	for _, sql := range []string{
		`CREATE TABLE h (id int PRIMARY KEY, v text)`,
		`CREATE TABLE h_a (CHECK (id < 100)) INHERITS (h)`,
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err)
	}
	_, err := queue.AddTable(ctx, conn, "q", queue.TableSpec{Name: "h", KeyNotUnique: true})
	require.NoError(t, err)
	_, err = queue.RegisterConsumer(ctx, conn, "q", "c")
	require.NoError(t, err)

	cfg := testConfig(url)
	cfg.MaintSchedule = Every(50 * time.Millisecond)
	tk, _ := startTicker(t, cfg)
	db := dbName(t, url)

	triggers := func(table string) int {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname LIKE '%skiff%'`, table).Scan(&n))
		return n
	}
	_, err = conn.Exec(ctx, `CREATE TABLE h_b (CHECK (id >= 100)) INHERITS (h)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO h_b VALUES (100, 'before')`)
	require.NoError(t, err)
	pgtest.Eventually(t, 10*time.Second, "the new child gets the capture triggers", func() bool { return triggers("h_b") == 2 })
	_, err = conn.Exec(ctx, `INSERT INTO h_b VALUES (101, 'after')`)
	require.NoError(t, err)

	_, err = conn.Exec(ctx, `ALTER TABLE h_a NO INHERIT h`)
	require.NoError(t, err)
	pgtest.Eventually(t, 10*time.Second, "the former child loses them", func() bool { return triggers("h_a") == 0 })
	_, err = conn.Exec(ctx, `INSERT INTO h_a VALUES (1, 'not captured')`)
	require.NoError(t, err)
	require.Positive(t, metricValue(tk.m.maintenance, db, "children"))

	src, err := queue.NewSource(ctx, pgtest.Connect(t, url), queue.SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	_, err = queue.ForceTick(ctx, conn, "q")
	require.NoError(t, err)
	var got []string
	pgtest.Eventually(t, 10*time.Second, "a batch", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		b, err := src.NextBatch(rctx)
		if err != nil {
			return false
		}
		require.NoError(t, src.Events(ctx, b, func(evs []change.Event) error {
			for _, e := range evs {
				got = append(got, e.Op.String()+" "+e.Table.Name+" "+e.Values[0].Text)
			}
			return nil
		}))
		require.NoError(t, src.Finish(ctx, b))
		return len(got) >= 3
	})
	require.Equal(t, []string{"REMOVE h 100", "INSERT h 100", "INSERT h 101"}, got)
}
