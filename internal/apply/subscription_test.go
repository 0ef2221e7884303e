package apply

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestSubscribeAgainResumes: subscribing again keeps the position and every table's state
// (nothing goes back to copying), adds new tables, refuses another route for a subscribed
// table and a destination another subscription of the queue writes.
func TestSubscribeAgainResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.Connect(t, migratetest.NewDB(t, "", migrate.Target))
	a, b, c := change.Table{Schema: "public", Name: "a"}, change.Table{Schema: "public", Name: "b"}, change.Table{Schema: "public", Name: "c"}
	res, err := Subscribe(ctx, conn, Subscription{Queue: "q", Consumer: "c1", Provider: "p", Tick: 5},
		[]change.Route{{Source: a, Dest: a, State: change.StateCopying}})
	require.NoError(t, err)
	require.True(t, res.Created)
	_, err = conn.Exec(ctx, `UPDATE skiff.table_state SET state = 'in-sync', copy_snapshot = '10:10:'; UPDATE skiff.subscription SET tick = 9`)
	require.NoError(t, err)

	res, err = Subscribe(ctx, conn, Subscription{Queue: "q", Consumer: "c1", Provider: "p", Tick: 1},
		[]change.Route{{Source: a, Dest: a, State: change.StateCopying}, {Source: b, Dest: b, State: change.StateCopying}})
	require.NoError(t, err)
	require.False(t, res.Created)
	require.Equal(t, []change.Table{a}, res.Kept)
	require.Equal(t, []change.Route{
		{Source: a, Dest: a, State: change.StateInSync, CopyPoint: "10:10:"},
		{Source: b, Dest: b, State: change.StateCopying},
	}, res.Routes)
	var tick int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT tick FROM skiff.subscription`).Scan(&tick))
	require.Equal(t, int64(9), tick, "the position is kept")

	_, err = Subscribe(ctx, conn, Subscription{Queue: "q", Consumer: "c1", Provider: "p"},
		[]change.Route{{Source: a, Dest: c, State: change.StateCopying}})
	require.ErrorIs(t, err, ErrRouteChanged)
	_, err = Subscribe(ctx, conn, Subscription{Queue: "q", Consumer: "c2", Provider: "p"},
		[]change.Route{{Source: c, Dest: c, State: change.StateCopying}, {Source: b, Dest: b, State: change.StateCopying}})
	require.ErrorIs(t, err, ErrDestTaken)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM skiff.subscription`).Scan(&n))
	require.Equal(t, 1, n, "a refused subscription leaves nothing behind")
	// Another queue may write the same table (merging groups).
	_, err = Subscribe(ctx, conn, Subscription{Queue: "q2", Consumer: "c1", Provider: "p"},
		[]change.Route{{Source: b, Dest: b, State: change.StateCopying}})
	require.NoError(t, err)
}

// TestFindConsumer: a queue's subscription is found by queue whatever its name; several need
// a name, unless one is the target's default (or the legacy name given).
func TestFindConsumer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.Connect(t, migratetest.NewDB(t, "", migrate.Target))
	def, err := DefaultConsumer(ctx, conn)
	require.NoError(t, err)
	require.Regexp(t, `^skiff@t\d+_\w+/[0-9a-f]{16}$`, def)
	again, err := DefaultConsumer(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, def, again, "stable")
	other := pgtest.Connect(t, migratetest.NewDB(t, "", migrate.Target))
	otherDef, err := DefaultConsumer(ctx, other)
	require.NoError(t, err)
	require.NotEqual(t, def, otherDef, "each target its own")

	name, found, err := FindConsumer(ctx, conn, "q", "", nil)
	require.NoError(t, err)
	require.False(t, found)
	require.Equal(t, def, name)

	_, err = conn.Exec(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider) VALUES ('q', 'skiff@h:5432/db', 'p')`)
	require.NoError(t, err)
	name, found, err = FindConsumer(ctx, conn, "q", "skiff@localhost:5432/db", nil)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "skiff@h:5432/db", name, "an earlier skiff's name, whatever the spelling now")

	_, err = conn.Exec(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider) VALUES ('q', 'x', 'p')`)
	require.NoError(t, err)
	_, _, err = FindConsumer(ctx, conn, "q", "", nil)
	require.ErrorIs(t, err, ErrAmbiguous)
	require.ErrorContains(t, err, "skiff@h:5432/db, x")
	name, _, err = FindConsumer(ctx, conn, "q", "skiff@h:5432/db", nil)
	require.NoError(t, err)
	require.Equal(t, "skiff@h:5432/db", name)
	_, err = conn.Exec(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider) VALUES ('q', $1, 'p')`, def)
	require.NoError(t, err)
	name, _, err = FindConsumer(ctx, conn, "q", "skiff@h:5432/db", nil)
	require.NoError(t, err)
	require.Equal(t, def, name, "the default name first")
	known := func(names ...string) func(context.Context) ([]string, error) {
		return func(context.Context) ([]string, error) { return names, nil }
	}
	name, _, err = FindConsumer(ctx, conn, "q", "", known("x", "elsewhere"))
	require.NoError(t, err)
	require.Equal(t, "x", name, "the one the provider knows before the default")
	name, _, err = FindConsumer(ctx, conn, "q", "", known("x", def))
	require.NoError(t, err)
	require.Equal(t, def, name, "the provider knows two: the default one")
}
