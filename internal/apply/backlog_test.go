package apply

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestBacklogRoundTrip: events appended to a copy backlog in one batch come back from
// DrainBacklog in the next, equal field by field (NULLs, empty strings, key changes,
// TRUNCATE), are applied like the same events applied directly, and the backlog is gone.
func TestBacklogRoundTrip(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		t.Run("pg"+ver, func(t *testing.T) {
			t.Parallel()
			testBacklogRoundTrip(t, ver)
		})
	}
}

func testBacklogRoundTrip(t *testing.T, ver string) {
	ctx := context.Background()
	src := change.Table{Schema: "public", Name: "source table"}
	evs := []change.Event{
		ins(1, v("1"), v("tab\there"), change.Null),
		ins(2, v("2"), v(""), v("2")),
		ins(3, v("3"), v(`\N`), v("3")),
		{ID: 4, Op: change.Truncate, Table: tbl},
		ins(5, v("4"), change.Null, v("4")),
		ins(6, v("5"), v("quote ' \" ,{}() "+strings.Repeat("x", 10000)), v("5")),
		upd(7, []change.Value{v("4")}, v("40"), v("moved"), change.Null),
		upd(8, nil, v("5"), change.Null, v("6")),
		del(9, v("40"), change.Null, change.Null),
	}
	for i := range evs {
		evs[i].TxID = int64(1000 + i)
	}
	direct := newTarget(t, ver, ddl)
	require.NoError(t, direct.apply(t, evs))

	tg := newTarget(t, ver, ddl)
	_, err := tg.conn.Exec(ctx, `INSERT INTO skiff.table_state (sub_id, source_schema, source_name, dest_schema, dest_name, state)
		SELECT sub_id, $1, $2, 'public', 't', 'catching-up' FROM skiff.subscription`, src.Schema, src.Name)
	require.NoError(t, err)
	batch := func(stream func(emit func([]change.Event) error) error) {
		t.Helper()
		tg.id++
		b := change.Batch{ID: tg.id, Queue: "q", Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
		require.NoError(t, tg.a.Apply(ctx, b, stream))
		tg.tick++
	}
	batch(func(emit func([]change.Event) error) error {
		if err := tg.a.AppendBacklog(ctx, src, evs[:4]); err != nil {
			return err
		}
		return tg.a.AppendBacklog(ctx, src, evs[4:])
	})
	require.Empty(t, dump(t, tg.conn, "t"), "backlogged events are not applied")
	var got []change.Event
	batch(func(emit func([]change.Event) error) error {
		tables, err := tg.a.Backlogged(ctx)
		if err != nil {
			return err
		}
		require.Equal(t, []change.Table{src}, tables)
		n, err := tg.a.DrainBacklog(ctx, src, func(chunk []change.Event) error {
			got = append(got, chunk...)
			return emit(chunk)
		})
		require.Equal(t, len(evs), n)
		return err
	})
	require.Equal(t, evs, got)
	require.Equal(t, dump(t, direct.conn, "t"), dump(t, tg.conn, "t"))
	var left int
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog`).Scan(&left))
	require.Zero(t, left)
}

// TestSubscribeDropsBacklog: subscribing a table again (with a new copy, or --no-copy: the
// destination holds the rows) drops the backlog its earlier state collected; other tables'
// backlogs stay.
func TestSubscribeDropsBacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tg := newTarget(t, "", ddl)
	a := change.Table{Schema: "public", Name: "a"}
	_, err := tg.conn.Exec(ctx, `INSERT INTO skiff.copy_backlog (sub_id, source_schema, source_name, event_id, txid, op, dest_schema, dest_name)
		SELECT sub_id, 'public', n, 1, 1, 'T', 'public', n FROM skiff.subscription, (VALUES ('a'), ('b')) AS v (n)`)
	require.NoError(t, err)
	_, err = Subscribe(ctx, tg.conn, Subscription{Queue: "q", Consumer: "c", Provider: "p"},
		[]change.Route{{Source: a, Dest: a, State: change.StateInSync}})
	require.NoError(t, err)
	rows, err := tg.conn.Query(ctx, `SELECT source_name FROM skiff.copy_backlog`)
	require.NoError(t, err)
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, left)
}
