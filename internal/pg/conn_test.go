package pg_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestApplicationNameAfterConnect checks that an application_name given in the connection
// string stays out of the startup packet (a server before 9.0 refuses the connection over it)
// and is set after connecting instead, winning over skiff's own name.
func TestApplicationNameAfterConnect(t *testing.T) {
	t.Parallel()
	url := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for connString, want := range map[string]string{
		url + "&application_name=mine": "mine",
		url:                            "skiff test",
	} {
		cfg, err := pg.ParseConfig(connString, "skiff test")
		require.NoError(t, err)
		require.NotContains(t, cfg.RuntimeParams, "application_name", "sent at startup, refused before 9.0")
		conn, err := pg.ConnectConfig(ctx, cfg)
		require.NoError(t, err, "connect with %s", connString)
		if pg.ServerVersion(conn) < 90000 {
			require.NoError(t, conn.Close(ctx)) // no application_name before 9.0: connecting is the test
			continue
		}
		var got string
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&got))
		require.NoError(t, conn.Close(ctx))
		require.Equal(t, want, got, connString)
	}
}

// TestSessionsRunWithoutJIT checks that skiff's sessions turn JIT compilation off where the
// server has it (11+; on by default from 12): skiff's queries are planned once and run once,
// and a plan over jit_above_cost paid its compilation before its first row.
func TestSessionsRunWithoutJIT(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			conn, err := pg.Connect(ctx, pgtest.Shared(t, v).NewDB(t), "skiff test")
			require.NoError(t, err)
			defer func() { require.NoError(t, conn.Close(ctx)) }()
			if pg.ServerVersion(conn) < 110000 {
				return // no JIT before 11: connecting is the test
			}
			var jit string
			require.NoError(t, conn.QueryRow(ctx, "SELECT current_setting('jit')").Scan(&jit))
			require.Equal(t, "off", jit)
		})
	}
}
