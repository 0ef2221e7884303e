package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// copyRows is the size of the large table of the initial-copy tests: 200k by default,
// SKIFF_E2E_ROWS=1000000 for a million.
func copyRows(t testing.TB) int {
	if s := os.Getenv("SKIFF_E2E_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return n
	}
	if testing.Short() {
		return 20_000
	}
	return 200_000
}

const copyDDL = `
CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text, f float8, ts timestamptz);
CREATE TABLE "Small Table" ("Id" int PRIMARY KEY, "Note" text);
CREATE TABLE third (id int PRIMARY KEY, v text);
CREATE SEQUENCE "Odd Seq";
`

// rowWriter updates, deletes and inserts rows of big, "Small Table" and third on the
// provider until ctx ends.
func rowWriter(t testing.TB, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, n int, txs *atomic.Int64) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 3))
		next := n + 1 + int(seed)*10_000_000
		for ctx.Err() == nil {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				for range 1 + rng.IntN(4) {
					var err error
					switch r := rng.IntN(10); {
					case r < 4:
						_, err = tx.Exec(ctx, `UPDATE big SET v = v + 1, f = f * 1.5, pad = $2 WHERE id = $1`, 1+rng.IntN(n), randText(rng))
					case r < 6:
						_, err = tx.Exec(ctx, `DELETE FROM big WHERE id = $1`, 1+rng.IntN(n))
					case r < 7:
						next++
						_, err = tx.Exec(ctx, `INSERT INTO big VALUES ($1, 0, $2, 0.1, now())`, next, randText(rng))
					case r < 8:
						_, err = tx.Exec(ctx, `UPDATE "Small Table" SET "Note" = $2 WHERE "Id" = $1`, 1+rng.IntN(1000), randText(rng))
					default:
						next++
						_, err = tx.Exec(ctx, `INSERT INTO third VALUES ($1, $2)`, next, randText(rng))
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
				if strings.Contains(err.Error(), "40P01") {
					continue
				}
				t.Errorf("writer: %v", err)
				return
			}
			txs.Add(1)
		}
	}()
}

func loadCopyTables(t testing.TB, p *pair, n int) {
	c := connect(t, p.prov)
	exec1(t, c, fmt.Sprintf(`INSERT INTO big SELECT g, g, 'row ' || g, g / 3.0, '2020-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, %d) g`, n))
	exec1(t, c, `INSERT INTO "Small Table" SELECT g, CASE WHEN g % 2 = 0 THEN '' END FROM generate_series(1, 1000) g`)
	exec1(t, c, `INSERT INTO third SELECT g, 'x' FROM generate_series(1, 100) g`)
	exec1(t, c, `ANALYZE`)
}

func tableStates(t testing.TB, c *pgx.Conn) map[string]string {
	rows, err := c.Query(context.Background(), `SELECT source_name, state || CASE WHEN copy_snapshot IS NULL THEN '' ELSE '+snap' END FROM skiff.table_state`)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var n, s string
		require.NoError(t, rows.Scan(&n, &s))
		out[n] = s
	}
	require.NoError(t, rows.Err())
	return out
}

func allInSync(t testing.TB, c *pgx.Conn) bool {
	for _, s := range tableStates(t, c) {
		if s != "in-sync" && s != "in-sync+snap" {
			return false
		}
	}
	return true
}

func copyHolders(t testing.TB, c *pgx.Conn) int {
	var n int
	require.NoError(t, c.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(0x736b6963)).Scan(&n))
	return n
}

// TestInitialCopyUnderWrites: skiff subscribe copies a large table while writers update,
// delete and insert; the subscribe process is killed in the middle of the copy, the worker
// copies the table again, is itself killed during its copy and restarted; in the end every
// table is in sync and skiff compare finds provider and target equal.
func TestInitialCopyUnderWrites(t *testing.T) {
	t.Parallel()
	forEachSource(t, testInitialCopy)
}

func testInitialCopy(t *testing.T, provVersion, tgtVersion string, src source) {
	n := copyRows(t)
	p := newPair(t, provVersion, tgtVersion, copyDDL)
	p.src = src
	loadCopyTables(t, p, n)
	p.capture(t, "qc", "public.big", `public."Small Table"`, "public.third", `public."Odd Seq"`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qc")
	wctx, wstop := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	var txs atomic.Int64
	for i := range 2 {
		rowWriter(t, wctx, &wwg, p.prov, uint64(i), n, &txs)
	}
	tgt := connect(t, p.tgt)

	// 1. skiff subscribe copies; SIGKILL it once big's copy has its snapshot.
	sub := exec.Command(skiffBinary(t), "--log-format", "json", "subscribe", "--provider", p.prov, "--target", p.tgt,
		"--queue", "qc", "--consumer", "c1", "--copy-parallel", "1")
	var subOut lockedOutput
	sub.Stdout, sub.Stderr = &subOut, &subOut
	require.NoError(t, sub.Start())
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Wait() }()
	killedSub := false
	pgtest.Eventually(t, time.Minute, "subscribe starts copying big (or finishes)", func() bool {
		select {
		case err := <-subDone:
			require.NoError(t, err, subOut.String())
			return true
		default:
		}
		if tableStates(t, tgt)["big"] == "copying+snap" {
			require.NoError(t, sub.Process.Signal(syscall.SIGKILL))
			<-subDone
			killedSub = true
			return true
		}
		return false
	})
	t.Logf("subscribe killed during the copy: %v; states %v", killedSub, tableStates(t, tgt))

	// 2. The worker copies what is left; kill it during its copy, then restart it.
	w := p.startWorkerProc(t, "qc")
	killedWorker := false
	pgtest.Eventually(t, 2*time.Minute, "the worker copies big", func() bool {
		if copyHolders(t, tgt) > 0 && tableStates(t, tgt)["big"] == "copying+snap" {
			require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
			_ = w.cmd.Wait()
			killedWorker = true
			return true
		}
		return tableStates(t, tgt)["big"] != "copying" && tableStates(t, tgt)["big"] != "copying+snap"
	})
	t.Logf("worker killed during its copy: %v; states %v", killedWorker, tableStates(t, tgt))
	if killedWorker {
		w = p.startWorkerProc(t, "qc")
	}
	defer func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", w.out.String())
		}
	}()
	pgtest.Eventually(t, 3*time.Minute, "every table in sync", func() bool { return allInSync(t, tgt) })
	wstop()
	wwg.Wait()
	p.caughtUp(t, 2*time.Minute, "qc")
	t.Logf("%d writer transactions during the test", txs.Load())

	// The sequence advanced on the provider is not behind on the target.
	prov := connect(t, p.prov)
	exec1(t, prov, `SELECT nextval('"Odd Seq"') FROM generate_series(1, 500)`)
	var provSeq int64
	require.NoError(t, prov.QueryRow(ctx, `SELECT last_value FROM "Odd Seq"`).Scan(&provSeq))
	pgtest.Eventually(t, time.Minute, "the target's sequence reaches the provider's", func() bool {
		var v int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT last_value FROM "Odd Seq"`).Scan(&v))
		return v >= provSeq
	})
	var next int64
	require.NoError(t, tgt.QueryRow(ctx, `SELECT nextval('"Odd Seq"')`).Scan(&next))
	require.Greater(t, next, provSeq, "the target's next value is past the provider's last")
	require.Positive(t, txs.Load())

	out, err := skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qc")
	require.NoError(t, err, out)
	if floatTextAlike(t, p) {
		p.compare(t, "public.big", `public."Small Table"`, "public.third")
	} else {
		// float8 text differs between major versions (shortest-exact digits from 12 on); skiff
		// compare above checked big's floats bit for bit (float8send).
		p.compare(t, `public."Small Table"`, "public.third")
	}

	// skiff status --json shows the tables in sync with their copy's size.
	js, err := exec.Command(skiffBinary(t), "status", "--provider", p.prov, "--target", p.tgt, "--json").Output()
	require.NoError(t, err)
	var rep struct {
		Queues []struct {
			Name      string `json:"name"`
			Consumers []struct {
				Name         string `json:"name"`
				Subscription struct {
					Tables []struct {
						Source   string `json:"source"`
						State    string `json:"state"`
						CopyRows int64  `json:"copy_rows"`
					} `json:"tables"`
				} `json:"subscription"`
			} `json:"consumers"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal(js, &rep), string(js))
	require.Len(t, rep.Queues, 1)
	require.Len(t, rep.Queues[0].Consumers, 1)
	tables := rep.Queues[0].Consumers[0].Subscription.Tables
	require.Len(t, tables, 3, string(js))
	for _, tb := range tables {
		require.Equal(t, "in-sync", tb.State, string(js))
		require.Positive(t, tb.CopyRows, string(js))
	}

	// compare notices a row changed by hand on the target.
	exec1(t, tgt, `UPDATE big SET pad = 'changed by hand' WHERE id = (SELECT min(id) FROM big)`)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qc")
	require.Error(t, err)
	require.Equal(t, 1, err.(*exec.ExitError).ExitCode(), out)
	require.Contains(t, out, `"public"."big"`)
	require.Contains(t, out, "DIFFERENT")
	cancel()
	wg.Wait()
}

// TestResyncWhileOthersReplicate: three tables replicate; one is damaged on the target and
// resynced with skiff table resync while writers go on; the others keep replicating
// (their position moves during the resync); a TRUNCATE on the provider is replicated; a table
// added to the running subscription with skiff subscribe --table is copied; in the end all
// are equal.
func TestResyncWhileOthersReplicate(t *testing.T) {
	t.Parallel()
	forEachSource(t, testResync)
}

func testResync(t *testing.T, provVersion, tgtVersion string, src source) {
	n := copyRows(t) / 4
	p := newPair(t, provVersion, tgtVersion, copyDDL+`CREATE TABLE added (id int PRIMARY KEY, v text);`)
	p.src = src
	loadCopyTables(t, p, n)
	exec1(t, connect(t, p.prov), `INSERT INTO added SELECT g, 'a' || g FROM generate_series(1, 5000) g`)
	p.capture(t, "qr", "public.big", `public."Small Table"`, "public.third", "public.added")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qr", "--consumer", "c1",
		"--table", "public.big", "--table", `public."Small Table"`, "--table", "public.third")
	require.NoError(t, err, out)
	tgt := connect(t, p.tgt)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qr")
	w := p.startWorkerProc(t, "qr")
	defer func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", w.out.String())
		}
	}()
	pgtest.Eventually(t, 2*time.Minute, "every table in sync", func() bool { return allInSync(t, tgt) })
	wctx, wstop := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	var txs atomic.Int64
	rowWriter(t, wctx, &wwg, p.prov, 1, n, &txs)

	// Damage big on the target: compare names it.
	exec1(t, tgt, `DELETE FROM big WHERE id % 10 = 0`)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qr")
	require.Error(t, err, out)
	require.Contains(t, out, `"public"."big"`)

	before := appliedPosition(t, tgt)
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qr", "--consumer", "c1", "public.big")
	require.NoError(t, err, out)
	pgtest.Eventually(t, 2*time.Minute, "big copied again and in sync", func() bool {
		return tableStates(t, tgt)["big"] == "in-sync+snap"
	})
	after := appliedPosition(t, tgt)
	require.Greater(t, after, before, "the other tables kept replicating during the resync")

	// TRUNCATE is replicated (on logical providers before 11 through the marker trigger).
	exec1(t, connect(t, p.prov), `TRUNCATE third`)
	exec1(t, connect(t, p.prov), `INSERT INTO third VALUES (-1, 'after truncate')`)

	// A table added to the running subscription is copied and catches up.
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qr", "--consumer", "c1", "--table", "public.added")
	require.NoError(t, err, out)
	pgtest.Eventually(t, 2*time.Minute, "every table in sync", func() bool { return allInSync(t, tgt) })
	wstop()
	wwg.Wait()
	p.caughtUp(t, 2*time.Minute, "qr")
	require.Positive(t, txs.Load())
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qr")
	require.NoError(t, err, out)
	if floatTextAlike(t, p) {
		p.compare(t, "public.big", `public."Small Table"`, "public.third", "public.added")
	} else {
		// The harness compares rows as text, and float8 text differs between major versions
		// (shortest-exact digits from 12 on); skiff compare above checked big's floats bit for
		// bit (float8send).
		p.compare(t, `public."Small Table"`, "public.third", "public.added")
	}
	cancel()
	wg.Wait()
}

// appliedPosition is the position the target's only subscription has applied: its tick
// (trigger queue) or its LSN (logical queue), both growing.
func appliedPosition(t testing.TB, tgt *pgx.Conn) int64 {
	var at int64
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT coalesce(tick, lsn, 0) FROM skiff.subscription`).Scan(&at))
	return at
}

// floatTextAlike: float8 and float4 values print alike on both servers of the pair (the same
// major version, or both 12+: shortest-exact digits).
func floatTextAlike(t testing.TB, p *pair) bool {
	a, b := pg.ServerVersion(connect(t, p.prov)), pg.ServerVersion(connect(t, p.tgt))
	return a/10000 == b/10000 || (a >= 120000 && b >= 120000)
}

// lockedOutput collects a process's output while it runs.
type lockedOutput struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
