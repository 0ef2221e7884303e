package handlerstest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/handlers/handlerstest"
)

// recorder is a testing.TB that keeps the failures instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func events() []change.Event {
	cols, key := []string{"id", "name", "email"}, []string{"id"}
	users := change.Table{Schema: "legacy", Name: "users"}
	return []change.Event{
		{ID: 1, TxID: 5, Op: change.Insert, Table: users, Columns: cols, Key: key, Values: []change.Value{change.Text("1"), change.Text("a"), change.Text("a@x")}},
		{ID: 2, TxID: 5, Op: change.Update, Table: users, Columns: cols, Key: key, Values: []change.Value{change.Text("2"), change.Text("b"), change.Null},
			OldKey: []change.Value{change.Text("1")}},
		{ID: 3, TxID: 6, Op: change.Delete, Table: users, Columns: cols, Key: key, Values: []change.Value{change.Text("2"), change.Text("b"), change.Null}},
	}
}

// TestCheckCatchesSharedSliceMutation: a handler that renames a column in place is failed,
// one that assigns a new slice passes; the built-in handlers pass.
func TestCheckCatchesSharedSliceMutation(t *testing.T) {
	t.Parallel()
	bad := handlers.Func(func(ev *change.Event) (bool, error) {
		ev.Columns[1] = "full_name" // in place: every event of the layout sees it
		return true, nil
	})
	r := &recorder{TB: t}
	handlerstest.Check(r, bad, events())
	require.NotEmpty(t, r.errs)
	require.Contains(t, r.errs[0], "modified a shared Columns or Key slice in place")

	good := handlers.Func(func(ev *change.Event) (bool, error) {
		cols := append([]string(nil), ev.Columns...)
		cols[1] = "full_name"
		ev.Columns = cols
		return true, nil
	})
	r = &recorder{TB: t}
	out := handlerstest.Check(r, good, events())
	require.Empty(t, r.errs)
	require.Equal(t, "full_name", out[0][0].Columns[1])

	reg := handlers.NewRegistry()
	for name, cfg := range map[string]string{"columns": `{"rename": {"name": "n"}, "exclude": ["email"]}`, "filter": `{"column": "name", "in": ["a"]}`,
		"partition": `{"column": "id", "ranges": [{"to": 10, "table": "users_low"}]}`, "skip": ""} {
		h, err := reg.ForRoute(change.Route{Source: change.Table{Schema: "legacy", Name: "users"}, Dest: change.Table{Schema: "app", Name: "users"}, Handler: name, Config: cfg})
		require.NoError(t, err)
		handlerstest.Check(t, h, events())
	}
}

// TestCheckCatchesMalformedEvents: an event without its key column, an Insert made an
// Update, a new ID and an answer that changes are each failed.
func TestCheckCatchesMalformedEvents(t *testing.T) {
	t.Parallel()
	for want, h := range map[string]handlers.Handler{
		"is not among the columns": handlers.Func(func(ev *change.Event) (bool, error) {
			ev.Columns, ev.Values = ev.Columns[1:], ev.Values[1:]
			return true, nil
		}),
		"made of an INSERT": handlers.Func(func(ev *change.Event) (bool, error) {
			ev.Op = change.Upsert
			return true, nil
		}),
		"ID/TxID": handlers.Func(func(ev *change.Event) (bool, error) {
			ev.ID++
			return true, nil
		}),
		"differently the second time": func() handlers.Handler {
			n := 0
			return handlers.Func(func(ev *change.Event) (bool, error) {
				n++
				return n%2 == 1, nil
			})
		}(),
	} {
		r := &recorder{TB: t}
		handlerstest.Check(r, h, events())
		require.True(t, strings.Contains(strings.Join(r.errs, "\n"), want), "%s: %q", want, r.errs)
	}
}
