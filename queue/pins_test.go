package queue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestFloatDigitsPinByVersion: the capture function pins the most float digits the server
// accepts, as pg.SessionSQL does for the copy: 3 from 9.0 on (exact float4 text), 2 before.
// The server here is new; the version passed decides the branch.
func TestFloatDigitsPinByVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pg.Connect(ctx, pgtest.Shared(t, "").NewDB(t), "skiff-test")
	require.NoError(t, err)
	defer conn.Close(ctx)
	exec(t, conn, `CREATE TABLE f (id int PRIMARY KEY, r real)`)
	var oid uint32
	require.NoError(t, conn.QueryRow(ctx, `SELECT 'f'::regclass::oid`).Scan(&oid))
	cols, err := tableColumns(ctx, conn, oid)
	require.NoError(t, err)
	for version, want := range map[int]string{80422: "2", 90000: "3", 90124: "3", pg.ServerVersion(conn): "3"} {
		pins, err := settingPins(ctx, conn, cols, version)
		require.NoError(t, err)
		require.Contains(t, pins, pin{"extra_float_digits", want}, "server_version_num %d", version)
	}
}
