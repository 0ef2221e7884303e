package handlers

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

func orderEvent(op change.Op, id, created string) change.Event {
	return change.Event{ID: 7, TxID: 9, Op: op, Table: change.Table{Schema: "legacy", Name: "orders"},
		Columns: []string{"id", "created", "region"}, Key: []string{"id", "created"},
		Values: []change.Value{change.Text(id), change.Text(created), change.Text("eu")}}
}

func TestPartitionBuckets(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	for by, want := range map[string]string{"year": "orders_2024", "month": "orders_2024_05", "day": "orders_2024_05_17"} {
		h, err := r.ForRoute(change.Route{Source: change.Table{Schema: "legacy", Name: "orders"}, Dest: change.Table{Schema: "app", Name: "orders"},
			Handler: PartitionName, Config: `{"column": "created", "by": "` + by + `", "create": true}`})
		require.NoError(t, err)
		for _, v := range []string{"2024-05-17", "2024-05-17 23:59:59.5", "2024-05-17 10:00:00+00"} {
			ev := orderEvent(change.Insert, "1", v)
			out, err := Run(h, &ev, nil)
			require.NoError(t, err)
			require.Len(t, out, 1)
			require.Equal(t, change.Table{Schema: "app", Name: want}, out[0].Table, "%s %s", by, v)
		}
		nt, ok := h.(TableMaker).MakeTable(change.Table{Schema: "app", Name: "orders"}, change.Table{Schema: "app", Name: want})
		require.True(t, ok)
		require.Equal(t, change.Table{Schema: "app", Name: "orders"}, nt.Like)
		require.Contains(t, nt.Bound, "FROM ('2024-")
		_, ok = h.(TableMaker).MakeTable(change.Table{Schema: "app", Name: "orders"}, change.Table{Schema: "app", Name: "orders_x"})
		require.False(t, ok)
	}
	p, err := NewPartition([]byte(`{"column": "created", "by": "month", "create": true}`))
	require.NoError(t, err)
	nt, ok := p.MakeTable(change.Table{Schema: "app", Name: "orders"}, change.Table{Schema: "app", Name: "orders_2024_12"})
	require.True(t, ok)
	require.Equal(t, "FROM ('2024-12-01 00:00:00+00') TO ('2025-01-01 00:00:00+00')", nt.Bound)

	ev := orderEvent(change.Insert, "3", "")
	ev.Values[1] = change.Null
	_, err = Run(p, &ev, nil)
	require.ErrorContains(t, err, `row (id=3, created=NULL)`)
	ev = orderEvent(change.Insert, "3", "May 5")
	_, err = Run(p, &ev, nil)
	require.ErrorContains(t, err, "not a date")
}

func TestPartitionRangesAndLists(t *testing.T) {
	t.Parallel()
	p, err := NewPartition([]byte(`{"column": "id", "ranges": [{"to": 100, "table": "orders_low"}, {"from": "100", "to": 1e4, "table": "other.orders_mid"}], "create": true}`))
	require.NoError(t, err)
	dest := change.Table{Schema: "legacy", Name: "orders"}
	for id, want := range map[string]change.Table{"5": {Schema: "legacy", Name: "orders_low"}, "99.5": {Schema: "legacy", Name: "orders_low"},
		"100": {Schema: "other", Name: "orders_mid"}, "9999": {Schema: "other", Name: "orders_mid"}} {
		ev := orderEvent(change.Insert, id, "2024-01-01")
		out, err := Run(p, &ev, nil)
		require.NoError(t, err)
		require.Equal(t, want, out[0].Table, id)
	}
	ev := orderEvent(change.Insert, "10000", "2024-01-01")
	_, err = Run(p, &ev, nil)
	require.ErrorContains(t, err, `value "10000" of column "id" is in no partition`)
	require.ErrorContains(t, err, "row (id=10000, created=2024-01-01)")
	nt, ok := p.MakeTable(dest, change.Table{Schema: "legacy", Name: "orders_low"})
	require.True(t, ok)
	require.Equal(t, "FROM (MINVALUE) TO ('100')", nt.Bound)

	l, err := NewPartition([]byte(`{"column": "region", "lists": [{"in": ["eu", "uk"], "table": "orders_eu"}], "default": "orders_rest"}`))
	require.NoError(t, err)
	ev = orderEvent(change.Insert, "1", "2024-01-01")
	out, err := Run(l, &ev, nil)
	require.NoError(t, err)
	require.Equal(t, "orders_eu", out[0].Table.Name)
	ev = orderEvent(change.Insert, "1", "2024-01-01")
	ev.Values[2] = change.Text("us")
	out, err = Run(l, &ev, nil)
	require.NoError(t, err)
	require.Equal(t, "orders_rest", out[0].Table.Name)
	_, ok = l.MakeTable(dest, change.Table{Schema: "legacy", Name: "orders_eu"})
	require.False(t, ok, "create is off")

	for _, bad := range []string{`{}`, `{"column": "x"}`, `{"column": "x", "by": "week"}`, `{"column": "x", "by": "day", "lists": [{"in": ["a"], "table": "t"}]}`,
		`{"column": "x", "ranges": [{"to": 1}]}`, `{"column": "x", "by": "day", "extra": 1}`} {
		_, err := NewPartition([]byte(bad))
		require.Error(t, err, bad)
	}
}

// TestPartitionMove: an update that changes the key and moves the row to another child is a
// Remove of the old key there and an Insert here; one that stays is an Update of its child.
func TestPartitionMove(t *testing.T) {
	t.Parallel()
	p, err := NewPartition([]byte(`{"column": "created", "by": "month"}`))
	require.NoError(t, err)
	ev := orderEvent(change.Update, "1", "2024-05-01")
	ev.OldKey = []change.Value{change.Text("1"), change.Text("2024-04-30")}
	cols, key := ev.Columns, ev.Key
	out, err := Run(p, &ev, nil)
	require.NoError(t, err)
	require.Len(t, out, 2)
	require.Equal(t, change.Event{ID: 7, TxID: 9, Op: change.Remove, Table: change.Table{Schema: "legacy", Name: "orders_2024_04"},
		Columns: key, Values: []change.Value{change.Text("1"), change.Text("2024-04-30")}, Key: key}, out[0])
	require.Equal(t, change.Insert, out[1].Op)
	require.Nil(t, out[1].OldKey)
	require.Equal(t, "orders_2024_05", out[1].Table.Name)
	require.Equal(t, []string{"id", "created", "region"}, cols)

	ev = orderEvent(change.Update, "1", "2024-05-01")
	ev.OldKey = []change.Value{change.Text("1"), change.Text("2024-04-30")}
	_, err = p.Handle(&ev)
	require.ErrorIs(t, err, ErrSplit)

	ev = orderEvent(change.Update, "2", "2024-05-31")
	ev.OldKey = []change.Value{change.Text("1"), change.Text("2024-05-01")}
	out, err = Run(p, &ev, nil)
	require.NoError(t, err)
	require.Len(t, out, 1)
	require.Equal(t, change.Update, out[0].Op)
	require.Equal(t, "orders_2024_05", out[0].Table.Name)

	// In a chain, after a rename.
	h, err := NewRegistry().ForRoute(change.Route{Source: change.Table{Schema: "legacy", Name: "orders"}, Dest: change.Table{Schema: "app", Name: "orders"},
		Handler: PartitionName, Config: `{"column": "created", "by": "month"}`})
	require.NoError(t, err)
	ev = orderEvent(change.Update, "1", "2024-05-01")
	ev.OldKey = []change.Value{change.Text("1"), change.Text("2024-04-30")}
	out, err = Run(h, &ev, nil)
	require.NoError(t, err)
	require.Equal(t, []change.Table{{Schema: "app", Name: "orders_2024_04"}, {Schema: "app", Name: "orders_2024_05"}}, []change.Table{out[0].Table, out[1].Table})
	require.True(t, Routing(h))
	require.False(t, Routing(WithoutRouting(h)))
	ev = orderEvent(change.Insert, "1", "2024-05-01")
	keep, err := WithoutRouting(h).Handle(&ev)
	require.NoError(t, err)
	require.True(t, keep)
	require.Equal(t, change.Table{Schema: "app", Name: "orders"}, ev.Table)
}
