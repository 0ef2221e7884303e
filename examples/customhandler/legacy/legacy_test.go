package legacy_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/examples/customhandler/legacy"
	"github.com/skiffdb/skiff/handlers/handlerstest"
)

// TestLegacy: the handler keeps every rule of handlers (handlerstest.Check) and makes two
// rows of each event, in schema app: the row without email, and email keyed by the row's key.
func TestLegacy(t *testing.T) {
	t.Parallel()
	users := change.Table{Schema: "legacy", Name: "users"}
	h, err := legacy.New(users, []byte(`{"split_column": "email", "split_table": "user_emails"}`))
	require.NoError(t, err)
	cols, key := []string{"id", "name", "email"}, []string{"id"}
	v := func(s ...string) []change.Value {
		out := make([]change.Value, len(s))
		for i, x := range s {
			out[i] = change.Text(x)
		}
		return out
	}
	out := handlerstest.Check(t, h, []change.Event{
		{ID: 1, TxID: 9, Op: change.Insert, Table: users, Columns: cols, Key: key, Values: v("1", "ann", "ann@x")},
		{ID: 2, TxID: 9, Op: change.Update, Table: users, Columns: cols, Key: key, Values: v("2", "ann", "a@y"), OldKey: v("1")},
		{ID: 3, TxID: 10, Op: change.Delete, Table: users, Columns: key, Key: key, Values: v("2")},
		{ID: 4, TxID: 11, Op: change.Truncate, Table: users},
	})
	app := func(name string) change.Table { return change.Table{Schema: "app", Name: name} }
	require.Equal(t, []change.Event{
		{ID: 1, TxID: 9, Op: change.Insert, Table: app("users"), Columns: []string{"id", "name"}, Key: key, Values: v("1", "ann")},
		{ID: 1, TxID: 9, Op: change.Insert, Table: app("user_emails"), Columns: []string{"id", "email"}, Key: key, Values: v("1", "ann@x")},
	}, out[0])
	require.Equal(t, v("1"), out[1][1].OldKey, "the old key goes with both rows")
	require.Equal(t, []string{"id"}, out[2][1].Columns, "a delete of the key alone deletes by key")
	require.Equal(t, []change.Table{app("users"), app("user_emails")}, []change.Table{out[3][0].Table, out[3][1].Table})

	_, err = legacy.New(users, []byte(`{"split_column": "email"}`))
	require.Error(t, err)
}
