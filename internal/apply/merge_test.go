package apply

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/target"
)

// newMergedTarget is newTarget with the subscription merged under mode (the applier reads it
// when it opens).
func newMergedTarget(t *testing.T, version, ddl, mode string) *testTarget {
	t.Helper()
	ctx := context.Background()
	tg := newTarget(t, version, ddl)
	require.NoError(t, tg.a.Close(ctx))
	require.NoError(t, target.SetMergeMode(ctx, tg.conn, tg.a.SubscriptionID(), mode))
	a, err := Open(ctx, tg.conn, Config{Queue: "q", Consumer: "c", MaxPendingRows: 1000})
	require.NoError(t, err)
	require.Equal(t, mode, a.Merge())
	tg.a = a
	return tg
}

// TestMergeConflicts: on a merged subscription an insert whose key the target holds, an update
// and a delete whose key it lacks are conflicts; in a batch of set-based runs (many rows around
// them) error stops with a ConflictError naming table and key and applies nothing,
// apply-remote writes the provider's change, keep-local keeps the target's row; the settled
// ones are counted on the subscription. Changes without conflict apply as usual, and a
// TRUNCATE is refused.
func TestMergeConflicts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Rows 1..100 are another provider's (1, 2 and 3 are the ones the batch meets).
	// The batch: inserts 1000..1199 (no conflict), an insert of key 1, updates of 1000 and of
	// the missing 5000, a delete of the missing 5001 and of 2, an update of 3.
	batch := func() []change.Event {
		var evs []change.Event
		for i := int64(0); i < 200; i++ {
			evs = append(evs, ins(i+1, v(strconv.FormatInt(1000+i, 10)), v("new"), v("0")))
		}
		return append(evs,
			ins(300, v("1"), v("remote"), v("9")),
			upd(301, nil, v("1000"), v("changed"), v("1")),
			upd(302, nil, v("5000"), v("remote update"), v("2")),
			del(303, v("5001"), change.Null, change.Null),
			del(304, v("2"), change.Null, change.Null),
			upd(305, nil, v("3"), v("remote 3"), v("3")),
		)
	}
	const mergeDDL = ddl + `; INSERT INTO t SELECT g, 'local', 0 FROM generate_series(1, 100) g`
	row := func(tg *testTarget, id string) string {
		var s string
		err := tg.conn.QueryRow(ctx, `SELECT coalesce((SELECT t::text FROM t WHERE id = $1::int), 'missing')`, id).Scan(&s)
		require.NoError(t, err)
		return s
	}

	t.Run("error", func(t *testing.T) {
		t.Parallel()
		tg := newMergedTarget(t, "", mergeDDL, MergeError)
		err := tg.apply(t, batch())
		var ce *ConflictError
		require.ErrorAs(t, err, &ce)
		require.ErrorIs(t, err, change.ErrPositionLost, "the worker stops")
		require.Equal(t, int64(300), ce.EventID)
		require.ErrorContains(t, err, `merge conflict on table "public"."t", key (id=1)`)
		require.Equal(t, "(1,local,0)", row(tg, "1"))
		require.Equal(t, "missing", row(tg, "1000"), "nothing of the batch applied")
	})
	t.Run("apply-remote", func(t *testing.T) {
		t.Parallel()
		tg := newMergedTarget(t, "", mergeDDL, MergeApplyRemote)
		require.NoError(t, tg.apply(t, batch()))
		require.Equal(t, "(1,remote,9)", row(tg, "1"))
		require.Equal(t, "(1000,changed,1)", row(tg, "1000"))
		require.Equal(t, "(1199,new,0)", row(tg, "1199"))
		require.Equal(t, `(5000,"remote update",2)`, row(tg, "5000"), "an update of a missing key inserts it")
		require.Equal(t, "missing", row(tg, "2"))
		require.Equal(t, `(3,"remote 3",3)`, row(tg, "3"))
		m, err := target.MergeOf(ctx, tg.conn, 8, tg.a.SubscriptionID())
		require.NoError(t, err)
		require.Equal(t, int64(3), m.Conflicts, "insert of 1, update of 5000, delete of 5001")
		require.Equal(t, int64(3), tg.a.LastConflicts())
		require.Contains(t, m.LastConflict, "apply-remote")
	})
	t.Run("keep-local", func(t *testing.T) {
		t.Parallel()
		tg := newMergedTarget(t, "", mergeDDL, MergeKeepLocal)
		require.NoError(t, tg.apply(t, batch()))
		require.Equal(t, "(1,local,0)", row(tg, "1"))
		require.Equal(t, "(1000,changed,1)", row(tg, "1000"))
		require.Equal(t, "missing", row(tg, "5000"))
		require.Equal(t, `(3,"remote 3",3)`, row(tg, "3"), "an update of a key the target holds is no conflict")
		m, err := target.MergeOf(ctx, tg.conn, 8, tg.a.SubscriptionID())
		require.NoError(t, err)
		require.Equal(t, int64(3), m.Conflicts)
		// A batch without conflict stays set-based and counts none.
		require.NoError(t, tg.apply(t, []change.Event{ins(400, v("2000"), v("x"), v("0")), upd(401, nil, v("2000"), v("y"), v("1"))}))
		require.Equal(t, int64(0), tg.a.LastConflicts())
		err = tg.apply(t, []change.Event{{ID: 500, Op: change.Truncate, Table: tbl}})
		var te *MergedTruncateError
		require.ErrorAs(t, err, &te)
		require.ErrorIs(t, err, change.ErrPositionLost)
		require.Equal(t, "(1,local,0)", row(tg, "1"), "nothing truncated")
	})
	t.Run("no unique key", func(t *testing.T) {
		t.Parallel()
		tg := newMergedTarget(t, "", `CREATE TABLE t (id int, v text, n bigint)`, MergeKeepLocal)
		err := tg.apply(t, []change.Event{ins(1, v("1"), v("x"), v("0"))})
		require.ErrorContains(t, err, "needs a primary key or unique index on exactly its key columns (id)")
	})
}
