package ticker

import (
	"log/slog"
	"strings"
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

// TestTickerWarnsOfCaptureGaps: while a captured table's capture trigger is disabled, its
// writes reach no queue; the ticker's maintenance says so in its log (the table, the
// operations and the fix) and counts the failing step in its errors metric, until the trigger
// fires again.
func TestTickerWarnsOfCaptureGaps(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "gq", nil)
	var log lockedBuffer
	cfg := testConfig(url)
	every, err := cron.ParseStandard("@every 1s")
	require.NoError(t, err)
	cfg.MaintSchedule = every
	tk, err := New(cfg, slog.New(slog.NewTextHandler(&log, nil)), prometheus.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, tk.Start(t.Context()))
	t.Cleanup(tk.Stop)
	db := dbName(t, url)
	pgtest.Eventually(t, 10*time.Second, "the captures step ran", func() bool {
		return metricValue(tk.m.maintenance, db, "captures") >= 1
	})
	require.Zero(t, metricValue(tk.m.errors, db, "captures"))

	_, err = conn.Exec(t.Context(), `ALTER TABLE gq DISABLE TRIGGER USER`)
	require.NoError(t, err)
	pgtest.Eventually(t, 10*time.Second, "the ticker reports the disabled capture", func() bool {
		return metricValue(tk.m.errors, db, "captures") >= 1 && strings.Contains(log.String(), "writes not captured")
	})
	for _, want := range []string{`table \"public\".\"gq\": its INSERTs, UPDATEs, DELETEs, TRUNCATEs are not captured`, "ENABLE TRIGGER", "skiff table resync"} {
		require.Contains(t, log.String(), want)
	}
	ran := metricValue(tk.m.maintenance, db, "captures")
	_, err = conn.Exec(t.Context(), `ALTER TABLE gq ENABLE TRIGGER USER`)
	require.NoError(t, err)
	pgtest.Eventually(t, 10*time.Second, "the step recovers", func() bool {
		return metricValue(tk.m.maintenance, db, "captures") > ran
	})
	require.Contains(t, log.String(), `msg="step recovered"`)
}
