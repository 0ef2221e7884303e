package apply

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestInsertAfterMissedUpdateStops: a batch that updates a row the target lacks and then
// inserts it with no DELETE between can only come from a capture that queued the row's
// changes out of order (a user's trigger fired before skiff's); applied as it comes the
// target would keep the row as first inserted. The worker stops with ErrMisordered, naming
// both events and the row, and applies nothing of the batch — whether the UPDATE is pending
// in the key's run, was written in an earlier run of the batch, or the batch goes row by
// row. Streams in order that look alike go on: a DELETE between, a TRUNCATE between, an
// UPDATE that found its row (the target's key refuses the INSERT then).
func TestInsertAfterMissedUpdateStops(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		t.Run("pg"+ver, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, ver, ddl)
			ctx := context.Background()
			misordered := func(err error, ins, upd int64, id int) {
				t.Helper()
				tg.misordered(t, err, ins, fmt.Sprintf("row (id=%d) was changed by the UPDATE of event %d earlier in this batch", id, upd), "skiff table resync")
			}

			// The UPDATE pending in the run: what a multi-row INSERT gives when row 1's
			// trigger updates row 2 (I 1, U 2, I 2).
			bad := []change.Event{
				ins(1, row(1, "a")...),
				upd(2, nil, row(2, "b fixed")...),
				ins(3, row(2, "b")...),
			}
			misordered(tg.apply(t, bad), 3, 2, 2)

			// Row by row (the path that names a failing event).
			tg.id++
			b := change.Batch{ID: tg.id, Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
			err := tg.a.applyOnce(ctx, b, func(emit func([]change.Event) error) error { return emit(bad) }, false, false)
			misordered(err, 3, 2, 2)

			// The UPDATE written in an earlier run of the batch (more events between than a
			// run holds), and a key change onto an updated key.
			long := []change.Event{upd(1, nil, row(5, "e fixed")...)}
			for i := range 1500 {
				long = append(long, ins(int64(2+i), row(100+i, "x")...))
			}
			long = append(long, ins(2000, row(5, "e")...))
			misordered(tg.apply(t, long), 2000, 1, 5)
			misordered(tg.apply(t, []change.Event{
				ins(1, row(8, "h")...),
				upd(2, nil, row(9, "i fixed")...),
				upd(3, []change.Value{v("8")}, row(9, "h moved")...),
			}), 3, 2, 9)

			// In order: a DELETE (a Remove here: a DELETE of a row the target lacks stops too, see
			// TestInsertAfterMissedDeleteStops) or a TRUNCATE between, in a run and across runs.
			ok := []change.Event{
				upd(1, nil, row(7, "missing")...),
				{ID: 2, Op: change.Truncate, Table: tbl},
				ins(3, row(7, "g")...),
				upd(4, nil, row(6, "missing")...),
				rem(5, row(6, "missing")...),
				ins(6, row(6, "f")...),
				upd(7, nil, row(11, "missing")...),
			}
			for i := range 1500 {
				ok = append(ok, ins(int64(8+i), row(100+i, "x")...))
			}
			ok = append(ok, rem(1600, row(11, "")...), ins(1601, row(11, "k")...))
			require.NoError(t, tg.apply(t, ok))
			require.Equal(t, []string{"(11,k,0)", "(6,f,0)", "(7,g,0)"}, dump(t, tg.conn, "(SELECT * FROM t WHERE id < 100)"))

			// An UPDATE that found its row: the INSERT is the target's to refuse, by its key.
			err = tg.apply(t, []change.Event{upd(1, nil, row(6, "f2")...), ins(2, row(6, "f3")...)})
			require.Error(t, err)
			require.False(t, errors.Is(err, ErrMisordered), "%v", err)
			require.Contains(t, err.Error(), "23505")
		})
	}
}

// TestInsertAfterMissedDeleteStops: a batch that deletes a row the target lacks and then
// inserts it again would leave the target with a row the provider deleted, if the capture
// queued the DELETE before the INSERT (a user's trigger deleting a row of the INSERT before
// skiff's capture trigger queued it). The worker stops with ErrMisordered, naming both
// events, the row and the way out, whether the DELETE is in the INSERT's run (the batch is
// replayed row by row to tell), in an earlier run, or the batch goes row by row. A DELETE
// that finds its row, a Remove (which may find none) and a missed DELETE of a row not
// inserted again go on.
func TestInsertAfterMissedDeleteStops(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		t.Run("pg"+ver, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, ver, ddl)
			ctx := context.Background()
			misordered := func(err error, ins, del int64, id int) {
				t.Helper()
				tg.misordered(t, err, ins, fmt.Sprintf("row (id=%d) was deleted by the DELETE of event %d earlier in this batch, which found no row on the target", id, del),
					fmt.Sprintf("skiff event skip --event %d", del))
			}

			// Row 1's trigger deleted row 2 of the same INSERT: I 1, D 2, I 2.
			bad := []change.Event{ins(1, row(1, "a")...), del(2, row(2, "b")...), ins(3, row(2, "b")...)}
			misordered(tg.apply(t, bad), 3, 2, 2)
			tg.id++
			b := change.Batch{ID: tg.id, Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
			misordered(tg.a.applyOnce(ctx, b, func(emit func([]change.Event) error) error { return emit(bad) }, false, false), 3, 2, 2)

			// The DELETE written in an earlier run of the batch.
			long := []change.Event{del(1, row(5, "e")...)}
			for i := range 1500 {
				long = append(long, ins(int64(2+i), row(100+i, "x")...))
			}
			long = append(long, ins(2000, row(5, "e")...))
			misordered(tg.apply(t, long), 2000, 1, 5)

			// In order: a DELETE that finds its row, a Remove, a missed DELETE of a row not
			// inserted again.
			require.NoError(t, tg.apply(t, []change.Event{ins(1, row(6, "f")...), ins(2, row(7, "g")...)}))
			require.NoError(t, tg.apply(t, []change.Event{
				del(1, row(6, "f")...),
				ins(2, row(6, "f2")...),
				rem(3, row(8, "")...),
				ins(4, row(8, "h")...),
				del(5, row(9, "")...),
				del(6, row(7, "g")...),
				ins(7, row(7, "g2")...),
			}))
			require.Equal(t, []string{"(6,f2,0)", "(7,g2,0)", "(8,h,0)"}, dump(t, tg.conn, "t"))
		})
	}
}

func rem(id int64, vals ...change.Value) change.Event {
	return change.Event{ID: id, Op: change.Remove, Table: tbl, Columns: cols, Key: key, Values: vals}
}

// row is a row of table t (id, v, n = 0).
func row(id int, val string) []change.Value {
	return []change.Value{v(strconv.Itoa(id)), v(val), v("0")}
}

// misordered checks that err is ErrMisordered on event ins, with the texts wants, and that
// nothing of the batch reached the target.
func (tg *testTarget) misordered(t *testing.T, err error, ins int64, wants ...string) {
	t.Helper()
	require.ErrorIs(t, err, ErrMisordered)
	var ae *Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, ins, ae.EventID)
	for _, want := range wants {
		require.Contains(t, err.Error(), want)
	}
	require.Empty(t, dump(t, tg.conn, "t"), "nothing of the batch is applied")
}
