package worker

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// TestTableManagerSequencesOfSubscription: the worker's table manager moves forward only the
// sequences that belong on its target — those its subscription's tables draw from, and those
// no table of the queue draws from — not another target's tables' sequences (which it warned
// about every 2 s where the target lacked them, and moved where it had them).
func TestTableManagerSequencesOfSubscription(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := migratetest.NewDB(t, "", migrate.Provider)
	conn, err := pg.Connect(ctx, p, "worker test")
	require.NoError(t, err)
	defer conn.Close(context.Background())
	for _, sql := range []string{`CREATE TABLE a (id serial PRIMARY KEY)`, `CREATE TABLE b (id serial PRIMARY KEY)`,
		`CREATE SEQUENCE alone`, `INSERT INTO a DEFAULT VALUES`, `INSERT INTO b DEFAULT VALUES`} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	for _, tb := range []string{"a", "b", "alone"} {
		_, err := queue.AddTable(ctx, conn, "q", queue.TableSpec{Name: tb})
		require.NoError(t, err, tb)
	}
	cfg, err := pg.ParseConfig(p, "worker test")
	require.NoError(t, err)
	snaps := &tickSnapshots{cfg: cfg, queue: "q"}
	names := func(sources ...change.Table) []string {
		t.Helper()
		seqs, err := snaps.sequences(ctx, sources)
		require.NoError(t, err)
		var out []string
		for _, s := range seqs {
			out = append(out, s.Sequence.String())
		}
		slices.Sort(out)
		return out
	}
	require.Equal(t, []string{`"public"."a_id_seq"`, `"public"."alone"`}, names(change.Table{Schema: "public", Name: "a"}))
	require.Equal(t, []string{`"public"."alone"`, `"public"."b_id_seq"`}, names(change.Table{Schema: "public", Name: "b"}))
	require.Equal(t, []string{`"public"."alone"`}, names())
}

// TestTickSnapshotsCloseUnderQuery: the provider connection is closed when the context it was
// opened under ends, possibly while the table manager's query on it is still running. The
// close waits for the query (pgx panics, "slow write timer already active", when a
// connection is closed from another goroutine in the middle of a write: CI saw it).
func TestTickSnapshotsCloseUnderQuery(t *testing.T) {
	t.Parallel()
	p := migratetest.NewDB(t, "", migrate.Provider)
	conn, err := pg.Connect(context.Background(), p, "worker test")
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(context.Background(), `CREATE TABLE a (id serial PRIMARY KEY)`)
	require.NoError(t, err)
	_, err = queue.AddTable(context.Background(), conn, "q", queue.TableSpec{Name: "a"})
	require.NoError(t, err)
	cfg, err := pg.ParseConfig(p, "worker test")
	require.NoError(t, err)
	for i := range 200 {
		snaps := &tickSnapshots{cfg: cfg, queue: "q"}
		ctx, cancel := context.WithCancel(context.Background())
		// Open the connection, then keep it busy while the context ends.
		_, err := snaps.sequences(ctx, nil)
		require.NoError(t, err)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				_, _ = snaps.sequences(ctx, nil)
				_, _ = snaps.passed(ctx, "1:1:", change.Position{})
			}
		}()
		for range i % 7 {
			_, _ = conn.Exec(context.Background(), `SELECT 1`)
		}
		cancel()
		<-done
	}
}
