package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/queue"
)

// TestLargeTransaction: one provider transaction of about 130k changes — inserts, updates of
// every row (some several times), deletes, re-inserts of deleted keys, key changes — running
// across ticks while other transactions commit, is applied exactly: the worker reads it by
// itself (no sort on the provider) and applies it in runs, and both sides end row by row equal.
func TestLargeTransaction(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		ctx := context.Background()
		p := newPair(t, provVersion, tgtVersion, `
CREATE TABLE big (id bigint PRIMARY KEY, v integer NOT NULL, pad text);
CREATE TABLE small (id bigint PRIMARY KEY, v text);`)
		p.capture(t, "q", "public.big", "public.small")
		p.subscribeDirect(t, "q")
		prov := connect(t, p.prov)
		other := connect(t, p.prov)

		lc := connect(t, p.prov)
		ltx, err := lc.Begin(ctx)
		require.NoError(t, err)
		lexec := func(sql string) {
			_, err := ltx.Exec(ctx, sql)
			require.NoError(t, err, sql)
		}
		lexec(`INSERT INTO big SELECT g, g, md5(g::text) || repeat('x', 100) FROM generate_series(1, 60000) g`)
		for range 2 { // running across ticks: read by itself
			_, err := queue.ForceTick(ctx, prov, "q")
			require.NoError(t, err)
		}
		exec1(t, other, `INSERT INTO small VALUES (1, 'during')`)
		exec1(t, other, `INSERT INTO big VALUES (-5, 0, 'other')`)
		lexec(`UPDATE big SET v = v + 1, pad = md5((-id)::text) WHERE id > 0`)
		lexec(`UPDATE big SET v = v * 2 WHERE id % 10 = 0`)
		lexec(`UPDATE big SET pad = NULL WHERE id % 20 = 0`)
		lexec(`DELETE FROM big WHERE id BETWEEN 1001 AND 3000`)
		lexec(`INSERT INTO big SELECT g, -g, 'again' FROM generate_series(1001, 2000) g`)
		lexec(`UPDATE big SET id = id + 1000000 WHERE id BETWEEN 5001 AND 6000`)
		lexec(`UPDATE big SET v = 7 WHERE id BETWEEN 1005001 AND 1005100`)
		lexec(`UPDATE big SET v = 8 WHERE id = -5`)
		lexec(`INSERT INTO small VALUES (2, 'inside')`)
		require.NoError(t, ltx.Commit(ctx))
		exec1(t, other, `UPDATE big SET v = 9 WHERE id = -5`)
		exec1(t, other, `UPDATE small SET v = 'after' WHERE id = 2`)

		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		p.runWorker(t, wctx, &wg, "q")
		p.caughtUp(t, 5*time.Minute, "q")
		cancel()
		wg.Wait()
		p.compare(t, "public.big", "public.small")
	})
}
