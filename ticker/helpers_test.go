package ticker

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testLogger logs to the test at debug level with SKIFF_TEST_LOG=1, else nowhere.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SKIFF_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// providerDB returns a fresh database of srv with the provider schema installed.
func providerDB(t testing.TB, srv *pgtest.Server) string {
	t.Helper()
	url := srv.NewDB(t)
	installProvider(t, url)
	return url
}

func installProvider(t testing.TB, url string) {
	t.Helper()
	migratetest.Install(t, url, migrate.Provider)
}

// testConfig is a ticker configuration fast enough for tests.
func testConfig(urls ...string) Config {
	return Config{
		DBs:        urls,
		Poll:       20 * time.Millisecond,
		Rescan:     200 * time.Millisecond,
		LockRetry:  100 * time.Millisecond,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
	}
}

// startTicker starts a ticker with its own registry; it is stopped when the test ends.
func startTicker(t testing.TB, cfg Config) (*Ticker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	tk, err := New(cfg, testLogger(t), reg)
	require.NoError(t, err)
	require.NoError(t, tk.Start(context.Background()))
	t.Cleanup(tk.Stop)
	return tk, reg
}

// dbName is the db label of a URL.
func dbName(t testing.TB, url string) string {
	t.Helper()
	cfg, err := pg.ParseConfig(url, "")
	require.NoError(t, err)
	return pg.Describe(cfg)
}

// metricValue reads one series of the ticker's metrics (0 when absent).
func metricValue(c prometheus.Collector, labels ...string) float64 {
	switch v := c.(type) {
	case *prometheus.CounterVec:
		return testutil.ToFloat64(v.WithLabelValues(labels...))
	case *prometheus.GaugeVec:
		return testutil.ToFloat64(v.WithLabelValues(labels...))
	}
	panic("unsupported collector")
}

// polls returns how many poll rounds the ticker made on a database.
func polls(t testing.TB, reg *prometheus.Registry, db string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "skiff_ticker_poll_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "db" && l.GetValue() == db {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// waitPolls waits until the ticker has made n more poll rounds on db: a wait on the ticker's
// own progress, not on the clock.
func waitPolls(t testing.TB, reg *prometheus.Registry, db string, n uint64) {
	t.Helper()
	start := polls(t, reg, db)
	pgtest.Eventually(t, 10*time.Second, "ticker polls", func() bool { return polls(t, reg, db) >= start+n })
}
