package tests

import (
	"context"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
	"github.com/skiffdb/skiff/queue"
)

// source is how a test pair's queues capture: the trigger source (the zero value) or the
// logical-decoding source with an output plugin.
type source struct {
	plugin string // "" for the trigger source; queue.PluginPgoutput or queue.PluginTestDecoding
}

func (s source) logical() bool { return s.plugin != "" }

// kind is the queue source table add asks for.
func (s source) kind() string {
	if s.logical() {
		return queue.SourceLogical
	}
	return ""
}

// addArgs are the options of skiff table add that create a queue of this source.
func (s source) addArgs() []string {
	if s.logical() {
		return []string{"--source", "logical", "--plugin", s.plugin}
	}
	return nil
}

func (s source) String() string {
	if s.logical() {
		return "logical-" + s.plugin
	}
	return "trigger"
}

// logicalVariant is one provider version and plugin the logical source is tested with.
type logicalVariant struct {
	prov   string
	plugin string
}

// logicalVariants are the providers the logical source's end-to-end tests run on, from the
// installed versions: 10, 15 and 18 when installed (each plugin at least once: pgoutput on 10
// and 18, test_decoding on 15), and a 9.4–9.6 server given with SKIFF_PG_BINDIRS with
// test_decoding (the only plugin before 10). With SKIFF_LOGICAL_ALL=1 every version 9.4+ runs
// with every plugin it has.
func logicalVariants() []logicalVariant {
	var out []logicalVariant
	all := envOn("SKIFF_LOGICAL_ALL")
	for _, v := range pgtest.Majors() {
		num := versionNum(v)
		switch {
		case num < 90400:
		case num < 100000:
			out = append(out, logicalVariant{v, queue.PluginTestDecoding})
		case all:
			out = append(out, logicalVariant{v, queue.PluginPgoutput}, logicalVariant{v, queue.PluginTestDecoding})
		case v == "10" || v == "18":
			out = append(out, logicalVariant{v, queue.PluginPgoutput})
		case v == "15":
			out = append(out, logicalVariant{v, queue.PluginTestDecoding})
		}
	}
	if len(out) == 0 {
		// Only one server installed (or none of those versions): the default one.
		if versionNum(pgtest.DefaultVersion()) >= 100000 {
			out = append(out, logicalVariant{"", queue.PluginPgoutput})
		} else if versionNum(pgtest.DefaultVersion()) >= 90400 {
			out = append(out, logicalVariant{"", queue.PluginTestDecoding})
		}
	}
	return out
}

func envOn(name string) bool {
	v, _ := strconv.ParseBool(os.Getenv(name))
	return v
}

// versionNum turns a major version ("9.4", "15") into a server_version_num floor (90400,
// 150000); 0 for "".
func versionNum(v string) int {
	if v == "" {
		return 0
	}
	parts := strings.SplitN(v, ".", 2)
	major, _ := strconv.Atoi(parts[0])
	if major >= 10 {
		return major * 10000
	}
	minor := 0
	if len(parts) == 2 {
		minor, _ = strconv.Atoi(parts[1])
	}
	return major*10000 + minor*100
}

// forEachSource runs test for the trigger source over forEachPair's version pairs, and for the
// logical source over logicalVariants, each provider replicating to the default target
// version: the same test code for both kinds of queue. Subtests are named
// "trigger/10to18", "logical-pgoutput/18to15", ...
func forEachSource(t *testing.T, test func(t *testing.T, provVersion, tgtVersion string, src source)) {
	t.Run("trigger", func(t *testing.T) {
		t.Parallel()
		forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) { test(t, provVersion, tgtVersion, source{}) })
	})
	forEachLogical(t, test)
}

// forEachLogical runs test as a parallel subtest for each of logicalVariants, each provider
// replicating to the default target version.
//
// With SKIFF_LOGICAL_ONE=1 (CI, whose time is bounded) each test runs one of the variants,
// chosen by a hash of the test's name, so that the suite as a whole still covers them all.
func forEachLogical(t *testing.T, test func(t *testing.T, provVersion, tgtVersion string, src source)) {
	variants := logicalVariants()
	if envOn("SKIFF_LOGICAL_ONE") && len(variants) > 1 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(t.Name()))
		variants = variants[h.Sum32()%uint32(len(variants)) : h.Sum32()%uint32(len(variants))+1]
	}
	for _, lv := range variants {
		src := source{plugin: lv.plugin}
		name := lv.prov
		if name == "" {
			name = pgtest.DefaultVersion()
		}
		t.Run(src.String()+"/"+name+"to"+pgtest.DefaultVersion(), func(t *testing.T) {
			t.Parallel()
			test(t, lv.prov, "", src)
		})
	}
}

// forEachSourceDefault is forEachSource with the trigger source on the default version only
// (for the long tests that ran on one pair before the logical source).
func forEachSourceDefault(t *testing.T, test func(t *testing.T, provVersion, tgtVersion string, src source)) {
	t.Run("trigger", func(t *testing.T) {
		t.Parallel()
		test(t, "", "", source{})
	})
	forEachLogical(t, test)
}

// slotsCaughtUp waits until the target has everything the provider committed before the
// call, for logical queues: the slot of each queue's consumer c1 has confirmed (after the
// target committed, or, with nothing pending, as the stream went idle) a position at or past
// the provider's WAL position now.
func (p *pair) slotsCaughtUp(t testing.TB, timeout time.Duration, queues ...string) {
	t.Helper()
	ctx := context.Background()
	prov := connect(t, p.prov)
	version := pg.ServerVersion(prov)
	now := `SELECT pg_catalog.pg_current_wal_lsn()::text`
	if version < 100000 {
		now = `SELECT pg_catalog.pg_current_xlog_location()::text`
	}
	var target string
	require.NoError(t, prov.QueryRow(ctx, now).Scan(&target))
	for _, q := range queues {
		slot, err := queue.ConsumerSlot(ctx, prov, q, "c1")
		require.NoError(t, err)
		var lastCompare time.Time
		pgtest.Eventually(t, timeout, "queue "+q+" applied up to "+target, func() bool {
			// The slot's confirmed position (9.6+), else the target's.
			var done bool
			confirmed := `SELECT coalesce(confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1`
			if version < 90600 {
				// No confirmed position to read before 9.6, and the target's LSN (the end of
				// the last applied commit) stays below the provider's WAL position when other
				// WAL follows: caught up once the queue's tables hold the same rows (the
				// writers have stopped), as skiff compare judges them (exactly: float8 text
				// differs between 9.x and 12+), at most every half second.
				if time.Since(lastCompare) < 500*time.Millisecond {
					return false
				}
				lastCompare = time.Now()
				_, err := skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", q)
				return err == nil
			}
			err := prov.QueryRow(ctx, confirmed, slot.Name, target).Scan(&done)
			if err == pgx.ErrNoRows {
				t.Fatalf("queue %s: slot %s is gone", q, slot.Name)
			}
			require.NoError(t, err)
			return done
		})
	}
}

// TestLogicalVariants: the variants cover both plugins when the matrix has 10, 15 and 18.
func TestLogicalVariants(t *testing.T) {
	t.Parallel()
	vs := logicalVariants()
	majors := pgtest.Majors()
	if !slices.Contains(majors, "10") || !slices.Contains(majors, "15") || !slices.Contains(majors, "18") || envOn("SKIFF_LOGICAL_ALL") {
		t.Skip("the matrix lacks 10, 15 or 18")
	}
	var plugins []string
	for _, v := range vs {
		plugins = append(plugins, v.prov+":"+v.plugin)
	}
	require.Subset(t, plugins, []string{"10:pgoutput", "15:test_decoding", "18:pgoutput"})
}

// TestLogicalCopyOfIdleTablesGoesInSync: tables copied by skiff subscribe under a logical
// queue whose tables nobody writes afterwards still go in-sync: the stream's applied position
// never moves, but the idle stream confirms the WAL the server decoded, past the copy's point
// (the worker's own stream says so: on 9.4 and 9.5 the slot does not show its confirmed
// position). The slot's WAL kept stays small meanwhile.
func TestLogicalCopyOfIdleTablesGoesInSync(t *testing.T) {
	t.Parallel()
	forEachLogical(t, testLogicalCopyOfIdleTables)
}

func testLogicalCopyOfIdleTables(t *testing.T, provVersion, tgtVersion string, src source) {
	p := newPair(t, provVersion, tgtVersion, `CREATE TABLE idle1 (id int PRIMARY KEY, v text);
		CREATE TABLE idle2 (id int PRIMARY KEY, v text)`)
	p.src = src
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO idle1 SELECT g, 'v' || g FROM generate_series(1, 500) g`)
	exec1(t, prov, `INSERT INTO idle2 SELECT g, NULL FROM generate_series(1, 10) g`)
	p.capture(t, "lq", "idle1", "idle2")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "lq", "--consumer", "c1")
	require.NoError(t, err, out)
	require.Contains(t, out, "replication slot skiff_d")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.runWorkerConfig(t, ctx, &wg, "lq", func(c *worker.Config) { c.ManagerInterval = 200 * time.Millisecond })
	defer func() {
		if t.Failed() {
			tgt := connect(t, p.tgt)
			rows, _ := tgt.Query(context.Background(), `SELECT source_name, state, coalesce(copy_snapshot, '') FROM skiff.table_state`)
			for rows.Next() {
				var a, b, c string
				_ = rows.Scan(&a, &b, &c)
				t.Logf("table state: %s %s %s", a, b, c)
			}
			rows.Close()
			slots, _ := queue.SlotStates(context.Background(), prov)
			t.Logf("slots (confirmed position 9.6+, else restart position): %+v", slots)
		}
	}()
	p.inSync(t, 2*time.Minute, "lq")
	p.caughtUp(t, time.Minute, "lq")
	cancel()
	wg.Wait()
	p.compare(t, "idle1", "idle2")
}
