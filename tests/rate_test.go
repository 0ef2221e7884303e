package tests

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestApplyRate measures the rows per second one worker applies from a backlog on the
// provider: N inserts, N inserts + N updates, and N inserts + N updates in each of two queues
// replayed in parallel. It is a measurement, not a timed test: it runs only with
// SKIFF_APPLY_BENCH=N (e.g. 200000) and logs the figures.
//
//	SKIFF_APPLY_BENCH=200000 go test ./tests -run TestApplyRate -v -timeout 30m
func TestApplyRate(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SKIFF_APPLY_BENCH"))
	if n <= 0 {
		t.Skip("set SKIFF_APPLY_BENCH=rows to measure the apply rate")
	}
	provSrv := pgtest.New(t, pgtest.Options{Durable: true})
	tgtSrv := pgtest.New(t, pgtest.Options{Durable: true})
	for _, c := range []struct {
		name    string
		queues  int
		updates bool
	}{
		{"inserts", 1, false},
		{"inserts+updates", 1, true},
		{"inserts+updates, 2 queues in parallel", 2, true},
	} {
		if only := os.Getenv("SKIFF_APPLY_BENCH_CASE"); only != "" && only != c.name {
			continue
		}
		ddl := ""
		for i := range c.queues {
			ddl += fmt.Sprintf("CREATE TABLE r%d (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);", i)
		}
		p := newPairOn(t, provSrv, tgtSrv, ddl)
		var queues []string
		for i := range c.queues {
			q := fmt.Sprintf("r%d", i)
			queues = append(queues, q)
			p.capture(t, q, "public."+q)
			p.subscribeDirect(t, q)
		}
		// The backlog, ticked every 10k rows as a ticker would.
		prov := connect(t, p.prov)
		ctx := context.Background()
		rows := 0
		for _, q := range queues {
			for lo := 1; lo <= n; lo += 1000 {
				exec1(t, prov, `INSERT INTO `+q+` SELECT g, g % 1000, repeat('x', 60) FROM generate_series($1::bigint, $2::bigint) g`, lo, min(lo+999, n))
				if lo%10000 == 1 {
					_, err := queue.ForceTick(ctx, prov, q)
					require.NoError(t, err)
				}
			}
			rows += n
			if c.updates {
				for lo := 1; lo <= n; lo += 1000 {
					exec1(t, prov, `UPDATE `+q+` SET v = v + 1, pad = 'updated' WHERE id BETWEEN $1 AND $2`, lo, min(lo+999, n))
					if lo%10000 == 1 {
						_, err := queue.ForceTick(ctx, prov, q)
						require.NoError(t, err)
					}
				}
				rows += n
			}
		}
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		t0 := time.Now()
		for _, q := range queues {
			p.runWorker(t, wctx, &wg, q)
		}
		p.caughtUp(t, 20*time.Minute, queues...)
		d := time.Since(t0)
		stop()
		wg.Wait()
		t.Logf("apply rate, %s: %d rows in %.2fs = %.0f rows/s", c.name, rows, d.Seconds(), float64(rows)/d.Seconds())
		p.compare(t, queues...)
	}
}
