package ticker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestMaintenanceAtStart: a ticker runs every maintenance step once as it starts ticking a
// database, then on schedule. A ticker restarted more often than its schedule's period (a
// daily cron here, on a clock stopped at noon) would otherwise never rotate.
func TestMaintenanceAtStart(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "mq", map[string]string{queue.SettingRotationPeriod: "1 millisecond"})
	daily, err := cron.ParseStandard("0 3 * * *")
	require.NoError(t, err)

	cfg := testConfig(url)
	cfg.MaintSchedule, cfg.RetrySchedule, cfg.CleanupSchedule = daily, daily, daily
	reg := prometheus.NewRegistry()
	tk, err := New(cfg, testLogger(t), reg)
	require.NoError(t, err)
	noon := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tk.now = func() time.Time { return noon }
	require.NoError(t, tk.Start(t.Context()))
	t.Cleanup(tk.Stop)

	db := dbName(t, url)
	steps := []string{"rotate", "retry", "cleanup", "vacuum"}
	pgtest.Eventually(t, 10*time.Second, "every maintenance step ran at start", func() bool {
		for _, s := range steps {
			if metricValue(tk.m.maintenance, db, s) < 1 {
				return false
			}
		}
		return true
	})
	require.Equal(t, 1.0, metricValue(tk.m.rotations, db, "mq"), "the queue rotated at start")

	// Then on schedule only: the next run is at 03:00 tomorrow.
	waitPolls(t, reg, db, 10)
	for _, s := range steps {
		require.Equal(t, 1.0, metricValue(tk.m.maintenance, db, s), s)
	}
}
