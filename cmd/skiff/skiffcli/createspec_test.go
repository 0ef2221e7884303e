package skiffcli

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/tabledef"
)

// TestCreateSpec: the shape subscribe --create-tables gives a table is what its handlers
// write — from the SQL form of built-in handlers, by running a custom handler without one.
func TestCreateSpec(t *testing.T) {
	t.Parallel()
	src := change.Table{Schema: "legacy", Name: "Orders"}
	cols, key := []string{"id", "secret", "v"}, []string{"id"}
	reg := handlers.NewRegistry()

	h, err := reg.ForRoute(change.Route{Source: src, Dest: change.Table{Schema: "archive", Name: "orders"}, Handler: "columns",
		Config: `{"exclude": ["secret"], "rename": {"v": "value"}}`})
	require.NoError(t, err)
	spec, err := createSpec(h, src, cols, key)
	require.NoError(t, err)
	require.Equal(t, tabledef.Spec{Source: src, Dest: change.Table{Schema: "archive", Name: "orders"},
		Columns: []tabledef.Mapped{{Name: "id", Source: "id"}, {Name: "value", Source: "v"}}}, spec)

	// A custom handler (no SQL form) that moves the schema, drops a column, renames one and
	// computes one.
	custom := handlers.Func(func(ev *change.Event) (bool, error) {
		ev.Table.Schema = "app"
		ev.Columns = []string{"id", "val", "computed"}
		ev.Values = []change.Value{ev.Values[0], ev.Values[2], change.Text("x")}
		return true, nil
	})
	spec, err = createSpec(custom, src, cols, key)
	require.NoError(t, err)
	require.Equal(t, tabledef.Spec{Source: src, Dest: change.Table{Schema: "app", Name: "Orders"},
		Columns: []tabledef.Mapped{{Name: "id", Source: "id"}, {Name: "val", Source: "v"}, {Name: "computed"}}}, spec)

	drop := handlers.Func(func(*change.Event) (bool, error) { return false, nil })
	_, err = createSpec(drop, src, cols, key)
	require.ErrorContains(t, err, `table "legacy"."Orders": its handler drops a sample row`)
}
