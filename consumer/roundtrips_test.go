package consumer_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// countingConn counts the writes a client makes: pgx writes each batch of messages it sends
// before waiting for the server once, so writes are round trips.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestBatchTargetRoundTrips: a short batch (one insert) costs the worker a known number of
// round trips to the target, each of which waits for a CPU on a loaded machine (the lag
// path): BEGIN; one pgx batch of the SET LOCALs, the subscription row FOR UPDATE, the routes,
// the tables with a copy backlog and the events set aside; the row (an INSERT: COPY would be
// two); one pgx batch of the new position and the batch_log row; COMMIT. The target's
// position is not read before a batch that starts where the worker's last one ended (the lock
// in the batch's transaction checks it). 14 before these were merged.
func TestBatchTargetRoundTrips(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := migratetest.NewDB(t, "", migrate.Target)
	conn := pgtest.Connect(t, url)
	_, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	_, err = apply.Subscribe(ctx, conn, apply.Subscription{Queue: "q", Consumer: "c", Provider: "test", Tick: 1},
		[]change.Route{{Source: src, Dest: src, State: change.StateInSync}})
	require.NoError(t, err)

	writes := new(atomic.Int64)
	cfg, err := pg.ParseConfig(url, "skiff-test-applier")
	require.NoError(t, err)
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: nc, writes: writes}, nil
	}
	aconn, err := pg.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = aconn.Close(context.Background()) })
	a, err := apply.Open(ctx, aconn, apply.Config{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	f := &fixture{url: url, conn: conn, a: a, src: newMemSource()}
	stop := f.run(t, nil)

	var ids []int64
	var perBatch []int64
	for i := int64(1); i <= 4; i++ {
		before := writes.Load()
		f.src.add(batch(100+i, i, i+1), ins(i, "1"+string(rune('0'+i)), "x"))
		ids = append(ids, 100+i)
		f.finished(t, ids...)
		perBatch = append(perBatch, writes.Load()-before)
	}
	require.NoError(t, stop())
	t.Logf("target round trips per batch: %v", perBatch)
	// The first batches load the table and prepare statements.
	require.Equal(t, int64(5), perBatch[3], "round trips of a short batch on the target: %v", perBatch)
	require.Equal(t, []string{"(11,x)", "(12,x)", "(13,x)", "(14,x)"}, f.rows(t, "t"))
	pos, err := a.Position(ctx)
	require.NoError(t, err)
	require.Equal(t, change.Position{Tick: 5}, pos)
}
