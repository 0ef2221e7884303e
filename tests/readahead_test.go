package tests

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestReadAheadKilledAndRestarted: a worker behind its queue reads each next batch ahead on a
// second provider connection while the target applies the current one. SIGKILLed once it has
// applied batches read ahead, and restarted, it leaves both sides equal and every batch applied
// once, each starting where the previous one ended.
func TestReadAheadKilledAndRestarted(t *testing.T) {
	t.Parallel()
	p := newWorkloadPair(t, "", "", source{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 20*time.Millisecond, "qa", "qb")
	// A backlog of small transactions over many ticks, written while no worker runs.
	wctx, wstop := context.WithTimeout(ctx, 3*time.Second)
	defer wstop()
	var wwg sync.WaitGroup
	txs := make([]int64, 2)
	writer(t, wctx, &wwg, p.prov, 31, "qa", &txs[0])
	writer(t, wctx, &wwg, p.prov, 32, "qb", &txs[1])
	wwg.Wait()

	// Batches of about 40 events: the worker is behind for many batches in a row.
	p.workerArgs = []string{"--max-events", "40"}
	tgt := connect(t, p.tgt)
	batches := func() int {
		var n int
		_ = tgt.QueryRow(ctx, `SELECT count(*) FROM skiff.batch_log`).Scan(&n)
		return n
	}
	w := p.startWorkerProc(t, "qa", "qb")
	pgtest.Eventually(t, time.Minute, "the worker applies a few batches", func() bool { return batches() >= 8 })
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
	_ = w.cmd.Wait()
	first := w.out.String()

	w = p.startWorkerProc(t, "qa", "qb")
	p.caughtUp(t, 3*time.Minute, "qa", "qb")
	w.stop(t)
	cancel()
	wg.Wait()

	require.Contains(t, first, `"msg":"batch read ahead"`, "the first worker read no batch ahead")
	require.Contains(t, w.out.String(), `"msg":"batch read ahead"`, "the second worker read no batch ahead")
	p.compare(t, allTables()...)
	n := requireEveryBatchOnce(t, tgt)
	t.Logf("%v writer transactions, %d batches applied, each once", txs, n)
}
