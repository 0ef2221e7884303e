package migrate

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestProviderUpgradeAndDowngrade: a provider installed at version 1 with a queue that has
// rotated is upgraded in place to the latest schema, which records safe rotation bounds for the
// existing queue; going back down to version 1 and up again works too. On the oldest and
// newest versions the matrix has, and Debian's.
func TestProviderUpgradeAndDowngrade(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := pgtest.Shared(t, v).NewDB(t)
			cfg, err := pg.ParseConfig(url, "skiff-test")
			require.NoError(t, err)
			conn, err := pg.Connect(ctx, url, "skiff-test")
			require.NoError(t, err)
			defer conn.Close(ctx)
			exec := func(sql string) {
				t.Helper()
				_, err := conn.Exec(ctx, sql)
				require.NoError(t, err, sql)
			}

			res, err := upTo(ctx, cfg, Provider, 1)
			require.NoError(t, err)
			require.Equal(t, int64(1), res.To)
			exec(`SELECT skiff.create_queue('q')`)
			exec(`SELECT skiff.set_queue_config('q', 'rotation_period', '0')`)
			exec(`SELECT skiff.maint_rotate_tables('q')`)
			var before int64
			require.NoError(t, conn.QueryRow(ctx, `SELECT txid_current()`).Scan(&before))

			latest, err := Latest(Provider)
			require.NoError(t, err)
			res, err = Up(ctx, cfg, Provider)
			require.NoError(t, err)
			require.Equal(t, latest, res.To)
			var cur, prev *int64
			require.NoError(t, conn.QueryRow(ctx, `SELECT queue_switch_txid, queue_prev_switch_txid FROM skiff.queue`).Scan(&cur, &prev))
			require.NotNil(t, cur)
			require.NotNil(t, prev)
			require.Greater(t, *cur, before, "the upgrade's bound is a txid newer than every earlier switch")
			require.Equal(t, *cur, *prev)
			var n int
			require.NoError(t, conn.QueryRow(ctx, `SELECT skiff.maint_rotate_tables('q')`).Scan(&n))
			require.Equal(t, 1, n, "the upgraded queue rotates")

			p, db, err := open(ctx, cfg, Provider)
			require.NoError(t, err)
			defer db.Close()
			_, err = p.DownTo(ctx, 1)
			require.NoError(t, err, "down to version 1 with step 2 pending")
			var old int64
			require.NoError(t, conn.QueryRow(ctx, `SELECT queue_switch_xmax FROM skiff.queue`).Scan(&old))
			_, err = p.Up(ctx)
			require.NoError(t, err)
			got, err := Version(ctx, conn, Provider)
			require.NoError(t, err)
			require.Equal(t, latest, got)
		})
	}
}

// TestProviderTickerMaxLagDefault: version 7 makes 100 ms the default ticker_max_lag of new
// queues and moves queues still at the old default (500 ms) to it; a queue set to another
// value keeps it. Going down restores 500 ms by the same rule.
func TestProviderTickerMaxLagDefault(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := pgtest.Shared(t, v).NewDB(t)
			cfg, err := pg.ParseConfig(url, "skiff-test")
			require.NoError(t, err)
			conn, err := pg.Connect(ctx, url, "skiff-test")
			require.NoError(t, err)
			defer conn.Close(ctx)
			exec := func(sql string) {
				t.Helper()
				_, err := conn.Exec(ctx, sql)
				require.NoError(t, err, sql)
			}
			maxLag := func() map[string]float64 {
				t.Helper()
				rows, err := conn.Query(ctx, `SELECT queue_name, extract(epoch FROM queue_ticker_max_lag)::float8 FROM skiff.queue`)
				require.NoError(t, err)
				m := map[string]float64{}
				for rows.Next() {
					var q string
					var s float64
					require.NoError(t, rows.Scan(&q, &s))
					m[q] = s
				}
				require.NoError(t, rows.Err())
				return m
			}

			_, err = upTo(ctx, cfg, Provider, 5)
			require.NoError(t, err)
			exec(`SELECT skiff.create_queue('old_default')`)
			exec(`SELECT skiff.create_queue('custom')`)
			exec(`SELECT skiff.set_queue_config('custom', 'ticker_max_lag', '300 milliseconds')`)
			require.Equal(t, map[string]float64{"old_default": 0.5, "custom": 0.3}, maxLag())

			_, err = Up(ctx, cfg, Provider)
			require.NoError(t, err)
			exec(`SELECT skiff.create_queue('new')`)
			require.Equal(t, map[string]float64{"old_default": 0.1, "custom": 0.3, "new": 0.1}, maxLag(),
				"new queues and queues at the old default get 100 ms; a setting of one's own stays")

			p, db, err := open(ctx, cfg, Provider)
			require.NoError(t, err)
			defer db.Close()
			_, err = p.DownTo(ctx, 5)
			require.NoError(t, err)
			require.Equal(t, map[string]float64{"old_default": 0.5, "custom": 0.3, "new": 0.5}, maxLag())
			exec(`SELECT skiff.create_queue('after_down')`)
			require.Equal(t, 0.5, maxLag()["after_down"])
		})
	}
}
