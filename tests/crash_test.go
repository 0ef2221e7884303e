package tests

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// workerProc is `skiff worker` running as a process.
type workerProc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func (p *pair) startWorkerProc(t *testing.T, queues ...string) *workerProc {
	t.Helper()
	args := []string{"--log-format", "json", "--log-level", "debug", "worker", "--provider", p.prov, "--target", p.tgt, "--consumer", "c1", "--min-backoff", "100ms", "--max-backoff", "1s"}
	for _, q := range queues {
		args = append(args, "--queue", q)
	}
	args = append(args, p.workerArgs...)
	w := &workerProc{cmd: exec.Command(skiffBinary(t), args...), out: &bytes.Buffer{}}
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	require.NoError(t, w.cmd.Start())
	return w
}

// stop sends the worker SIGTERM and requires it to exit 0 (its output is logged when not).
func (w *workerProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	err := w.cmd.Wait()
	if err != nil {
		t.Logf("worker output:\n%s", w.out.String())
	}
	require.NoError(t, err, "the worker exits 0 on SIGTERM")
}

// TestExactlyOnceUnderSIGKILL runs `skiff worker` as a process over two queues while writers
// and ticks go on, SIGKILLs it at random moments and restarts it. At the end both sides hold
// the same rows and the target's batch log shows every batch once, each starting where the
// previous one ended.
func TestExactlyOnceUnderSIGKILL(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("long test")
	}
	forEachSourceDefault(t, testExactlyOnce)
}

func testExactlyOnce(t *testing.T, provVersion, tgtVersion string, src source) {
	p := newWorkloadPair(t, provVersion, tgtVersion, src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qa", "qb")
	wctx, wstop := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	txs := make([]int64, 4)
	for i, g := range []string{"qa", "qa", "qb", "qb"} {
		writer(t, wctx, &wwg, p.prov, uint64(10+i), g, &txs[i])
	}

	duration := 25 * time.Second
	if s := os.Getenv("SKIFF_CRASH_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		duration = time.Duration(n) * time.Second
	}
	tgt := connect(t, p.tgt)
	batches := func() int64 {
		var n int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM skiff.batch_log`).Scan(&n))
		return n
	}
	rng := rand.New(rand.NewPCG(42, 1))
	kills, killsApplying := 0, 0
	var logs bytes.Buffer
	first := batches()
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		before := batches()
		w := p.startWorkerProc(t, "qa", "qb")
		exited := make(chan error, 1)
		go func() { exited <- w.cmd.Wait() }()
		// The moment of the kill: one time in four a random one from the start (the worker
		// may be connecting, locking, reading its first batch); else a random one after it
		// applied its first batch (reading, applying or committing the next ones). Under a
		// loaded machine a worker can take longer to start than the first kind's moments.
		life := time.Duration(100+rng.IntN(1500)) * time.Millisecond
		applying := rng.IntN(4) != 0
		if applying {
			life = time.Duration(rng.IntN(500)) * time.Millisecond
		}
		ran := false
		for start := time.Now(); applying && !ran && time.Since(start) < time.Minute; {
			select {
			case err := <-exited:
				exited <- err
				ran = true
			case <-time.After(20 * time.Millisecond): // polling the target's batch log
				ran = batches() > before
			}
		}
		select {
		case <-exited: // e.g. the previous worker's lock was still held: start again
		case <-time.After(life):
			require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
			<-exited
			kills++
			if applying {
				killsApplying++
			}
		}
		logs.Write(w.out.Bytes())
	}
	appliedUnderKills := batches() - first
	// Kills between a batch's commit on the target and its finish on the provider show up as
	// batches the next worker finds already applied.
	alreadyApplied := bytes.Count(logs.Bytes(), []byte("batch already applied on the target"))
	wstop()
	wwg.Wait()

	// A last worker catches up and stops cleanly on SIGTERM.
	holders := func() int {
		var n int
		_ = tgt.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1936419174 AND granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
		return n
	}
	pgtest.Eventually(t, time.Minute, "the killed worker's target sessions release their locks", func() bool { return holders() == 0 })
	w := p.startWorkerProc(t, "qa", "qb")
	pgtest.Eventually(t, time.Minute, "the last worker holds both subscriptions", func() bool { return holders() == 2 })
	p.caughtUp(t, 3*time.Minute, "qa", "qb")
	w.stop(t)
	cancel()
	wg.Wait()

	t.Logf("%v writer transactions, %d kills (%d after the worker applied a batch), %d batches applied while killed, %d found already applied after a kill",
		txs, kills, killsApplying, appliedUnderKills, alreadyApplied)
	require.Greater(t, kills, 3)
	require.Greater(t, killsApplying, 1, "kills landed while the worker applied batches")
	require.GreaterOrEqual(t, appliedUnderKills, int64(killsApplying), "every worker killed while applying had applied a batch")
	p.compare(t, allTables()...)

	n := requireEveryBatchOnce(t, tgt)
	t.Logf("%d batches applied, each once", n)
}

// requireEveryBatchOnce checks the target's batch log: every batch once, and each starts
// where the previous one ended (ticks for the trigger queue; for a logical queue the batch id
// is the End LSN and each batch's Prev is the previous batch's End, the LSN the slot resumes
// after); and the subscriptions count as many. It returns how many batches there are.
func requireEveryBatchOnce(t *testing.T, tgt *pgx.Conn) int {
	t.Helper()
	ctx := context.Background()
	rows, err := tgt.Query(ctx, `SELECT s.queue, b.batch_id, coalesce(b.prev_tick, b.prev_lsn), coalesce(b.end_tick, b.end_lsn)
		FROM skiff.batch_log b JOIN skiff.subscription s USING (sub_id) ORDER BY s.queue, coalesce(b.end_tick, b.end_lsn)`)
	require.NoError(t, err)
	seen := map[string]map[int64]bool{}
	last := map[string]int64{}
	n := 0
	for rows.Next() {
		var q string
		var id int64
		var prev, end *int64
		require.NoError(t, rows.Scan(&q, &id, &prev, &end))
		if seen[q] == nil {
			seen[q] = map[int64]bool{}
		}
		require.False(t, seen[q][id], "batch %d of %s applied twice", id, q)
		seen[q][id] = true
		if l, ok := last[q]; ok {
			require.NotNil(t, prev)
			require.Equal(t, l, *prev, "batch %d of %s does not start where the previous one ended", id, q)
		}
		last[q] = *end
		n++
	}
	require.NoError(t, rows.Err())
	var applied int64
	require.NoError(t, tgt.QueryRow(ctx, `SELECT sum(batches_applied) FROM skiff.subscription`).Scan(&applied))
	require.Equal(t, int64(n), applied)
	return n
}

// TestWorkerSurvivesServerRestarts: the provider and then the target restart under a running
// `skiff worker`; it reconnects, takes its lock again and goes on from where the target stands.
func TestWorkerSurvivesServerRestarts(t *testing.T) {
	t.Parallel()
	forEachSourceDefault(t, testServerRestarts)
}

func testServerRestarts(t *testing.T, provVersion, tgtVersion string, src source) {
	provSrv := pgtest.New(t, pgtest.Options{Version: provVersion})
	tgtSrv := pgtest.New(t, pgtest.Options{Version: tgtVersion})
	p := newPairOn(t, provSrv, tgtSrv, workloadDDL)
	p.src = src
	p.capture(t, "qa", workloadTables["qa"]...)
	p.subscribe(t, "qa")
	w := p.startWorkerProc(t, "qa")
	defer func() {
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%s", w.out.String())
		}
	}()
	ctx := context.Background()
	write := func(from int) {
		prov := connect(t, p.prov)
		exec1(t, prov, `INSERT INTO a1 SELECT g, 'row', g FROM generate_series($1::int, $1::int + 99) g`, from)
		exec1(t, prov, `UPDATE a1 SET v = 'updated' WHERE id % 3 = 0`)
		if !src.logical() {
			_, err := queue.ForceTick(ctx, prov, "qa")
			require.NoError(t, err)
		}
		require.NoError(t, prov.Close(ctx))
	}
	write(1)
	p.caughtUp(t, time.Minute, "qa")
	require.NoError(t, provSrv.Restart(ctx))
	write(1001)
	p.caughtUp(t, time.Minute, "qa")
	require.NoError(t, tgtSrv.Restart(ctx))
	write(2001)
	p.caughtUp(t, time.Minute, "qa")
	p.compare(t, workloadTables["qa"]...)
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, w.cmd.Wait())
	require.Contains(t, w.out.String(), "reconnecting")
}

// TestSecondWorkerRefused: a second `skiff worker` for a subscription that one already
// replays exits at once, saying so; the first goes on.
func TestSecondWorkerRefused(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", workloadDDL)
	p.capture(t, "qa", workloadTables["qa"]...)
	p.subscribe(t, "qa")
	first := p.startWorkerProc(t, "qa")
	defer func() { _ = first.cmd.Process.Kill(); _ = first.cmd.Wait() }()
	tgt := connect(t, p.tgt)
	pgtest.Eventually(t, time.Minute, "the first worker holds the lock", func() bool {
		var n int
		_ = tgt.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1936419174 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
		return n == 1
	})
	out, err := skiff(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "qa", "--consumer", "c1")
	require.Error(t, err)
	require.Contains(t, out, "another worker holds the subscription")
	if pg.ServerVersion(tgt) >= 90000 {
		require.Contains(t, out, "skiff worker qa") // the holder's application name (9.0+)
	}

	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO a1 SELECT g, 'x', g FROM generate_series(1, 50) g`)
	p.caughtUp(t, time.Minute, "qa")
	p.compare(t, "public.a1")
}
