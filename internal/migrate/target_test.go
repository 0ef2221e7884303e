package migrate

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestTargetWithoutPLpgSQL: a target schema installs in a database without PL/pgSQL (as a new
// database is before 9.0, where only a superuser may create the language) and leaves it so.
func TestTargetWithoutPLpgSQL(t *testing.T) {
	t.Parallel()
	url := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	conn, err := pg.Connect(ctx, url, "skiff-test")
	require.NoError(t, err)
	defer conn.Close(ctx)
	switch v := pg.ServerVersion(conn); {
	case v >= 90100:
		_, err = conn.Exec(ctx, "DROP EXTENSION plpgsql")
		require.NoError(t, err)
	case v >= 90000: // installed by default, not yet an extension
		_, err = conn.Exec(ctx, "DROP LANGUAGE plpgsql")
		require.NoError(t, err)
	} // before 9.0 a new database has no PL/pgSQL
	cfg, err := pg.ParseConfig(url, "skiff-test")
	require.NoError(t, err)
	_, err = Up(ctx, cfg, Target)
	require.NoError(t, err)
	var has bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_language WHERE lanname = 'plpgsql')").Scan(&has))
	require.False(t, has, "the target needs no PL/pgSQL")
}

// TestVersionOfTheOtherRole: in a database with only the target schema (schema skiff exists),
// the provider's version is 0, not an error about a missing table (status and uninstall ask).
func TestVersionOfTheOtherRole(t *testing.T) {
	t.Parallel()
	url := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	cfg, err := pg.ParseConfig(url, "skiff-test")
	require.NoError(t, err)
	_, err = Up(ctx, cfg, Target)
	require.NoError(t, err)
	conn, err := pg.Connect(ctx, url, "skiff-test")
	require.NoError(t, err)
	defer conn.Close(ctx)
	v, err := Version(ctx, conn, Provider)
	require.NoError(t, err)
	require.Zero(t, v)
	v, err = Version(ctx, conn, Target)
	require.NoError(t, err)
	latest, err := Latest(Target)
	require.NoError(t, err)
	require.Equal(t, latest, v)
}
