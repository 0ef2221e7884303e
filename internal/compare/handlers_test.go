package compare_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// columnsAndFilter is a handler chain with an SQL form: secret dropped, v renamed value,
// flag renamed ok, only rows with ok = true kept (compared as the text 't', as events carry
// it); and the same chain without an SQL form.
func columnsAndFilter() (withSQL, inGo handlers.Handler) {
	chain := func() handlers.Chain {
		return handlers.Chain{
			handlers.Rename{Schema: "arch"},
			&handlers.Columns{Exclude: []string{"secret"}, Rename: map[string]string{"v": "value", "flag": "ok"}},
			handlers.Filter{Column: "ok", In: []string{"t"}},
		}
	}
	return chain(), handlers.Func(chain().Handle)
}

// TestCompareThroughHandlers: the target is compared with what the table's handlers make of
// the provider's rows, whether they have an SQL form (a query on the provider) or not (rows
// run through Go into a temporary table on the target): equal when it holds exactly that; a
// row the filter drops, a renamed column's wrong value and a missing row are DIFFERENT and
// listed by key.
func TestCompareThroughHandlers(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE src (id int PRIMARY KEY, secret text, v text, flag boolean, f float8);
		INSERT INTO src SELECT g, 'pw', 'v' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE g % 3 = 0 END, g / 7.0 FROM generate_series(1, 3000) g`)
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tg)
	_, err = tconn.Exec(ctx, `CREATE SCHEMA arch; CREATE TABLE arch.src (id int PRIMARY KEY, value text, ok boolean, f float8, extra int);
		INSERT INTO arch.src SELECT g, 'v' || g, true, g / 7.0 FROM generate_series(1, 3000) g WHERE g % 5 <> 0 AND g % 3 = 0`)
	require.NoError(t, err)
	src := change.Table{Schema: "public", Name: "src"}
	withSQL, inGo := columnsAndFilter()
	pairs := []compare.Pair{{Source: src, Dest: src, Handler: withSQL}, {Source: src, Dest: src, Handler: inGo}}

	res := run(t, p, tg, true, pairs...)
	for _, r := range res {
		require.NoError(t, r.Err)
		require.True(t, r.Equal, "%+v", r)
		require.Equal(t, change.Table{Schema: "arch", Name: "src"}, r.Pair.Dest, "the table the handlers send the rows to")
		require.Equal(t, []string{"id", "value", "ok", "f"}, r.Columns)
		require.Equal(t, []string{"extra"}, r.Skipped)
		require.EqualValues(t, 800, r.Provider.Rows)
	}

	_, err = tconn.Exec(ctx, `INSERT INTO arch.src VALUES (1, 'v1', false, 1 / 7.0);
		UPDATE arch.src SET value = 'wrong' WHERE id = 6;
		DELETE FROM arch.src WHERE id = 9`)
	require.NoError(t, err)
	res = run(t, p, tg, true, pairs...)
	for _, r := range res {
		require.NoError(t, r.Err)
		require.False(t, r.Equal, "%+v", r)
		for i := range r.Diffs {
			r.Diffs[i].Values = nil // the Go path does not give them
		}
		require.Equal(t, []compare.RowDiff{
			{Key: "(1)", Kind: "missing on provider"},
			{Key: "(6)", Kind: "different"},
			{Key: "(9)", Kind: "missing on target"},
		}, r.Diffs, "%+v", r)
	}

	// A handler that sends the rows of one table to a table the target lacks cannot be
	// compared; a handler error names the table.
	split := handlers.Func(func(ev *change.Event) (bool, error) {
		ev.Table.Schema = "arch"
		if id, _ := ev.Value("id"); id.Text == "7" {
			ev.Table.Name = "elsewhere"
		}
		return true, nil
	})
	res = run(t, p, tg, false, compare.Pair{Source: src, Dest: src, Handler: split},
		compare.Pair{Source: src, Dest: src, Handler: handlers.Filter{Column: "nope", In: []string{"x"}}})
	require.ErrorContains(t, res[0].Err, `row (id=7) of "public"."src": the handler sends rows to "arch"."elsewhere": "arch"."elsewhere": table does not exist`)

	// With that table, each table is compared with what the handler sends it: the columns
	// and filter chain, row 6 sent to arch.elsewhere.
	_, err = tconn.Exec(ctx, `CREATE TABLE arch.elsewhere (LIKE arch.src)`)
	require.NoError(t, err)
	_, chained := columnsAndFilter()
	moved := handlers.Func(func(ev *change.Event) (bool, error) {
		keep, err := chained.Handle(ev)
		if id, _ := ev.Value("id"); id.Text == "6" {
			ev.Table.Name = "elsewhere"
		}
		return keep, err
	})
	res2 := run(t, p, tg, true, compare.Pair{Source: src, Dest: src, Handler: moved})
	require.NoError(t, res2[0].Err)
	require.False(t, res2[0].Equal)
	require.Equal(t, []compare.RowDiff{
		{Key: "(1)", Kind: "missing on provider"},
		{Key: "(6)", Kind: "missing on provider"},
		{Key: "(9)", Kind: "missing on target"},
		{Key: `"arch"."elsewhere" (6)`, Kind: "missing on target"},
	}, res2[0].Diffs)
	_, err = tconn.Exec(ctx, `DELETE FROM arch.src WHERE id IN (1, 6);
		INSERT INTO arch.src VALUES (9, 'v9', true, 9 / 7.0);
		INSERT INTO arch.elsewhere VALUES (6, 'v6', true, 6 / 7.0)`)
	require.NoError(t, err)
	res2 = run(t, p, tg, true, compare.Pair{Source: src, Dest: src, Handler: moved})
	require.NoError(t, res2[0].Err)
	require.True(t, res2[0].Equal, "%+v", res2[0])
	require.ErrorContains(t, res[1].Err, `filter: table "public"."src" has no column "nope"`)
}
