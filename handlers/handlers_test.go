package handlers

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

func event() change.Event {
	return change.Event{
		ID: 1, Op: change.Insert, Table: change.Table{Schema: "public", Name: "t"},
		Columns: []string{"id", "secret", "v"}, Key: []string{"id"},
		Values: []change.Value{change.Text("1"), change.Text("pw"), change.Text("x")},
	}
}

func TestRouteRenameAndColumns(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	h, err := r.ForRoute(change.Route{
		Source: change.Table{Schema: "public", Name: "t"}, Dest: change.Table{Schema: "copy", Name: "t2"},
		Handler: "columns", Config: `{"rename": {"v": "value"}, "exclude": ["secret"]}`,
	})
	require.NoError(t, err)
	ev := event()
	shared := ev.Columns
	keep, err := h.Handle(&ev)
	require.NoError(t, err)
	require.True(t, keep)
	require.Equal(t, change.Table{Schema: "copy", Name: "t2"}, ev.Table)
	require.Equal(t, []string{"id", "value"}, ev.Columns)
	require.Equal(t, []change.Value{change.Text("1"), change.Text("x")}, ev.Values)
	require.Equal(t, []string{"id", "secret", "v"}, shared, "the shared layout is not modified")

	// A second event of the layout gets the same rewritten column slice.
	ev2 := event()
	ev2.Columns = shared
	_, err = h.Handle(&ev2)
	require.NoError(t, err)
	require.Same(t, &ev.Columns[0], &ev2.Columns[0])
}

func TestColumnsRefusesKeyExclusion(t *testing.T) {
	t.Parallel()
	h, err := NewRegistry().New("columns", change.Table{Name: "t"}, `{"exclude": ["id"]}`)
	require.NoError(t, err)
	ev := event()
	_, err = h.Handle(&ev)
	require.ErrorContains(t, err, `key column "id" cannot be excluded`)
}

func TestFilter(t *testing.T) {
	t.Parallel()
	h, err := NewRegistry().New("filter", change.Table{Name: "t"}, `{"column": "v", "in": ["y"]}`)
	require.NoError(t, err)
	ev := event()
	keep, err := h.Handle(&ev)
	require.NoError(t, err)
	require.False(t, keep)
	ev.Values[2] = change.Text("y")
	keep, err = h.Handle(&ev)
	require.NoError(t, err)
	require.True(t, keep)
}

// TestFilterUpdatesAcrossTheFilter: an update carries only its new row, so the filter cannot
// know whether the target holds the row: one whose new row is kept is an Upsert (it may have
// moved in), one whose new row is not a Remove (it may have moved out) — with the old key of
// a key change. Inserts and deletes are kept or dropped; a delete without the column (key
// only) is a Remove.
func TestFilterUpdatesAcrossTheFilter(t *testing.T) {
	t.Parallel()
	h, err := NewRegistry().New("filter", change.Table{Name: "t"}, `{"column": "v", "in": ["eu"]}`)
	require.NoError(t, err)
	handle := func(op change.Op, v change.Value, oldKey []change.Value) (bool, change.Event) {
		t.Helper()
		ev := event()
		ev.Op, ev.Values[2], ev.OldKey = op, v, oldKey
		keep, err := h.Handle(&ev)
		require.NoError(t, err)
		return keep, ev
	}
	for _, c := range []struct {
		op   change.Op
		v    change.Value
		keep bool
		want change.Op
	}{
		{change.Insert, change.Text("eu"), true, change.Insert},
		{change.Insert, change.Text("us"), false, change.Insert},
		{change.Delete, change.Text("eu"), true, change.Delete},
		{change.Delete, change.Null, false, change.Delete},
		{change.Update, change.Text("eu"), true, change.Upsert}, // us → eu, or eu → eu
		{change.Update, change.Text("us"), true, change.Remove}, // eu → us, or us → us
		{change.Update, change.Null, true, change.Remove},       // NULL never matches
		{change.Upsert, change.Text("us"), true, change.Remove}, // an earlier handler's upsert
		{change.Remove, change.Text("us"), true, change.Remove}, // stays a removal
		{change.Truncate, change.Text("us"), true, change.Truncate},
	} {
		keep, ev := handle(c.op, c.v, nil)
		require.Equal(t, c.keep, keep, "%s %v", c.op, c.v)
		require.Equal(t, c.want, ev.Op, "%s %v", c.op, c.v)
	}
	old := []change.Value{change.Text("7")}
	_, ev := handle(change.Update, change.Text("us"), old)
	require.Equal(t, change.Remove, ev.Op)
	require.Equal(t, old, ev.KeyValues(), "a key change removes the old key")
	_, ev = handle(change.Update, change.Text("eu"), old)
	require.Equal(t, change.Upsert, ev.Op)
	require.Equal(t, old, ev.OldKey)

	del := change.Event{Op: change.Delete, Table: change.Table{Name: "t"}, Columns: []string{"id"}, Key: []string{"id"},
		Values: []change.Value{change.Text("1")}}
	keep, err := h.Handle(&del)
	require.NoError(t, err)
	require.True(t, keep)
	require.Equal(t, change.Remove, del.Op)
	upd := change.Event{Op: change.Update, Table: change.Table{Name: "t"}, Columns: []string{"id"}, Key: []string{"id"},
		Values: []change.Value{change.Text("1")}}
	_, err = h.Handle(&upd)
	require.ErrorContains(t, err, `no column "v"`)
}

func TestRegistryCustomHandler(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	// A custom handler: route rows of a renamed schema to per-year tables.
	require.NoError(t, r.Register("upper", func(table change.Table, cfg json.RawMessage) (Handler, error) {
		return Func(func(ev *change.Event) (bool, error) {
			ev.Table.Name = ev.Table.Name + "_routed"
			return true, nil
		}), nil
	}))
	require.ErrorContains(t, r.Register("upper", nil), "already registered")
	_, err := r.New("nope", change.Table{Name: "t"}, "")
	require.ErrorContains(t, err, `unknown handler "nope" (registered: columns, filter, partition, rename, skip, upper)`)
	_, err = r.New("rename", change.Table{Name: "t"}, `{"bogus": 1}`)
	require.ErrorContains(t, err, "bogus")

	h, err := r.ForRoute(change.Route{Source: change.Table{Schema: "a", Name: "t"}, Dest: change.Table{Schema: "b", Name: "t"}, Handler: "upper"})
	require.NoError(t, err)
	ev := event()
	_, err = h.Handle(&ev)
	require.NoError(t, err)
	require.Equal(t, change.Table{Schema: "b", Name: "t_routed"}, ev.Table)
}

// TestSkip: the skip handler drops every event, says so (consumer.Skipper), is found through
// a chain, and takes no configuration.
func TestSkip(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	h, err := r.ForRoute(change.Route{Source: change.Table{Schema: "public", Name: "t"}, Dest: change.Table{Schema: "app", Name: "t"}, Handler: SkipName})
	require.NoError(t, err)
	require.Equal(t, Skip{}, h, "a skipped table needs no rename")
	require.True(t, Skips(h))
	require.True(t, Skips(Chain{Rename{Schema: "x"}, Skip{}}))
	require.False(t, Skips(Rename{Schema: "x"}))
	require.True(t, h.(interface{ SkipsAll() bool }).SkipsAll())
	ev := event()
	keep, err := h.Handle(&ev)
	require.NoError(t, err)
	require.False(t, keep)
	_, err = r.New(SkipName, change.Table{Name: "t"}, `{"x": 1}`)
	require.ErrorContains(t, err, "no configuration")
}
