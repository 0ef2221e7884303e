package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestSourceFinishDoesNotWaitForFlush: Source.Finish commits without waiting for its WAL to
// be flushed (synchronous_commit off for that one transaction): a finish lost in a provider
// crash only hands the batch out again, which the worker finishes without applying (the
// target's position says it is applied), so the wait would only add an fsync to every
// batch's cycle. The server is made to hold every synchronous commit forever (a synchronous
// standby that never connects): Finish still returns, and the consumer has moved on.
func TestSourceFinishDoesNotWaitForFlush(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := pgtest.New(t, pgtest.Options{Version: pgtest.DefaultVersion()})
	url := srv.NewDB(t)
	migratetest.Install(t, url, migrate.Provider)
	p := &provider{url: url}
	c := p.conn(t)
	exec(t, c, `CREATE TABLE public.t (id int PRIMARY KEY)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c1")
	require.NoError(t, err)
	exec(t, c, `INSERT INTO t VALUES (1)`)
	tick, err := ForceTick(ctx, c, "q")
	require.NoError(t, err)

	srcConn := p.conn(t)
	src, err := NewSource(ctx, srcConn, SourceConfig{Queue: "q", Consumer: "c1"})
	require.NoError(t, err)
	b, err := src.NextBatch(ctx)
	require.NoError(t, err)
	var evs []change.Event
	require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
		evs = append(evs, chunk...)
		return nil
	}))
	require.Len(t, evs, 1)
	require.Equal(t, tick, b.End.Tick)

	// From now on a synchronous commit waits for a standby that does not exist.
	exec(t, c, `ALTER SYSTEM SET synchronous_standby_names = 'skiff_no_such_standby'`)
	exec(t, c, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		cc, err := pg.Connect(context.Background(), url, "skiff-test")
		if err != nil {
			return
		}
		defer cc.Close(context.Background())
		_, _ = cc.Exec(context.Background(), `SET synchronous_commit = local`)
		_, _ = cc.Exec(context.Background(), `ALTER SYSTEM RESET synchronous_standby_names`)
		_, _ = cc.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})
	require.Eventually(t, func() bool {
		var names string
		err := srcConn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&names)
		return err == nil && names == "skiff_no_such_standby"
	}, 30*time.Second, 20*time.Millisecond, "the source's session never saw the new setting")

	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	require.NoError(t, src.Finish(fctx, b))
	require.NoError(t, fctx.Err(), "Finish waited for a synchronous commit")

	var last int64
	require.NoError(t, c.QueryRow(ctx, `SELECT sub_last_tick FROM skiff.consumer WHERE sub_consumer = 'c1'`).Scan(&last))
	require.Equal(t, tick, last)
	var open *int64
	require.NoError(t, c.QueryRow(ctx, `SELECT sub_batch FROM skiff.consumer WHERE sub_consumer = 'c1'`).Scan(&open))
	require.Nil(t, open)
}
