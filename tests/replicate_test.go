package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// versionPairs are the provider → target pairs the replication tests run, from the installed
// versions (SKIFF_PG_BINDIRS adds older ones, e.g. a self-built 8.4).
func versionPairs() [][2]string {
	majors := pgtest.Majors() // newest first
	if len(majors) < 2 {
		return nil
	}
	newest, oldest := majors[0], majors[len(majors)-1]
	// The move skiff exists for (oldest to newest), the way back (newest to oldest, as a
	// fallback after a cut-over would run), and Debian's 15 to itself.
	out := [][2]string{{oldest, newest}}
	if !envOn("SKIFF_PAIRS_FORWARD") { // CI (time-bounded) runs the forward move only
		out = append(out, [2]string{newest, oldest})
	}
	for _, v := range majors {
		if v == "15" {
			out = append(out, [2]string{"15", "15"})
		}
	}
	return out
}

// forEachPair runs test as a parallel subtest ("10to18", "18to10", "15to15") for each pair of
// versionPairs, or for the default version to itself when no pair is installed.
func forEachPair(t *testing.T, test func(t *testing.T, provVersion, tgtVersion string)) {
	pairs := versionPairs()
	if len(pairs) == 0 {
		pairs = [][2]string{{"", ""}}
	}
	for _, vp := range pairs {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			test(t, vp[0], vp[1])
		})
	}
}

// TestReplicateConcurrentWriters: two queues, concurrent writers, ticks and workers running
// at once; when the writers stop and the workers catch up, both sides hold the same rows. For
// both sources: the trigger queue and logical decoding.
func TestReplicateConcurrentWriters(t *testing.T) {
	t.Parallel()
	forEachSource(t, func(t *testing.T, provVersion, tgtVersion string, src source) {
		p := newWorkloadPair(t, provVersion, tgtVersion, src)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		ticker(t, ctx, &wg, p.prov, 100*time.Millisecond, "qa", "qb")
		var wctx, wstop = context.WithCancel(ctx)
		var wwg sync.WaitGroup
		txs := make([]int64, 4)
		writer(t, wctx, &wwg, p.prov, 1, "qa", &txs[0])
		writer(t, wctx, &wwg, p.prov, 2, "qa", &txs[1])
		writer(t, wctx, &wwg, p.prov, 3, "qb", &txs[2])
		writer(t, wctx, &wwg, p.prov, 4, "qb", &txs[3])
		p.runWorker(t, ctx, &wg, "qa")
		p.runWorker(t, ctx, &wg, "qb")

		// Let the workers chase the writers for a while, then stop the writers.
		tgt := connect(t, p.tgt)
		pgtest.Eventually(t, 2*time.Minute, "batches applied while writers run", func() bool {
			var n int64
			_ = tgt.QueryRow(context.Background(), `SELECT coalesce(sum(events_applied), 0) FROM skiff.subscription`).Scan(&n)
			return n > 15000
		})
		wstop()
		wwg.Wait()
		p.caughtUp(t, 2*time.Minute, "qa", "qb")
		cancel()
		wg.Wait()
		t.Logf("writer transactions: %v", txs)
		p.compare(t, allTables()...)
	})
}

// TestMissingTargetTable: a target table that goes missing stops replication with an error
// naming it (recorded on the target); once it is back, replication resumes where it stopped.
func TestMissingTargetTable(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", workloadDDL)
	p.capture(t, "qa", workloadTables["qa"]...)
	p.subscribe(t, "qa")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 100*time.Millisecond, "qa")
	p.runWorker(t, ctx, &wg, "qa")

	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `INSERT INTO a1 SELECT g, 'before', g FROM generate_series(1, 100) g`)
	p.caughtUp(t, time.Minute, "qa")
	exec1(t, tgt, `ALTER TABLE a1 RENAME TO a1_away`)
	exec1(t, prov, `INSERT INTO a1 SELECT g, 'during', g FROM generate_series(101, 200) g`)
	exec1(t, prov, `UPDATE a1 SET v = 'changed' WHERE id <= 10`)

	var lastErr string
	pgtest.Eventually(t, time.Minute, "the error is recorded on the target", func() bool {
		var e *string
		_ = tgt.QueryRow(context.Background(), `SELECT last_error FROM skiff.subscription WHERE queue = 'qa'`).Scan(&e)
		if e != nil {
			lastErr = *e
		}
		return e != nil
	})
	require.Contains(t, lastErr, `table "public"."a1" does not exist on the target`)
	require.Contains(t, lastErr, "event")

	exec1(t, tgt, `ALTER TABLE a1_away RENAME TO a1`)
	p.caughtUp(t, time.Minute, "qa")
	var e *string
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT last_error FROM skiff.subscription WHERE queue = 'qa'`).Scan(&e))
	require.Nil(t, e, "the error is cleared once the batch is applied")
	p.compare(t, workloadTables["qa"]...)
}

// TestSubscribeChecksTarget: subscribe names the table or column the target lacks, and maps
// --table T:DEST.
func TestSubscribeChecksTarget(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `CREATE TABLE s1 (id int PRIMARY KEY, v text, extra text);`)
	tgt := connect(t, p.tgt)
	exec1(t, tgt, `ALTER TABLE s1 DROP COLUMN extra; CREATE SCHEMA other; CREATE TABLE other.s1_renamed (id int PRIMARY KEY, v text, extra text)`)
	p.capture(t, "qs", "public.s1")

	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "--no-copy", "--consumer", "c1")
	require.Error(t, err)
	require.Contains(t, out, `column \"extra\" of table \"public\".\"s1\"`)

	out = p.subscribe(t, "qs", "--table", "s1:other.s1_renamed")
	require.Contains(t, out, `"public"."s1" -> "other"."s1_renamed" (in-sync)`)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 100*time.Millisecond, "qs")
	p.runWorker(t, ctx, &wg, "qs")
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO s1 VALUES (1, 'one', 'x'), (2, 'two', NULL)`)
	p.caughtUp(t, time.Minute, "qs")
	require.Equal(t, dumpTable(t, prov, "s1"), dumpTable(t, tgt, "other.s1_renamed"))
}

// TestSubscribeWithHandler: a column the target lacks is excluded by the built-in columns
// handler chosen per table at subscribe time; the worker applies the rest.
func TestSubscribeWithHandler(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `CREATE TABLE h1 (id int PRIMARY KEY, secret text, v text);`)
	tgt := connect(t, p.tgt)
	exec1(t, tgt, `ALTER TABLE h1 DROP COLUMN secret; ALTER TABLE h1 RENAME v TO value`)
	p.capture(t, "qh", "public.h1")
	out := p.subscribe(t, "qh", "--handler", "h1=columns", "--handler-config", `h1={"exclude": ["secret"], "rename": {"v": "value"}}`)
	require.Contains(t, out, `"public"."h1" -> "public"."h1" (in-sync)`)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 100*time.Millisecond, "qh")
	p.runWorker(t, ctx, &wg, "qh")
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO h1 VALUES (1, 'pw1', 'one'), (2, 'pw2', 'two'); UPDATE h1 SET v = 'uno', secret = 'x' WHERE id = 1`)
	p.caughtUp(t, time.Minute, "qh")
	require.Equal(t, []string{"(1,uno)", "(2,two)"}, dumpTable(t, tgt, "h1"))
}
