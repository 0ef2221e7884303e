package pgtest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

func TestSharedServerAndDB(t *testing.T) {
	t.Parallel()
	srv := Shared(t, "")
	conn := Connect(t, srv.NewDB(t))
	var user string
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT current_user").Scan(&user))
	require.Equal(t, "postgres", user)
	if srv.Install.Num >= 90400 {
		var wal string
		require.NoError(t, conn.QueryRow(context.Background(), "SELECT current_setting('wal_level')").Scan(&wal))
		require.Equal(t, "logical", wal)
	}
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	srv := New(t, Options{})
	ctx := context.Background()
	require.NoError(t, srv.Exec(ctx, "postgres", "CREATE TABLE kept(x int); INSERT INTO kept VALUES (42)"))
	srv.Crash()
	require.Error(t, srv.Exec(ctx, "postgres", "SELECT 1"))
	require.NoError(t, srv.Resume(ctx))
	conn := Connect(t, srv.URL("postgres"))
	var x int
	require.NoError(t, conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x))
	require.Equal(t, 42, x)
}
