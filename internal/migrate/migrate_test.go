package migrate

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestUpInstallsAndIsIdempotent installs both schemas into one database (a database may be
// provider and target at once) on every installed version, twice.
func TestUpInstallsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			url := pgtest.Shared(t, v).NewDB(t)
			ctx := context.Background()
			cfg, err := pg.ParseConfig(url, "skiff-test")
			require.NoError(t, err)
			for _, role := range []Role{Provider, Target} {
				latest, err := Latest(role)
				require.NoError(t, err)
				res, err := Up(ctx, cfg, role)
				require.NoError(t, err)
				require.Equal(t, int64(0), res.From)
				require.Equal(t, latest, res.To)
				require.NotEmpty(t, res.Applied)

				res, err = Up(ctx, cfg, role)
				require.NoError(t, err)
				require.Empty(t, res.Applied, "second run must be a no-op")
				require.Equal(t, latest, res.To)

				conn, err := pg.Connect(ctx, url, "skiff-test")
				require.NoError(t, err)
				got, err := Version(ctx, conn, role)
				require.NoError(t, err)
				require.Equal(t, latest, got)
				require.NoError(t, conn.Close(ctx))
			}
		})
	}
}
