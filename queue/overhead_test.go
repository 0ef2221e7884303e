package queue

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// The capture-overhead measurement: rows/s of single-row INSERT and UPDATE statements on a
// pgbench_accounts-like table without a trigger ("plain"), with skiff's capture ("skiff") and
// with a bare PL/pgSQL trigger inserting NEW::text into a log table ("reference"), in
// autocommit and in transactions of 100 statements. "skiff-ts" adds a timestamptz column, so
// that the capture function carries SET clauses (plain-ts is its baseline).
//
//	SKIFF_BENCH=1 go test ./queue/ -run TestCaptureOverhead -v -count=1
//	go test ./queue/ -run '^$' -bench BenchmarkCapture
var overheadTables = []string{"plain", "skiff", "reference", "plain_ts", "skiff_ts"}

func setupOverhead(t testing.TB) (*provider, *pgx.Conn) {
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	for _, name := range overheadTables {
		ts := ""
		if strings.HasSuffix(name, "_ts") {
			ts = ", ts timestamptz DEFAULT now()"
		}
		exec(t, c, `CREATE TABLE `+name+` (aid int PRIMARY KEY, bid int, abalance int, filler char(84)`+ts+`)`)
		exec(t, c, `INSERT INTO `+name+` (aid, bid, abalance, filler) SELECT g, 1, 0, '' FROM generate_series(1, 10000) g`)
	}
	exec(t, c, `CREATE TABLE reference_log (data text)`)
	exec(t, c, `CREATE FUNCTION reference_trg() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_OP = 'DELETE' THEN INSERT INTO reference_log VALUES (OLD::text);
			ELSE INSERT INTO reference_log VALUES (NEW::text); END IF;
			RETURN NULL;
		END $$`)
	exec(t, c, `CREATE TRIGGER reference_trg AFTER INSERT OR UPDATE OR DELETE ON reference FOR EACH ROW EXECUTE PROCEDURE reference_trg()`)
	for _, name := range []string{"skiff", "skiff_ts"} {
		_, err := AddTable(ctx, c, "bench", TableSpec{Name: name})
		require.NoError(t, err)
	}
	exec(t, c, `VACUUM ANALYZE`)
	return p, c
}

// overheadRun performs n single-row statements of a kind on a table and returns rows/s.
// next numbers the inserted rows across runs.
func overheadRun(ctx context.Context, c *pgx.Conn, table, kind string, n int, next *int) (float64, error) {
	insert := `INSERT INTO ` + table + ` (aid, bid, abalance, filler) VALUES ($1, 1, 0, '')`
	update := `UPDATE ` + table + ` SET abalance = abalance + 1 WHERE aid = $1`
	stmt, inTx := insert, strings.HasSuffix(kind, "-tx")
	if strings.HasPrefix(kind, "update") {
		stmt = update
	}
	start := time.Now()
	var tx pgx.Tx
	var err error
	for i := 0; i < n; i++ {
		if inTx && i%100 == 0 {
			if tx, err = c.Begin(ctx); err != nil {
				return 0, err
			}
		}
		*next++
		key := *next
		if stmt == update {
			key = *next%10000 + 1
		}
		if inTx {
			_, err = tx.Exec(ctx, stmt, key)
		} else {
			_, err = c.Exec(ctx, stmt, key)
		}
		if err != nil {
			return 0, err
		}
		if inTx && (i%100 == 99 || i == n-1) {
			if err := tx.Commit(ctx); err != nil {
				return 0, err
			}
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

var overheadKinds = []string{"insert-autocommit", "update-autocommit", "insert-tx", "update-tx"}

func TestCaptureOverhead(t *testing.T) {
	if os.Getenv("SKIFF_BENCH") == "" {
		t.Skip("a measurement, not a test: set SKIFF_BENCH=1")
	}
	ctx := context.Background()
	_, c := setupOverhead(t)
	cpu := backendCPU(t, c)
	const rounds, n = 7, 3000
	next := map[string]*int{}
	for _, tb := range overheadTables {
		v := 100000
		next[tb] = &v
	}
	// Rounds interleave the tables so that noise from a shared machine hits all alike. Besides
	// wall-clock rows/s, the server backend's CPU time per statement is recorded: on a loaded
	// machine it is the steadier figure of what capture costs the provider.
	rates, cpus := map[string][]float64{}, map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, kind := range overheadKinds {
			for _, tb := range overheadTables {
				before := cpu()
				rate, err := overheadRun(ctx, c, tb, kind, n, next[tb])
				require.NoError(t, err)
				k := tb + "/" + kind
				rates[k] = append(rates[k], rate)
				cpus[k] = append(cpus[k], float64(cpu()-before)*10000/n) // 10 ms ticks → µs/statement
			}
		}
	}
	median := func(m map[string][]float64, k string) float64 {
		v := slices.Clone(m[k])
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nmedian of %d rounds x %d single-row statements (PostgreSQL %s)\n", rounds, n, c.PgConn().ParameterStatus("server_version"))
	fmt.Fprintf(&b, "%-18s %10s %10s %10s %8s %8s %10s %10s %8s\n", "rows/s", "plain", "skiff", "reference", "skiff/p", "ref/p", "plain-ts", "skiff-ts", "ratio")
	for _, kind := range overheadKinds {
		p, s, r := median(rates, "plain/"+kind), median(rates, "skiff/"+kind), median(rates, "reference/"+kind)
		pt, st := median(rates, "plain_ts/"+kind), median(rates, "skiff_ts/"+kind)
		fmt.Fprintf(&b, "%-18s %10.0f %10.0f %10.0f %8.2f %8.2f %10.0f %10.0f %8.2f\n", kind, p, s, r, s/p, r/p, pt, st, st/pt)
	}
	fmt.Fprintf(&b, "%-18s %10s %10s %10s %8s %8s %10s %10s %8s\n", "server CPU µs/stmt", "plain", "skiff", "reference", "p/skiff", "p/ref", "plain-ts", "skiff-ts", "ratio")
	for _, kind := range overheadKinds {
		p, s, r := median(cpus, "plain/"+kind), median(cpus, "skiff/"+kind), median(cpus, "reference/"+kind)
		pt, st := median(cpus, "plain_ts/"+kind), median(cpus, "skiff_ts/"+kind)
		fmt.Fprintf(&b, "%-18s %10.1f %10.1f %10.1f %8.2f %8.2f %10.1f %10.1f %8.2f\n", kind, p, s, r, p/s, p/r, pt, st, pt/st)
	}
	t.Log(b.String())
}

// backendCPU returns a function reading the CPU time (user + system, in 10 ms clock ticks)
// the server process behind c has used so far; the test servers are local processes.
func backendCPU(t *testing.T, c *pgx.Conn) func() int64 {
	var pid uint32
	require.NoError(t, c.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
	return func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err)
		f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+2:])
		u, err := strconv.ParseInt(f[11], 10, 64)
		require.NoError(t, err)
		s, err := strconv.ParseInt(f[12], 10, 64)
		require.NoError(t, err)
		return u + s
	}
}

func BenchmarkCapture(b *testing.B) {
	ctx := context.Background()
	_, c := setupOverhead(b)
	next := 100000
	for _, kind := range overheadKinds {
		for _, tb := range overheadTables {
			b.Run(kind+"/"+tb, func(b *testing.B) {
				rate, err := overheadRun(ctx, c, tb, kind, b.N, &next)
				require.NoError(b, err)
				b.ReportMetric(rate, "rows/s")
			})
		}
	}
}

// TestSourceReadRate measures how fast Source streams and decodes a backlog of events:
//
//	SKIFF_BENCH=1 go test ./queue/ -run TestSourceReadRate -v -count=1
func TestSourceReadRate(t *testing.T) {
	if os.Getenv("SKIFF_BENCH") == "" {
		t.Skip("a measurement, not a test: set SKIFF_BENCH=1")
	}
	ctx := context.Background()
	_, c := setupOverhead(t)
	_, err := RegisterConsumer(ctx, c, "bench", "reader")
	require.NoError(t, err)
	const n = 200000
	exec(t, c, `INSERT INTO skiff (aid, bid, abalance, filler) SELECT g, 1, 0, '' FROM generate_series(100001, 100000 + $1) g`, n)
	exec(t, c, `UPDATE skiff SET abalance = abalance + 1 WHERE aid > 100000`)
	_, err = ForceTick(ctx, c, "bench")
	require.NoError(t, err)
	src, err := NewSource(ctx, c, SourceConfig{Queue: "bench", Consumer: "reader", MaxEvents: 10 * n})
	require.NoError(t, err)
	start := time.Now()
	b, err := src.NextBatch(ctx)
	require.NoError(t, err)
	got := 0
	require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
		got += len(chunk)
		return nil
	}))
	el := time.Since(start)
	require.Equal(t, 2*n, got)
	t.Logf("read %d events in %s: %.0f events/s", got, el.Round(time.Millisecond), float64(got)/el.Seconds())
}

// TestTriggerCostBreakdown measures the capture trigger's cost per row as server CPU time
// (from /proc, so that other load on the machine barely matters): one INSERT … SELECT of
// 100 000 rows into the plain, captured and reference tables, then with parts of skiff's
// trigger taken away in turn, to show what each part costs.
//
//	SKIFF_BENCH=1 go test ./queue/ -run TestTriggerCostBreakdown -v -count=1
func TestTriggerCostBreakdown(t *testing.T) {
	if os.Getenv("SKIFF_BENCH") == "" {
		t.Skip("a measurement, not a test: set SKIFF_BENCH=1")
	}
	ctx := context.Background()
	_, c := setupOverhead(t)
	cpu := backendCPU(t, c)
	const rows = 100000
	perRow := func(table string) float64 {
		best := math.Inf(1)
		for r := 0; r < 5; r++ {
			exec(t, c, `TRUNCATE `+table+`, reference_log, skiff.event_1_0, skiff.event_1_1, skiff.event_1_2`)
			start := cpu()
			exec(t, c, `INSERT INTO `+table+` (aid, bid, abalance, filler) SELECT g, 1, 0, '' FROM generate_series(1, $1) g`, rows)
			best = min(best, float64(cpu()-start)*10000/rows)
		}
		return best
	}
	plain := perRow("plain")
	var out strings.Builder
	fmt.Fprintf(&out, "\nserver CPU µs per inserted row (best of 5 x %d rows): plain %.2f, reference trigger +%.2f\n", rows, plain, perRow("reference")-plain)
	step := func(label string) {
		fmt.Fprintf(&out, "  %-44s +%.2f\n", label, perRow("skiff")-plain)
	}
	var oid uint32
	require.NoError(t, c.QueryRow(ctx, `SELECT 'skiff'::regclass::oid`).Scan(&oid))
	replace := func(body string) {
		exec(t, c, fmt.Sprintf(`CREATE OR REPLACE FUNCTION skiff.capture_q1_t%d() RETURNS trigger LANGUAGE plpgsql AS $f$ %s $f$`, oid, body))
	}
	insert := func(id string) string {
		return `INSERT INTO skiff.event_1_0 (ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra)
			VALUES (` + id + `, pg_catalog.now(), pg_catalog.txid_current(), 'I', 1, NEW::text, NULL);`
	}
	fn := fmt.Sprintf(`skiff.capture_q1_t%d()`, oid)
	step("skiff capture as generated")
	exec(t, c, `ALTER FUNCTION `+fn+` SET search_path = pg_catalog, pg_temp`)
	step("  with search_path SET (capture version 2)")
	exec(t, c, `ALTER FUNCTION `+fn+` RESET search_path`)
	// The TRUNCATE before each round fires the function too: before 9.0 NEW is unassigned
	// there, so the body inserts only for a row.
	replace(`BEGIN IF TG_LEVEL = 'ROW' THEN ` + insert(`pg_catalog.nextval('skiff.event_1_id_seq'::regclass)`) + ` END IF; RETURN NULL; END`)
	step("one INSERT (no TG_OP/epoch IFs, not definer)")
	replace(`BEGIN IF TG_LEVEL = 'ROW' THEN ` + insert(`1`) + ` END IF; RETURN NULL; END`)
	step("  and no nextval")
	for n := 0; n < 3; n++ {
		exec(t, c, fmt.Sprintf(`DROP INDEX skiff.event_1_%d_txid_idx`, n))
	}
	step("  and no ev_txid index")
	t.Log(out.String())
}

// useRowTrigger gives a table captured with a statement-level INSERT trigger (capture version
// 4) the row trigger of capture version 3 instead, calling the same function (which serves
// both).
func useRowTrigger(t testing.TB, c *pgx.Conn, table string, qid int, fn string) {
	t.Helper()
	q := strconv.Itoa(qid)
	exec(t, c, `DROP TRIGGER IF EXISTS skiff_insert_q`+q+` ON `+table)
	exec(t, c, `DROP TRIGGER IF EXISTS skiff_captured_q`+q+` ON `+table)
	exec(t, c, `DROP TRIGGER "!skiff_capture_q`+q+`" ON `+table)
	exec(t, c, `CREATE TRIGGER "!skiff_capture_q`+q+`" AFTER INSERT OR UPDATE OR DELETE ON `+table+` FOR EACH ROW EXECUTE PROCEDURE `+fn)
}

// TestInsertCaptureCost measures what capture costs an INSERT, as server CPU time (schedstat,
// in ns): per row of a bulk INSERT … SELECT, and per one-row INSERT statement in autocommit
// (pgbench's history insert, run by a server-side loop: no client round trip in it), and per
// one-row DELETE statement and per row of a bulk DELETE, for the ways an INSERT can be
// captured from 10 on: the statement-level trigger (InsertTriggerStatement, with its
// never-firing companion skiff_captured_q<n>), the same without the companion, and the row
// trigger (the default); beside the bare PL/pgSQL reference trigger. Rounds
// interleave the tables; each figure is the median over rounds of the difference with the
// plain table in the same round.
//
//	SKIFF_BENCH=1 go test ./queue/ -run TestInsertCaptureCost -v -count=1
func TestInsertCaptureCost(t *testing.T) {
	if os.Getenv("SKIFF_BENCH") == "" {
		t.Skip("a measurement, not a test: set SKIFF_BENCH=1")
	}
	ctx := context.Background()
	_, c := setupOverhead(t)
	if pg.ServerVersionOf(c.PgConn()) < 100000 {
		t.Skip("no statement trigger before 10")
	}
	for _, tb := range []string{"stmt", "stmt_alone"} {
		exec(t, c, `CREATE TABLE `+tb+` (aid int PRIMARY KEY, bid int, abalance int, filler char(84))`)
		_, err := AddTable(ctx, c, "bench", TableSpec{Name: tb, InsertTrigger: InsertTriggerStatement})
		require.NoError(t, err)
	}
	exec(t, c, `DROP TRIGGER skiff_captured_q1 ON stmt_alone`)
	labels := map[string]string{
		"stmt": "statement trigger (--insert-trigger statement)", "stmt_alone": "  without its companion skiff_captured",
		"skiff": "row trigger (the default)", "reference": "bare PL/pgSQL reference trigger",
	}
	tables := []string{"plain", "stmt", "stmt_alone", "skiff", "reference"}
	for _, tb := range tables {
		// One-row statements run by a server-side loop: no client round trip in the figure.
		exec(t, c, `CREATE FUNCTION ins_`+tb+`(a int, n int) RETURNS void LANGUAGE plpgsql AS $$ BEGIN
			FOR i IN a + 1 .. a + n LOOP INSERT INTO `+tb+` (aid, bid, abalance, filler) VALUES (i, 1, 0, ''); END LOOP; END $$`)
		exec(t, c, `CREATE FUNCTION del_`+tb+`(a int, n int) RETURNS void LANGUAGE plpgsql AS $$ BEGIN
			FOR i IN a + 1 .. a + n LOOP DELETE FROM `+tb+` WHERE aid = i; END LOOP; END $$`)
	}
	cpu := backendNanos(t, c)
	const rounds, bulk, single = 11, 20000, 3000
	costs := map[string][]float64{}
	next := 1000000
	for r := 0; r < rounds; r++ {
		got := map[string][4]float64{}
		for _, tb := range tables {
			exec(t, c, `TRUNCATE `+tb+`, reference_log, skiff.event_1_0, skiff.event_1_1, skiff.event_1_2`)
			start := cpu()
			exec(t, c, `INSERT INTO `+tb+` (aid, bid, abalance, filler) SELECT g, 1, 0, '' FROM generate_series(1, $1) g`, bulk)
			mid := cpu()
			exec(t, c, `SELECT ins_`+tb+`($1, $2)`, next, single)
			end := cpu()
			exec(t, c, `SELECT del_`+tb+`($1, $2)`, next, single)
			next += single
			mid2 := cpu()
			exec(t, c, `DELETE FROM `+tb)
			got[tb] = [4]float64{float64(mid-start) / 1000 / bulk, float64(end-mid) / 1000 / single, float64(mid2-end) / 1000 / single, float64(cpu()-mid2) / 1000 / bulk}
		}
		for _, tb := range tables {
			for k := range 4 {
				v := got[tb][k]
				if tb != "plain" {
					v -= got["plain"][k]
				}
				costs[fmt.Sprint(tb, k)] = append(costs[fmt.Sprint(tb, k)], v)
			}
		}
	}
	median := func(k string) float64 {
		v := slices.Clone(costs[k])
		slices.Sort(v)
		return v[len(v)/2]
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nserver CPU µs, median of %d rounds (PostgreSQL %s): per row of a %d-row INSERT; per one-row INSERT statement;"+
		" per one-row DELETE statement; per row of a %d-row DELETE\n", rounds, c.PgConn().ParameterStatus("server_version"), bulk, bulk)
	for _, tb := range tables {
		label, f := labels[tb], "%+10.2f"
		if tb == "plain" {
			label, f = "plain (no trigger)", "%10.2f"
		}
		fmt.Fprintf(&out, "  %-48s", label)
		for k := range 4 {
			fmt.Fprintf(&out, " "+f, median(fmt.Sprint(tb, k)))
		}
		out.WriteString("\n")
	}
	t.Log(out.String())
}

// backendNanos returns a function reading the CPU time, in ns, the server process behind c
// has spent running so far (/proc/<pid>/schedstat; the test servers are local processes).
func backendNanos(t *testing.T, c *pgx.Conn) func() int64 {
	var pid uint32
	require.NoError(t, c.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
	return func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
		require.NoError(t, err)
		n, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		require.NoError(t, err)
		return n
	}
}

// TestSourceBatchOverhead measures what reading one small batch costs on a queue of many
// captured tables (layouts, the catalog of their columns, the batch's query):
//
//	SKIFF_BENCH=1 go test ./queue/ -run TestSourceBatchOverhead -v -count=1
func TestSourceBatchOverhead(t *testing.T) {
	if os.Getenv("SKIFF_BENCH") == "" {
		t.Skip("a measurement, not a test: set SKIFF_BENCH=1")
	}
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	const tables, batches = 200, 200
	for i := range tables {
		exec(t, c, fmt.Sprintf(`CREATE TABLE t%d (id int PRIMARY KEY, a text, b int, c timestamptz, d numeric, e text, f int, g text, h bool, i text)`, i))
		_, err := AddTable(ctx, c, "q", TableSpec{Name: fmt.Sprintf("t%d", i)})
		require.NoError(t, err)
	}
	_, err := RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	var total time.Duration
	for i := range batches {
		exec(t, c, fmt.Sprintf(`INSERT INTO t%d (id) VALUES (%d)`, i%tables, i))
		_, err := ForceTick(ctx, c, "q")
		require.NoError(t, err)
		b, err := src.NextBatch(ctx)
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, src.Events(ctx, b, func([]change.Event) error { return nil }))
		total += time.Since(start)
		require.NoError(t, src.Finish(ctx, b))
	}
	t.Logf("%d tables of 10 columns: Events of a one-event batch takes %s on average", tables, (total / batches).Round(time.Microsecond))
}
