package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestReplicateThroughRotations: the ticker daemon rotates the event tables as often as the
// safety rule lets it (rotation period 0, maintenance every second) while writers, a worker and
// a provider transaction held open across several rotations run; the open transaction keeps
// the table it wrote to from being reused until it ends, and at the end both sides hold the
// same rows.
func TestReplicateThroughRotations(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		p := newPair(t, provVersion, tgtVersion, workloadDDL)
		p.capture(t, "qa", workloadTables["qa"]...)
		p.subscribe(t, "qa")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		prov := connect(t, p.prov)
		require.NoError(t, queue.SetQueueConfig(ctx, prov, "qa", queue.SettingRotationPeriod, "0"))
		epoch := func() int64 {
			info, err := queue.GetQueueInfo(context.Background(), prov)
			require.NoError(t, err)
			return info[0].Epoch
		}

		// A transaction that writes in epoch 0 and stays open.
		long := connect(t, p.prov)
		longTx, err := long.Begin(ctx)
		require.NoError(t, err)
		_, err = longTx.Exec(ctx, `INSERT INTO a1 VALUES (-1, 'long transaction', -1)`)
		require.NoError(t, err)

		startProc(t, "ticker", "--db", p.prov, "--poll", "50ms", "--maint-schedule", "@every 1s")
		var wg sync.WaitGroup
		var wctx, wstop = context.WithCancel(ctx)
		var wwg sync.WaitGroup
		txs := make([]int64, 2)
		writer(t, wctx, &wwg, p.prov, 1, "qa", &txs[0])
		writer(t, wctx, &wwg, p.prov, 2, "qa", &txs[1])
		p.runWorker(t, ctx, &wg, "qa")

		// Rotations go on up to the epoch whose next switch would reuse table 0, and stop there
		// while the transaction that wrote to it is open.
		pgtest.Eventually(t, time.Minute, "rotations up to epoch 2", func() bool { return epoch() >= 2 })
		tgt := connect(t, p.tgt)
		applied := func() int64 {
			var n int64
			require.NoError(t, tgt.QueryRow(context.Background(), `SELECT coalesce(sum(events_applied), 0) FROM skiff.subscription`).Scan(&n))
			return n
		}
		before := applied()
		pgtest.Eventually(t, time.Minute, "the worker goes on meanwhile", func() bool { return applied() > before+3000 })
		require.Equal(t, int64(2), epoch(), "table 0 was reused while a transaction that wrote to it was open")
		require.NoError(t, longTx.Commit(ctx))

		pgtest.Eventually(t, 2*time.Minute, "rotations resume", func() bool { return epoch() >= 5 })
		wstop()
		wwg.Wait()
		p.caughtUp(t, 2*time.Minute, "qa")
		cancel()
		wg.Wait()
		t.Logf("writer transactions: %v, epoch %d at the end", txs, epoch())
		p.compare(t, workloadTables["qa"]...)
	})
}
