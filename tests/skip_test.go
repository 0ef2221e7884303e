package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSkipTable: subscribe --skip takes a table of the queue without replicating it. Under
// writes to every table, the copy and the worker leave the skipped tables alone — one the
// target does not have, one whose target rows stay as they were (never emptied, never
// written) — and replicate the others; status shows the skipped tables; compare leaves them
// out and finds the rest equal; a resync of a skipped table copies nothing and it goes back
// to in-sync.
func TestSkipTable(t *testing.T) {
	t.Parallel()
	forEachPair(t, testSkipTable)
}

func testSkipTable(t *testing.T, provVersion, tgtVersion string) {
	n := copyRows(t) / 20
	p := newPair(t, provVersion, tgtVersion, `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	for _, tbl := range []string{"kept", "noisy", "gone"} {
		exec1(t, prov, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text)`, tbl))
		exec1(t, prov, fmt.Sprintf(`INSERT INTO %s SELECT g, 'v' || g FROM generate_series(1, %d) g`, tbl, n))
	}
	exec1(t, tgt, `CREATE TABLE kept (id int PRIMARY KEY, v text)`)
	exec1(t, tgt, `CREATE TABLE noisy (id int PRIMARY KEY, v text)`)
	exec1(t, tgt, `INSERT INTO noisy VALUES (1, 'the target''s own row')`)
	p.capture(t, "qs", "public.kept", "public.noisy", "public.gone")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qs")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	tables := []string{"kept", "noisy", "gone"}
	for i := range 2 {
		stmtWriter(t, wctx, &wwg, p.prov, uint64(i), &txs, func(rng *rand.Rand) (string, []any) {
			tbl := tables[rng.IntN(3)]
			switch r := rng.IntN(10); {
			case r < 6:
				return `UPDATE ` + tbl + ` SET v = $2 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			case r < 8:
				return `DELETE FROM ` + tbl + ` WHERE id = $1`, []any{1 + rng.IntN(n)}
			default:
				return `INSERT INTO ` + tbl + ` VALUES ($1, $2)`, []any{n + 1 + rng.IntN(1_000_000), randText(rng)}
			}
		})
	}
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "--consumer", "c1",
		"--skip", "noisy", "--skip", "public.gone")
	require.NoError(t, err, out)
	require.Contains(t, out, `"public"."noisy" (skipped)`)
	require.Contains(t, out, `"public"."gone" (skipped)`)
	p.runWorker(t, ctx, &wg, "qs")
	p.inSync(t, 2*time.Minute, "qs")

	// A resync of a skipped table copies nothing.
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "public.noisy")
	require.NoError(t, err, out)
	p.inSync(t, 2*time.Minute, "qs")

	wstop()
	wwg.Wait()
	require.Positive(t, txs.Load())
	p.caughtUp(t, 2*time.Minute, "qs")

	code, out := compareExit(t, p, "qs")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `"public"."noisy"`)
	require.Contains(t, out, "skipped")
	p.compare(t, "public.kept")
	require.Equal(t, []string{`(1,"the target's own row")`}, dumpQuery(t, tgt, `SELECT * FROM noisy`))
	var gone bool
	require.NoError(t, tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relname = 'gone')`).Scan(&gone))
	require.False(t, gone)

	js, err := exec.Command(skiffBinary(t), "status", "--provider", p.prov, "--target", p.tgt, "--json").Output()
	require.NotEmpty(t, js, "status: %v", err)
	var rep struct {
		Queues []struct {
			Consumers []struct {
				Subscription struct {
					Tables []struct {
						Source  string `json:"source"`
						State   string `json:"state"`
						Handler string `json:"handler"`
						Skipped bool   `json:"skipped"`
					} `json:"tables"`
				} `json:"subscription"`
			} `json:"consumers"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal(js, &rep), string(js))
	skipped := map[string]bool{}
	for _, tb := range rep.Queues[0].Consumers[0].Subscription.Tables {
		skipped[tb.Source] = tb.Skipped
		require.Equal(t, "in-sync", tb.State, tb.Source)
	}
	require.Equal(t, map[string]bool{"public.kept": false, "public.noisy": true, "public.gone": true}, skipped)
	text, _ := skiff(t, "status", "--provider", p.prov, "--target", p.tgt)
	require.Regexp(t, `public\.noisy\s+skipped`, text)
	cancel()
	wg.Wait()
}
