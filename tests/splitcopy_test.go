package tests

import (
	"context"
	"encoding/json"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
)

// TestSplitCopyUnderWrites: skiff subscribe --copy-split-rows copies the large table in key
// ranges, two at once, while writers change it; then the worker catches up, a resync copies it
// again through the worker's table manager (split too), and provider and target end equal
// row by row. On 15 (the default) and 10; with a provider before 9.2 (SKIFF_PG_VERSION=8.4)
// both copies run in one stream.
func TestSplitCopyUnderWrites(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "10"} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			testSplitCopy(t, v)
		})
	}
}

// copyDone is the "copy done" log line of a table's copy.
type copyDone struct {
	Msg      string `json:"msg"`
	Table    string `json:"table"`
	Rows     int64  `json:"rows"`
	Ranges   int    `json:"ranges"`
	Parallel int    `json:"parallel_ranges"`
}

// copiesDone returns the "copy done" lines of table in a JSON log.
func copiesDone(t testing.TB, log, table string) []copyDone {
	var out []copyDone
	for _, line := range strings.Split(log, "\n") {
		var d copyDone
		if json.Unmarshal([]byte(line), &d) == nil && d.Msg == "copy done" && d.Table == table {
			out = append(out, d)
		}
	}
	return out
}

func testSplitCopy(t *testing.T, version string) {
	n := copyRows(t)
	p := newPair(t, version, version, copyDDL)
	loadCopyTables(t, p, n)
	p.capture(t, "qs", "public.big", `public."Small Table"`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qs")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	for i := range 2 {
		rowWriter(t, wctx, &wwg, p.prov, uint64(i), n, &txs)
	}
	split := n / 8
	splitOn := pg.ServerVersion(connect(t, p.prov)) >= 90200

	// 1. subscribe copies big in key ranges.
	out, err := exec.Command(skiffBinary(t), "--log-format", "json", "subscribe", "--provider", p.prov, "--target", p.tgt,
		"--queue", "qs", "--consumer", "c1", "--copy-parallel", "2", "--copy-split-rows", strconv.Itoa(split)).CombinedOutput()
	require.NoError(t, err, string(out))
	done := copiesDone(t, string(out), `"public"."big"`)
	require.Len(t, done, 1, string(out))
	if splitOn {
		require.GreaterOrEqual(t, done[0].Ranges, 4, "big copied in key ranges: %s", out)
		require.Equal(t, 2, done[0].Parallel, "two ranges at once: %s", out)
	} else {
		require.Zero(t, done[0].Ranges, string(out))
		require.Contains(t, string(out), "cannot export snapshots (9.2+)")
	}

	// 2. The worker catches up; a resync copies big again through its table manager.
	var wlog lockedOutput
	p.runWorkerConfig(t, ctx, &wg, "qs", func(c *worker.Config) {
		c.CopySplitRows = int64(split)
		c.CopyParallel = 2
		c.Log = slog.New(slog.NewJSONHandler(&wlog, nil))
	})
	p.inSync(t, 3*time.Minute, "qs")
	rout, err := skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "--consumer", "c1", "public.big")
	require.NoError(t, err, rout)
	pgtest.Eventually(t, 3*time.Minute, "the worker copies big again", func() bool {
		return len(copiesDone(t, wlog.String(), `"public"."big"`)) > 0
	})
	done = copiesDone(t, wlog.String(), `"public"."big"`)
	if splitOn {
		require.GreaterOrEqual(t, done[0].Ranges, 4, "big copied in key ranges by the worker")
		require.Equal(t, 2, done[0].Parallel)
	} else {
		require.Zero(t, done[0].Ranges)
	}
	p.inSync(t, 3*time.Minute, "qs")
	wstop()
	wwg.Wait()
	p.caughtUp(t, 2*time.Minute, "qs")
	require.Positive(t, txs.Load())
	t.Logf("%d writer transactions during the test; copies: %+v", txs.Load(), done)
	p.compare(t, "public.big", `public."Small Table"`)
	cancel()
	wg.Wait()
}
