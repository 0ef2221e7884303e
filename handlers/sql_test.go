package handlers

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

func sourceSelect() Select {
	return NewSelect(change.Table{Schema: "public", Name: "t"}, []SourceColumn{
		{Name: "id", Type: "int4", Output: `"pg_catalog"."int4out"`},
		{Name: "secret", Type: "text", Output: `"pg_catalog"."textout"`},
		{Name: "v", Type: "text"},
		{Name: "it's", Type: "bool", Output: `"pg_catalog"."boolout"`},
	}, []string{"id"})
}

// TestSelectOfRoute: the rename to the destination and the columns handler, as one query that
// writes what Handle writes.
func TestSelectOfRoute(t *testing.T) {
	t.Parallel()
	h, err := NewRegistry().ForRoute(change.Route{
		Source: change.Table{Schema: "public", Name: "t"}, Dest: change.Table{Schema: "copy", Name: "t2"},
		Handler: "columns", Config: `{"rename": {"v": "value", "id": "ident"}, "exclude": ["secret"]}`,
	})
	require.NoError(t, err)
	in := sourceSelect()
	sel, ok, err := SelectOf(h, in)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, change.Table{Schema: "copy", Name: "t2"}, sel.Table)
	require.Equal(t, []string{"ident", "value", "it's"}, sel.ColumnNames())
	require.Equal(t, []string{"ident"}, sel.Key)
	require.Equal(t, `SELECT "id" AS "ident", "v" AS "value", "it's" AS "it's" FROM "public"."t"`, sel.SQL())
	require.True(t, sel.Plain(), "source columns unchanged, no condition")
	require.Equal(t, []string{"id", "v", "it's"}, sel.SourceColumns())
	require.Equal(t, []string{"id", "secret", "v", "it's"}, in.ColumnNames(), "the input is left as it was")
	require.Equal(t, []string{"id"}, in.Key)

	// Handle does the same to an event.
	ev := change.Event{Op: change.Insert, Table: in.Source, Columns: in.ColumnNames(), Key: in.Key,
		Values: []change.Value{change.Text("1"), change.Text("pw"), change.Text("x"), change.Text("t")}}
	keep, err := h.Handle(&ev)
	require.NoError(t, err)
	require.True(t, keep)
	require.Equal(t, sel.Table, ev.Table)
	require.Equal(t, sel.ColumnNames(), ev.Columns)
	require.Equal(t, sel.Key, ev.Key)

	// A key column cannot be excluded, as in Handle.
	bad, err := NewRegistry().New("columns", in.Source, `{"exclude": ["id"]}`)
	require.NoError(t, err)
	_, ok, err = SelectOf(bad, in)
	require.False(t, ok)
	require.ErrorContains(t, err, `key column "id" cannot be excluded`)
}

// TestSelectOfFilter: the filter compares the output function's text of the column (by its
// name after the handlers before it), quoting the values; a NULL or an empty list keeps
// nothing; a missing column is an error.
func TestSelectOfFilter(t *testing.T) {
	t.Parallel()
	h := Chain{&Columns{Rename: map[string]string{"it's": "ok"}}, Filter{Column: "ok", In: []string{"t", "it's"}}}
	sel, ok, err := SelectOf(h, sourceSelect())
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []string{`pg_catalog.textin("pg_catalog"."boolout"("it's")) IN ('t', 'it''s')`}, sel.Where)
	require.Equal(t, `SELECT "id" AS "id", "secret" AS "secret", "v" AS "v", "it's" AS "ok" FROM "public"."t" WHERE coalesce((pg_catalog.textin("pg_catalog"."boolout"("it's")) IN ('t', 'it''s')), false)`, sel.SQL())
	require.False(t, sel.Plain())

	// Without an output function, the cast to text.
	sel, _, err = SelectOf(Filter{Column: "v", In: []string{`back\slash`}}, sourceSelect())
	require.NoError(t, err)
	require.Equal(t, []string{`("v")::text IN ('back\slash')`}, sel.Where)

	sel, _, err = SelectOf(Filter{Column: "v"}, sourceSelect())
	require.NoError(t, err)
	require.Equal(t, []string{"false"}, sel.Where)

	_, _, err = SelectOf(Filter{Column: "nope", In: []string{"x"}}, sourceSelect())
	require.ErrorContains(t, err, `filter: table "public"."t" has no column "nope"`)
}

// TestSelectOfNoSQL: a Func, a chain holding one, and a handler that says ErrNoSQL have no SQL
// form; the Select is returned unchanged.
func TestSelectOfNoSQL(t *testing.T) {
	t.Parallel()
	fn := Func(func(ev *change.Event) (bool, error) { return true, nil })
	for _, h := range []Handler{fn, Chain{Rename{Schema: "x"}, fn}, noSQL{}} {
		sel, ok, err := SelectOf(h, sourceSelect())
		require.NoError(t, err)
		require.False(t, ok)
		require.Equal(t, sourceSelect(), sel)
	}
	sel, ok, err := SelectOf(nil, sourceSelect())
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, sourceSelect(), sel)
}

type noSQL struct{}

func (noSQL) Handle(*change.Event) (bool, error) { return true, nil }
func (noSQL) SelectSQL(*Select) error            { return ErrNoSQL }
