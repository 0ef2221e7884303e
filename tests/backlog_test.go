package tests

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
)

// TestCopyDoesNotStallOtherTables: big is resynced while writers change big, "Small Table"
// and third. The copy is held open at its end (its target transaction holds big's lock):
// meanwhile the worker's position advances, the other tables' new rows reach the target and
// big's events go to its backlog. A first copy attempt fails after its backlog has grown (the
// second attempt's barrier discards it); the second is released, the first batch after it
// applies and deletes the backlog, and every table is equal row by row.
func TestCopyDoesNotStallOtherTables(t *testing.T) {
	t.Parallel()
	n := copyRows(t) / 4
	p := newPair(t, "", "", copyDDL)
	loadCopyTables(t, p, n)
	p.capture(t, "qb", "public.big", `public."Small Table"`, "public.third")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qb", "--consumer", "c1")
	require.NoError(t, err, out)
	tgt := connect(t, p.tgt)
	prov := connect(t, p.prov)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: a held copy and the worker end with ctx
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qb")
	// No table manager: the test runs big's copies itself.
	p.runWorkerConfig(t, ctx, &wg, "qb", func(c *worker.Config) { c.NoTableManager = true })
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	rowWriter(t, wctx, &wwg, p.prov, 1, n, &txs)

	sub := copier.Subscription{Queue: "qb", Consumer: "c1"}
	big := change.Table{Schema: "public", Name: "big"}
	ok, err := sub.Resync(ctx, tgt, big)
	require.NoError(t, err)
	require.True(t, ok)

	pc, err := pg.ParseConfig(p.prov, "backlog-test")
	require.NoError(t, err)
	tc, err := pg.ParseConfig(p.tgt, "backlog-test")
	require.NoError(t, err)
	base := sub.Hooks()
	backlog := func() int64 {
		var c int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog WHERE source_name = 'big'`).Scan(&c))
		return c
	}
	tick := func() int64 {
		var at int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT tick FROM skiff.subscription WHERE queue = 'qb'`).Scan(&at))
		return at
	}
	// copyHeld runs one copy of big whose Copied hook (all rows copied, lock held, not
	// committed) signals held and waits for release before returning fail (nil: commit).
	copyHeld := func(fail error) (held, release chan struct{}, done chan copier.Result) {
		held, release, done = make(chan struct{}), make(chan struct{}), make(chan copier.Result, 1)
		hooks := base
		hooks.Copied = func(ctx context.Context, tx pgx.Tx, tb copier.Table, point string, rows, bytes int64) error {
			close(held)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			if fail != nil {
				return fail
			}
			return base.Copied(ctx, tx, tb, point, rows, bytes)
		}
		go func() {
			res, _ := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, Hooks: hooks, CopyPoint: trigger.CopyPoint,
				LockKey: func(tb copier.Table) int32 { return sub.TableLockKey(tb.Source) }},
				[]copier.Table{{Source: big, Dest: big}})
			done <- res[0]
		}()
		return held, release, done
	}
	waitHeld := func(held chan struct{}, done chan copier.Result) {
		select {
		case <-held:
		case r := <-done:
			t.Fatalf("copy ended before its end was held: %v", r.Err)
		case <-time.After(2 * time.Minute):
			t.Fatal("copy not held within 2 minutes")
		}
	}

	// othersReplicate asserts, while big's copy is held, that the position advances and that
	// rows written to the other tables now reach the target.
	othersReplicate := func(id int) {
		t0 := tick()
		exec1(t, prov, `INSERT INTO "Small Table" VALUES ($1, 'during the copy')`, id)
		exec1(t, prov, `INSERT INTO third VALUES ($1, 'during the copy')`, id)
		exec1(t, prov, `UPDATE big SET pad = 'during the copy' WHERE id = 1`)
		pgtest.Eventually(t, time.Minute, "the other tables' rows reach the target while big's copy is held", func() bool {
			var c int
			require.NoError(t, tgt.QueryRow(ctx, `SELECT (SELECT count(*) FROM "Small Table" WHERE "Id" = $1) + (SELECT count(*) FROM third WHERE id = $1)`, id).Scan(&c))
			return c == 2 && tick() > t0
		})
		t.Logf("while big's copy was held: position %d → %d", t0, tick())
	}

	// Attempt 1: held, its backlog grows, then it fails.
	held, release, done := copyHeld(errors.New("injected failure"))
	waitHeld(held, done)
	othersReplicate(-1)
	pgtest.Eventually(t, time.Minute, "big's events backlogged during the first attempt", func() bool { return backlog() > 0 })
	close(release)
	require.ErrorContains(t, (<-done).Err, "injected failure")
	var oldSeq int64
	require.NoError(t, tgt.QueryRow(ctx, `SELECT max(seq) FROM skiff.copy_backlog WHERE source_name = 'big'`).Scan(&oldSeq))

	// Attempt 2: held open while the other tables replicate.
	held, release, done = copyHeld(nil)
	waitHeld(held, done)
	require.Equal(t, "copying+snap", tableStates(t, tgt)["big"])
	var stale int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog WHERE source_name = 'big' AND seq <= $1`, oldSeq).Scan(&stale))
	require.Zero(t, stale, "the new attempt's barrier discards the failed attempt's backlog")
	othersReplicate(-2)
	pgtest.Eventually(t, time.Minute, "big's events backlogged", func() bool { return backlog() > 0 })
	select {
	case r := <-done:
		t.Fatalf("the copy ended while held: %v", r.Err)
	default:
	}
	require.Equal(t, "copying+snap", tableStates(t, tgt)["big"], "the copy is still running")
	t.Logf("%d events of big backlogged", backlog())

	close(release)
	res := <-done
	require.NoError(t, res.Err)
	pgtest.Eventually(t, time.Minute, "big's backlog applied", func() bool { return backlog() == 0 })
	require.Equal(t, "catching-up+snap", tableStates(t, tgt)["big"])
	wstop()
	wwg.Wait()
	require.Positive(t, txs.Load())
	p.caughtUp(t, 2*time.Minute, "qb")
	require.Zero(t, backlog())
	p.compare(t, "public.big", `public."Small Table"`, "public.third")
	cancel()
}
