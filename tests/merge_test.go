package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
	"github.com/skiffdb/skiff/queue"
)

const mergeDDL = `CREATE TABLE m (id integer PRIMARY KEY, src text NOT NULL, v text, n integer NOT NULL DEFAULT 0)`

// mergeRanges: each provider writes its own key range; the conflicts use keys above both.
var mergeRanges = [2][2]int{{1, 100000}, {100001, 200000}}

// TestMergeProviders: two providers of different versions (the oldest installed and 15) with a
// queue of the same name replicate into one table of a 15 target (subscribe --merge), each
// copied under writes on both while the other's worker runs, then replicated under concurrent
// writers on both, each provider in its own key range; the target equals the union of the
// providers' rows. Then a key both providers write, under each --on-conflict setting: error
// stops the worker naming the table and the key; apply-remote writes the provider's insert of
// a key the target holds and its update of a key the target lacks; keep-local keeps the
// target's row and drops a delete of a missing key; the conflicts show in skiff status. A
// TRUNCATE on a provider stops its worker without emptying the shared table.
func TestMergeProviders(t *testing.T) {
	t.Parallel()
	old := "15"
	if majors := pgtest.Majors(); len(majors) > 0 {
		old = majors[len(majors)-1] // newest first
	}
	t.Logf("providers %s and 15 into a 15 target", old)
	p1 := newPair(t, old, "15", mergeDDL)
	p2 := &pair{prov: pgtest.Shared(t, "15").NewDB(t), tgt: p1.tgt}
	migratetest.Install(t, p2.prov, migrate.Provider)
	exec1(t, connect(t, p2.prov), mergeDDL)
	prov1, prov2, tgt := connect(t, p1.prov), connect(t, p2.prov), connect(t, p1.tgt)
	exec1(t, prov1, `INSERT INTO m SELECT g, 'p1', 'before '||g, 0 FROM generate_series(1, 2000) g`)
	exec1(t, prov2, `INSERT INTO m SELECT g, 'p2', 'before '||g, 0 FROM generate_series(100001, 102000) g`)
	p1.capture(t, "q", "public.m")
	p2.capture(t, "q", "public.m")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg, wwg sync.WaitGroup
	wctx, stopWrites := context.WithCancel(ctx)
	var commits [2]atomic.Int64
	mergeWriter(t, wctx, &wwg, p1.prov, 1, mergeRanges[0], "p1", &commits[0])
	mergeWriter(t, wctx, &wwg, p2.prov, 2, mergeRanges[1], "p2", &commits[1])
	wrote := func(n int64) {
		at := [2]int64{commits[0].Load(), commits[1].Load()}
		pgtest.Eventually(t, 2*time.Minute, "writes go on on both providers", func() bool {
			return commits[0].Load() >= at[0]+n && commits[1].Load() >= at[1]+n
		})
	}
	wrote(20)

	// The first provider: copied under writes, then its worker runs.
	out, err := skiff(t, "subscribe", "--provider", p1.prov, "--target", p1.tgt, "--queue", "q", "--merge")
	require.NoError(t, err, out)
	require.Contains(t, out, "rows copied")
	ticker(t, ctx, &wg, p1.prov, 50*time.Millisecond, "q")
	ticker(t, ctx, &wg, p2.prov, 50*time.Millisecond, "q")
	names := mergeConsumers(t, tgt)
	require.Len(t, names, 1)
	w1 := startMergeWorker(t, ctx, p1.prov, p1.tgt, names[0])
	wrote(20)

	// The second provider, same queue name: a subscription of its own (named after the
	// provider), copied under writes on both while the first one's worker writes the table.
	out, err = skiff(t, "subscribe", "--provider", p2.prov, "--target", p2.tgt, "--queue", "q", "--merge")
	require.NoError(t, err, out)
	require.Contains(t, out, "rows copied")
	names = mergeConsumers(t, tgt)
	require.Len(t, names, 2, "two subscriptions of queue q: one per provider")
	c2 := names[1]
	require.True(t, strings.HasPrefix(c2, names[0]+"/"), "the second subscription's consumer names its provider: %s", c2)
	w2 := startMergeWorker(t, ctx, p2.prov, p2.tgt, c2)

	// Without --merge the same destination is refused.
	out, err = skiff(t, "subscribe", "--provider", p2.prov, "--target", p2.tgt, "--queue", "q", "--consumer", "plain", "--no-copy")
	require.Error(t, err, out)
	require.Contains(t, out, "must be merged in all of them")

	p1.inSync(t, 2*time.Minute, "q")
	p2.inSync(t, 2*time.Minute, "q")
	wrote(50)
	stopWrites()
	wwg.Wait()
	mergeCaughtUp(t, p1, names[0], 2*time.Minute)
	mergeCaughtUp(t, p2, c2, 2*time.Minute)
	compareMerged(t, tgt, []*pgx.Conn{prov1, prov2}, nil)
	for _, p := range []*pair{p1, p2} {
		out, err := skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
		require.NoError(t, err, out)
		require.Contains(t, out, "other providers'")
	}

	// error (the default): p2's insert of a key p1 wrote stops p2's worker, naming it.
	exec1(t, prov1, `INSERT INTO m VALUES (999999, 'p1', 'first', 1)`)
	mergeCaughtUp(t, p1, names[0], time.Minute)
	exec1(t, prov2, `INSERT INTO m VALUES (999999, 'p2', 'second', 2)`)
	select {
	case <-w2.Stopped():
	case <-time.After(2 * time.Minute):
		t.Fatal("p2's worker did not stop on the conflict")
	}
	require.ErrorContains(t, w2.Err(), `merge conflict on table "public"."m", key (id=999999)`)
	require.ErrorContains(t, w2.Err(), "INSERT")
	var v string
	require.NoError(t, tgt.QueryRow(ctx, `SELECT v FROM m WHERE id = 999999`).Scan(&v))
	require.Equal(t, "first", v, "nothing of the failed batch applied")
	st := mergeStatus(t, p2)
	require.Equal(t, "error", st.Merge)
	require.Contains(t, st.LastError, "key (id=999999)")

	// apply-remote: the insert overwrites; an update whose key the target lacks inserts it.
	out, err = skiff(t, "subscribe", "--provider", p2.prov, "--target", p2.tgt, "--queue", "q", "--merge", "--on-conflict", "apply-remote")
	require.NoError(t, err, out)
	var upd, del int // two rows p2 holds
	require.NoError(t, prov2.QueryRow(ctx, `SELECT min(id), max(id) FROM m WHERE id < 999990`).Scan(&upd, &del))
	exec1(t, tgt, `DELETE FROM m WHERE id = $1`, upd) // as if another provider had deleted it
	exec1(t, prov2, `UPDATE m SET v = 'updated', n = n + 1 WHERE id = $1`, upd)
	w2 = startMergeWorker(t, ctx, p2.prov, p2.tgt, c2)
	mergeCaughtUp(t, p2, c2, time.Minute)
	require.NoError(t, tgt.QueryRow(ctx, `SELECT v FROM m WHERE id = 999999`).Scan(&v))
	require.Equal(t, "second", v, "apply-remote: the provider's row wins")
	require.NoError(t, tgt.QueryRow(ctx, `SELECT v FROM m WHERE id = $1`, upd).Scan(&v))
	require.Equal(t, "updated", v, "apply-remote: the updated row is inserted")
	require.Equal(t, int64(2), mergeStatus(t, p2).Conflicts)

	// keep-local: the target's row stays; a delete of a missing key does nothing.
	out, err = skiff(t, "subscribe", "--provider", p2.prov, "--target", p2.tgt, "--queue", "q", "--merge", "--on-conflict", "keep-local")
	require.NoError(t, err, out)
	w2.Stop()
	require.NoError(t, w2.Err())
	w2 = startMergeWorker(t, ctx, p2.prov, p2.tgt, c2)
	exec1(t, prov1, `INSERT INTO m VALUES (999997, 'p1', 'local', 1)`)
	mergeCaughtUp(t, p1, names[0], time.Minute)
	exec1(t, tgt, `DELETE FROM m WHERE id = $1`, del)
	exec1(t, prov2, `INSERT INTO m VALUES (999997, 'p2', 'remote', 2)`)
	exec1(t, prov2, `DELETE FROM m WHERE id = $1`, del)
	mergeCaughtUp(t, p2, c2, time.Minute)
	require.NoError(t, tgt.QueryRow(ctx, `SELECT v FROM m WHERE id = 999997`).Scan(&v))
	require.Equal(t, "local", v, "keep-local: the target's row stays")
	st = mergeStatus(t, p2)
	require.Equal(t, "keep-local", st.Merge)
	require.Equal(t, int64(4), st.Conflicts)
	require.Contains(t, st.LastConflict, "keep-local")
	require.Empty(t, st.LastError, "applied since")

	// The union, the overlapping keys as settled: 999999 p2's (apply-remote), 999997 p1's
	// (keep-local).
	compareMerged(t, tgt, []*pgx.Conn{prov1, prov2}, map[int]int{999999: 1, 999997: 0})

	// A TRUNCATE on a provider stops its worker; the other provider's rows stay.
	exec1(t, prov1, `TRUNCATE m`)
	select {
	case <-w1.Stopped():
	case <-time.After(2 * time.Minute):
		t.Fatal("p1's worker did not stop on the TRUNCATE")
	}
	require.ErrorContains(t, w1.Err(), `TRUNCATE`)
	require.ErrorContains(t, w1.Err(), `merged table "public"."m"`)
	var n1, n2 int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FILTER (WHERE src = 'p1'), count(*) FILTER (WHERE src = 'p2') FROM m`).Scan(&n1, &n2))
	require.Positive(t, n1, "p1's rows stay")
	require.Positive(t, n2, "p2's rows stay")
	w2.Stop()
	require.NoError(t, w2.Err())
	cancel()
	wg.Wait()
}

// mergeWriter runs random transactions on table m of a provider until ctx ends, every key in
// [rng[0], rng[1]): inserts, updates, key-changing updates, deletes, a row inserted and
// deleted in one transaction.
func mergeWriter(t *testing.T, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, keys [2]int, src string, commits *atomic.Int64) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 11))
		key := func() int { return keys[0] + r.IntN(keys[1]-keys[0]) }
		for ctx.Err() == nil {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				for range 1 + r.IntN(6) {
					var err error
					switch x := r.IntN(100); {
					case x < 40:
						k := key()
						_, err = tx.Exec(ctx, `INSERT INTO m SELECT $1, $2, $3, 0 WHERE NOT EXISTS (SELECT 1 FROM m WHERE id = $1)`, k, src, randText(r))
					case x < 65:
						_, err = tx.Exec(ctx, `UPDATE m SET v = $1, n = n + 1 WHERE id = (SELECT id FROM m ORDER BY random() LIMIT 1)`, randText(r))
					case x < 75:
						k := key()
						_, err = tx.Exec(ctx, `UPDATE m SET id = $1 WHERE id = (SELECT id FROM m ORDER BY random() LIMIT 1) AND NOT EXISTS (SELECT 1 FROM m WHERE id = $1)`, k)
					case x < 90:
						_, err = tx.Exec(ctx, `DELETE FROM m WHERE id = (SELECT id FROM m ORDER BY random() LIMIT 1)`)
					default:
						k := key()
						if _, err = tx.Exec(ctx, `INSERT INTO m SELECT $1, $2, 'short-lived', 0 WHERE NOT EXISTS (SELECT 1 FROM m WHERE id = $1)`, k, src); err == nil {
							_, err = tx.Exec(ctx, `DELETE FROM m WHERE id = $1 AND v = 'short-lived'`, k)
						}
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				t.Errorf("writer %s: %v", src, err)
				return
			}
			commits.Add(1)
		}
	}()
}

// mergeCaughtUp ticks queue q of a provider once more and waits until the target has
// applied that tick for its subscription (consumer): the pair harness's caughtUp reads any
// subscription of the queue, and here there is one per provider.
func mergeCaughtUp(t *testing.T, p *pair, consumer string, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	tick, err := queue.ForceTick(ctx, prov, "q")
	require.NoError(t, err)
	pgtest.Eventually(t, timeout, "target catches up with queue q of "+consumer, func() bool {
		var at *int64
		err := tgt.QueryRow(ctx, `SELECT tick FROM skiff.subscription WHERE queue = 'q' AND consumer = $1`, consumer).Scan(&at)
		return err == nil && at != nil && *at >= tick
	})
}

// mergeConsumers lists the consumers of the target's subscriptions of queue q.
func mergeConsumers(t *testing.T, tgt *pgx.Conn) []string {
	t.Helper()
	rows, err := tgt.Query(context.Background(), `SELECT consumer FROM skiff.subscription WHERE queue = 'q' ORDER BY sub_id`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// startMergeWorker starts a worker service of queue q for consumer on a provider; the caller
// checks how it ends.
func startMergeWorker(t *testing.T, ctx context.Context, prov, tgt, consumer string) *worker.Service {
	t.Helper()
	svc, err := worker.New(worker.Config{
		Provider: prov, Target: tgt,
		Queues:     []worker.Queue{{Name: "q", Consumer: consumer}},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		Log: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	require.NoError(t, svc.Start(ctx))
	t.Cleanup(svc.StopAndCancel)
	return svc
}

// mergeSub is the part of skiff status --json this test reads.
type mergeSub struct {
	Merge        string `json:"merge"`
	Conflicts    int64  `json:"conflicts"`
	LastConflict string `json:"last_conflict"`
	LastError    string `json:"last_error"`
}

// mergeStatus runs skiff status --json for a pair and returns its consumer's subscription.
func mergeStatus(t *testing.T, p *pair) mergeSub {
	t.Helper()
	out, _ := skiff(t, "status", "--provider", p.prov, "--target", p.tgt, "--json") // exit 1 with a problem listed
	i := strings.Index(out, "{\n")
	require.GreaterOrEqual(t, i, 0, out)
	var rep struct {
		Queues []struct {
			Name      string `json:"name"`
			Consumers []struct {
				Subscription *mergeSub `json:"subscription"`
			} `json:"consumers"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal([]byte(out[i:]), &rep), out)
	for _, q := range rep.Queues {
		for _, c := range q.Consumers {
			if q.Name == "q" && c.Subscription != nil {
				return *c.Subscription
			}
		}
	}
	t.Fatalf("no subscription of queue q in: %s", out)
	return mergeSub{}
}

// compareMerged asserts that table m of the target holds exactly the union of the providers'
// rows, row by row; prefer names, for a key several providers hold, whose row the target
// must have (by index in provs). It fails on a key held twice without a preference.
func compareMerged(t *testing.T, tgt *pgx.Conn, provs []*pgx.Conn, prefer map[int]int) {
	t.Helper()
	ctx := context.Background()
	read := func(c *pgx.Conn) map[int]string {
		rows, err := c.Query(ctx, `SELECT id, src, coalesce(v, '<NULL>'), n FROM m`)
		require.NoError(t, err)
		out := map[int]string{}
		var id, n int
		var src, v string
		_, err = pgx.ForEachRow(rows, []any{&id, &src, &v, &n}, func() error {
			out[id] = fmt.Sprintf("%s|%q|%d", src, v, n)
			return nil
		})
		require.NoError(t, err)
		return out
	}
	want := map[int]string{}
	from := map[int]int{}
	for i, c := range provs {
		for id, row := range read(c) {
			if j, dup := from[id]; dup {
				w, ok := prefer[id]
				require.True(t, ok, "key %d is on providers %d and %d", id, j, i)
				if w != i {
					continue
				}
			}
			want[id], from[id] = row, i
		}
	}
	got := read(tgt)
	var diffs []string
	for id, row := range want {
		if got[id] != row {
			diffs = append(diffs, fmt.Sprintf("id %d: provider %d has %s, target %q", id, from[id], row, got[id]))
		}
	}
	for id, row := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("id %d: only on the target: %s", id, row))
		}
	}
	sort.Strings(diffs)
	require.Empty(t, diffs, "target = union of the providers (%d rows wanted, %d on the target)", len(want), len(got))
	t.Logf("table m: %d rows of %d providers compared", len(want), len(provs))
}
