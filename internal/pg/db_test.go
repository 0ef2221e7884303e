package pg_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestVersionOf checks that a connection, a transaction and a DB that is neither (as a pool)
// all give the server's version.
func TestVersionOf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := pgtest.Connect(t, pgtest.Shared(t, "").NewDB(t))
	want := pg.ServerVersion(conn)
	require.Positive(t, want)
	got, err := pg.VersionOf(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, want, got)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	got, err = pg.VersionOf(ctx, tx)
	require.NoError(t, err)
	require.Equal(t, want, got)
	got, err = pg.VersionOf(ctx, struct{ pg.DB }{tx}) // hides Conn(): asks the server
	require.NoError(t, err)
	require.Equal(t, want/100, got/100, "server_version_num, minor aside")
}
