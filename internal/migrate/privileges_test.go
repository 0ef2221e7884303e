package migrate

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestNoPublicPrivileges: on every installed version, with both schemas in one database (a
// database may be provider and target), nothing in schema skiff is reachable by PUBLIC —
// the schema, its tables, sequences and functions — and every function pins search_path to
// pg_catalog, pg_temp, so that no operator or function a role creates elsewhere can be chosen
// inside it. A later migration that forgets either fails here.
func TestNoPublicPrivileges(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := pgtest.Shared(t, v).NewDB(t)
			cfg, err := pg.ParseConfig(url, "skiff-test")
			require.NoError(t, err)
			for _, role := range []Role{Provider, Target} {
				_, err := Up(ctx, cfg, role)
				require.NoError(t, err)
			}
			conn, err := pg.Connect(ctx, url, "skiff-test")
			require.NoError(t, err)
			defer conn.Close(ctx)
			// A queue makes event tables and a sequence at run time.
			_, err = conn.Exec(ctx, `SELECT skiff.create_queue('q')`)
			require.NoError(t, err)

			list := func(sql string) []string {
				t.Helper()
				rows, err := conn.Query(ctx, sql)
				require.NoError(t, err)
				out, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				return out
			}
			// An ACL entry for PUBLIC reads "=privileges/grantor"; a NULL ACL means the
			// defaults, which grant EXECUTE on functions (and USAGE on a schema: never) to PUBLIC.
			require.Empty(t, list(`SELECT nspname FROM pg_namespace
				WHERE nspname = 'skiff' AND array_to_string(nspacl, ',') ~ '(^|,)='`), "schema skiff granted to PUBLIC")
			require.Empty(t, list(`SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = 'skiff' AND array_to_string(c.relacl, ',') ~ '(^|,)='`), "relations granted to PUBLIC")
			require.Empty(t, list(`SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
				WHERE n.nspname = 'skiff' AND (p.proacl IS NULL OR array_to_string(p.proacl, ',') ~ '(^|,)=')`), "functions executable by PUBLIC")
			require.Empty(t, list(`SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
				WHERE n.nspname = 'skiff' AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)`),
				"functions without search_path pinned")
			require.NotEmpty(t, list(`SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
				WHERE n.nspname = 'skiff'`), "the provider schema has functions to check")
		})
	}
}
