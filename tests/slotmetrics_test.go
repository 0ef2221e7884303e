package tests

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/metrics"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
	"github.com/skiffdb/skiff/queue"
)

// TestLogicalSlotMetrics: the worker's /metrics shows the logical queue's slot — active, WAL
// retained, lag in bytes — and nothing of the kind for a trigger queue it also runs; once the
// stream is idle the lag falls back below what was written elsewhere meanwhile (on 9.4 and
// 9.5, where the slot does not show its confirmed position, through the worker's own stream).
func TestLogicalSlotMetrics(t *testing.T) {
	t.Parallel()
	forEachLogical(t, testLogicalSlotMetrics)
}

func testLogicalSlotMetrics(t *testing.T, provVersion, tgtVersion string, src source) {
	ctx := context.Background()
	// A provider of its own: the lag is the server's WAL since the slot's position, and other
	// tests writing to a shared server kept it above the 1 MB below under the full suite's load
	// (session 23: a 2-minute wait that failed only there).
	p := newPairOn(t, pgtest.New(t, pgtest.Options{Version: provVersion}), pgtest.Shared(t, tgtVersion), `CREATE TABLE lm (id int PRIMARY KEY, v text);
		CREATE TABLE tm (id int PRIMARY KEY, v text);
		CREATE TABLE elsewhere (id serial PRIMARY KEY, pad text)`)
	p.src = src
	prov := connect(t, p.prov)
	p.capture(t, "lq", "lm")
	_, err := queue.AddTable(ctx, prov, "tq", queue.TableSpec{Name: "tm"}) // the trigger source
	require.NoError(t, err)
	p.subscribe(t, "lq")
	p.subscribe(t, "tq")
	slot, err := queue.ConsumerSlot(ctx, prov, "lq", "c1")
	require.NoError(t, err)
	require.NotEmpty(t, slot.Name)

	reg := prometheus.NewRegistry()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	p.runWorkerConfig(t, runCtx, &wg, "lq", func(c *worker.Config) {
		c.Queues = append(c.Queues, worker.Queue{Name: "tq", Consumer: "c1"})
		c.Metrics = reg
	})
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	scrape := func() map[string]float64 {
		resp, err := http.Get(srv.URL + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		return slotSeries(t, resp.Body)
	}
	labels := `{queue="lq",slot="` + slot.Name + `"}`

	exec1(t, prov, `INSERT INTO lm SELECT g, 'v' || g FROM generate_series(1, 1000) g`)
	exec1(t, prov, `INSERT INTO tm SELECT g, 'v' || g FROM generate_series(1, 10) g`)
	// WAL the queue has no part in: an idle stream confirms past it.
	before := walPosition(t, prov)
	exec1(t, prov, `INSERT INTO elsewhere (pad) SELECT repeat('x', 500) FROM generate_series(1, 10000)`)
	written := walPosition(t, prov) - before
	require.Greater(t, written, int64(2<<20), "WAL written outside the queue")
	var got map[string]float64
	pgtest.Eventually(t, 2*time.Minute, "the slot's metrics show an active slot with little lag", func() bool {
		got = scrape()
		return got["skiff_worker_slot_active"+labels] == 1 && got["skiff_worker_slot_lag_bytes"+labels] < 1<<20
	})
	t.Logf("WAL written outside the queue %d bytes; slot metrics %v", written, got)
	require.Contains(t, got, "skiff_worker_slot_retained_wal_bytes"+labels)
	require.GreaterOrEqual(t, got["skiff_worker_slot_retained_wal_bytes"+labels], 0.0)
	for k := range got {
		require.NotContains(t, k, `queue="tq"`, "a trigger queue has no slot")
	}
	p.caughtUp(t, time.Minute, "lq")
	trig := &pair{prov: p.prov, tgt: p.tgt} // tq is of the trigger source
	trig.caughtUp(t, time.Minute, "tq")
	cancel()
	wg.Wait()
	p.compare(t, "lm", "tm")
}

// slotSeries reads the skiff_worker_slot_* samples of a text exposition, by name and labels
// as written ("skiff_worker_slot_active{queue="q",slot="s"}").
func slotSeries(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "skiff_worker_slot_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	require.NoError(t, sc.Err())
	return out
}

// walPosition is the provider's current WAL position, in bytes.
func walPosition(t *testing.T, prov *pgx.Conn) int64 {
	t.Helper()
	q := `SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint`
	if pg.ServerVersion(prov) < 100000 {
		q = `SELECT pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), '0/0')::bigint`
	}
	var n int64
	require.NoError(t, prov.QueryRow(context.Background(), q).Scan(&n))
	return n
}
