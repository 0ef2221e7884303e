package skiffcli

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestTableNamesOneRule: every command reads table names by PostgreSQL's rule — unquoted
// parts fold to lower case, quoted parts are exact, a name without schema follows the
// server's search_path (here app, public) — so that the table `table add Orders` captured
// is the one `subscribe --table Orders`, `table resync orders`, `compare --table ORDERS` and
// `table remove Orders` name.
func TestTableNamesOneRule(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t, "")
	prov, tgt := srv.NewDB(t), srv.NewDB(t)
	ctx := context.Background()
	for _, u := range []string{prov, tgt} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE SCHEMA app;
			CREATE TABLE app.orders (id int PRIMARY KEY, v text); INSERT INTO app.orders VALUES (1, 'a'), (2, 'b');
			CREATE TABLE public.orders (id int PRIMARY KEY, v text);
			CREATE TABLE "Mixed" (id int PRIMARY KEY); INSERT INTO "Mixed" VALUES (1);
			ALTER DATABASE `+pgx.Identifier{dbName(t, u)}.Sanitize()+` SET search_path = app, public`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, tgt).Exec(ctx, `CREATE TABLE public."Dest" (id int PRIMARY KEY)`)
	require.NoError(t, err)
	for _, a := range [][]string{{"init", "provider", "--db", prov}, {"init", "target", "--db", tgt}} {
		code, _, stderr := skiff(t, a...)
		require.Zero(t, code, stderr)
	}

	code, stdout, stderr := skiff(t, "table", "add", "--db", prov, "--queue", "q", "Orders", `"Mixed"`)
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `table "app"."orders": captured`)
	require.Contains(t, stdout, `table "public"."Mixed": captured`)
	code, _, stderr = skiff(t, "table", "add", "--db", prov, "--queue", "q", "public.Small Table")
	oneLineError(t, code, stderr, `not a table name \"public.Small Table\"`)

	code, stdout, stderr = skiff(t, "subscribe", "--provider", prov, "--target", tgt, "--queue", "q",
		"--table", "Orders", "--table", `"Mixed":"Dest"`)
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `"app"."orders" -> "app"."orders"`)
	require.Contains(t, stdout, `"public"."Mixed" -> "public"."Dest"`)
	code, _, stderr = skiff(t, "subscribe", "--provider", prov, "--target", tgt, "--queue", "q", "--table", "mixed")
	oneLineError(t, code, stderr, `table \"app\".\"mixed\" is not captured by queue q`)

	code, stdout, stderr = skiff(t, "compare", "--provider", prov, "--target", tgt, "--queue", "q", "--table", "ORDERS")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `"app"."orders"`)
	require.Contains(t, stdout, "equal (2 rows)")

	code, stdout, stderr = skiff(t, "table", "resync", "--provider", prov, "--target", tgt, "--queue", "q", "orders")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `"app"."orders": copying`)

	code, stdout, stderr = skiff(t, "table", "remove", "--db", prov, "--queue", "q", "Orders")
	require.Zero(t, code, stderr)
	require.True(t, strings.HasPrefix(stdout, `"app"."orders": no longer captured`), stdout)
}
