package pg_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestResolveTable: a name without schema follows the session's search_path as the server
// does (first schema holding the name, temporary schema first), on every installed version.
func TestResolveTable(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			conn := pgtest.Connect(t, pgtest.Shared(t, v).NewDB(t))
			ctx := context.Background()
			_, err := conn.Exec(ctx, `CREATE SCHEMA app; CREATE SCHEMA "Other";
				CREATE TABLE app.orders (id int); CREATE TABLE public.orders (id int);
				CREATE TABLE app.only_app (id int); CREATE TABLE "Other"."Mixed" (id int);
				SET search_path = app, public`)
			require.NoError(t, err)
			for in, want := range map[change.Table]struct {
				out   change.Table
				found bool
			}{
				{Name: "orders"}:                   {change.Table{Schema: "app", Name: "orders"}, true},
				{Name: "only_app"}:                 {change.Table{Schema: "app", Name: "only_app"}, true},
				{Schema: "public", Name: "orders"}: {change.Table{Schema: "public", Name: "orders"}, true},
				{Name: "Mixed"}:                    {change.Table{Schema: "app", Name: "Mixed"}, false},
				{Schema: "Other", Name: "Mixed"}:   {change.Table{Schema: "Other", Name: "Mixed"}, true},
				{Schema: "nope", Name: "orders"}:   {change.Table{Schema: "nope", Name: "orders"}, false},
				{Name: "pg_class"}:                 {change.Table{Schema: "pg_catalog", Name: "pg_class"}, true},
			} {
				got, found, err := pg.ResolveTable(ctx, conn, in)
				require.NoError(t, err, in)
				require.Equal(t, want.out, got, in)
				require.Equal(t, want.found, found, in)
			}
			// The temporary schema comes first; a path without existing schema leaves the
			// name unqualified.
			_, err = conn.Exec(ctx, `CREATE TEMP TABLE orders (id int)`)
			require.NoError(t, err)
			got, found, err := pg.ResolveTable(ctx, conn, change.Table{Name: "orders"})
			require.NoError(t, err)
			require.True(t, found)
			require.Contains(t, got.Schema, "pg_temp")
			// Before 9.2 SET refuses a schema that does not exist: the path is set while it
			// does, then it is dropped.
			_, err = conn.Exec(ctx, `CREATE SCHEMA nothing_here; SET search_path = nothing_here; DROP SCHEMA nothing_here`)
			require.NoError(t, err)
			got, found, err = pg.ResolveTable(ctx, conn, change.Table{Name: "nope"})
			require.NoError(t, err)
			require.False(t, found)
			require.Equal(t, change.Table{Name: "nope"}, got)
		})
	}
}

// TestParseTableNameAsServer: change.ParseTableName reads names as the server's own parser
// (parse_ident, 9.6+) does.
func TestParseTableNameAsServer(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t, "")
	if srv.Install.Num < 90600 {
		t.Skip("parse_ident is 9.6+")
	}
	conn := pgtest.Connect(t, srv.NewDB(t))
	ctx := context.Background()
	for _, in := range []string{
		"orders", "Orders", "app.Orders", `"My Schema"."Odd Table"`, `s."x""y"`, `"a.b".c`, "ÉTÉ.T", " app . orders ",
		"t_1$", `""""`, `Ab"c"`,
	} {
		var parts []string
		err := conn.QueryRow(ctx, `SELECT parse_ident($1)`, in).Scan(&parts)
		mine, myErr := change.ParseTableName(in)
		if err != nil {
			require.Error(t, myErr, "%q: the server refuses it (%v)", in, err)
			continue
		}
		require.NoError(t, myErr, "%q: the server reads %q", in, parts)
		if len(parts) == 1 {
			require.Equal(t, change.Table{Name: parts[0]}, mine, in)
		} else {
			require.Equal(t, change.Table{Schema: parts[0], Name: parts[1]}, mine, in)
		}
	}
}
