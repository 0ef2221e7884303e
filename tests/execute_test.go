package tests

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/worker"
)

const executeDDL = `
CREATE TABLE ex (id bigint PRIMARY KEY, v text);
CREATE TABLE other (id integer PRIMARY KEY, n integer);
INSERT INTO ex SELECT g, 'v' || g FROM generate_series(1, 100) g;
INSERT INTO other SELECT g, g FROM generate_series(1, 10) g;
`

// sqlFile writes an SQL file for skiff execute.
func sqlFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

// exWriter writes to table ex until ctx ends: an insert and an update per transaction; once
// extra is set, the writes fill column extra too. It counts its commits in n.
func exWriter(t *testing.T, ctx context.Context, wg *sync.WaitGroup, url string, extra *atomic.Bool, n *atomic.Int64) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for id := int64(1000); ctx.Err() == nil; id++ {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				if extra.Load() {
					if _, err := tx.Exec(ctx, `INSERT INTO ex (id, v, extra) VALUES ($1, $2, $3)`, id, fmt.Sprint("w", id), id%100); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `UPDATE ex SET v = v || '+', extra = extra + 1 WHERE id = $1`, id/2)
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO ex (id, v) VALUES ($1, $2)`, id, fmt.Sprint("w", id)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `UPDATE ex SET v = v || '+' WHERE id = $1`, id/2)
				return err
			})
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("writer: %v", err)
				}
				return
			}
			n.Add(1)
		}
	}()
}

// TestExecuteMidStream: skiff execute of ALTER TABLE … ADD COLUMN … DEFAULT and of CREATE
// INDEX while writes go on (writing the new column once it exists); every target runs them at
// their point of the stream; the rows compare equal, row by row. On 15 → 15 and from the
// oldest provider installed (8.4 with SKIFF_PG_BINDIRS) to 15.
func TestExecuteMidStream(t *testing.T) {
	t.Parallel()
	for _, vp := range repairPairs() {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			testExecuteMidStream(t, vp[0], vp[1])
		})
	}
}

func testExecuteMidStream(t *testing.T, provVersion, tgtVersion string) {
	p := newPair(t, provVersion, tgtVersion, executeDDL)
	p.capture(t, "q", "public.ex", "public.other")
	p.subscribe(t, "q")
	tgt := connect(t, p.tgt)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "q")
	logs := &procOut{}
	p.runWorkerConfig(t, ctx, &wg, "q", func(c *worker.Config) { c.Log = slog.New(slog.NewJSONHandler(logs, nil)) })
	wctx, stopWrites := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	var extra atomic.Bool
	var commits atomic.Int64
	exWriter(t, wctx, &wwg, p.prov, &extra, &commits)
	wrote := func(n int64) {
		at := commits.Load()
		pgtest.Eventually(t, time.Minute, "writes go on", func() bool { return commits.Load() >= at+n })
	}
	wrote(50)

	out, err := skiff(t, "execute", "--provider", p.prov, "--queue", "q",
		sqlFile(t, "add.sql", "-- a new column\nALTER TABLE ex ADD COLUMN extra integer DEFAULT 7;\n"))
	require.NoError(t, err, out)
	require.Contains(t, out, "add.sql: executed on the provider, queued as event")
	require.Contains(t, out, `capture of "public"."ex" refreshed`)
	extra.Store(true)
	wrote(50)
	out, err = skiff(t, "execute", "--provider", p.prov, "--queue", "q", sqlFile(t, "index.sql", "CREATE INDEX ex_extra ON ex (extra);"))
	require.NoError(t, err, out)
	wrote(50)
	stopWrites()
	wwg.Wait()

	p.caughtUp(t, time.Minute, "q")
	cancel()
	wg.Wait()
	var idx, col int
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_class WHERE relname = 'ex_extra' AND relkind = 'i'),
		(SELECT count(*) FROM ex WHERE extra IS NOT NULL)`).Scan(&idx, &col))
	require.Equal(t, 1, idx, "the index exists on the target")
	require.NotContains(t, logs.String(), "batch failed", "no batch failed (the applier sees the new column at once)")
	require.Positive(t, col)
	p.compare(t, "public.ex", "public.other")
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)
}

// TestExecuteBadInput: a file with a syntax error changes nothing on either side and names
// its line; statements that cannot run in a transaction and DML on captured tables are
// refused, changing nothing.
func TestExecuteBadInput(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", executeDDL)
	p.capture(t, "q", "public.ex")
	p.subscribe(t, "q")
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	p.runWorker(t, ctx, &wg, "q")

	columns := func(c *pgx.Conn) int {
		var n int
		require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'ex'::regclass AND attnum > 0 AND NOT attisdropped`).Scan(&n))
		return n
	}
	events := func() int { // rows in the queue's event tables
		rows, err := prov.Query(ctx, `SELECT skiff.event_table_name(skiff.queue_id('q'), n) FROM generate_series(0, 2) n`)
		require.NoError(t, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		total := 0
		for _, name := range names {
			var n int
			require.NoError(t, prov.QueryRow(ctx, `SELECT count(*) FROM `+name).Scan(&n))
			total += n
		}
		return total
	}
	before := events()
	for name, tc := range map[string]struct{ sql, want string }{
		"syntax.sql": {"ALTER TABLE ex ADD COLUMN a integer;\n\nALTER TABLE ex\n  ADD COLUMN b integer DEFAULT 1 + ;\n", "syntax.sql line 4: ERROR: syntax error at"},
		"concurrently.sql": {"ALTER TABLE ex ADD COLUMN a integer;\nCREATE INDEX CONCURRENTLY ex_a ON ex (a);",
			"concurrently.sql line 2: CREATE INDEX cannot run inside a transaction block"},
		"vacuum.sql":   {"VACUUM ex;", "vacuum.sql line 1: VACUUM cannot run inside a transaction block"},
		"commit.sql":   {"ALTER TABLE ex ADD COLUMN a integer; COMMIT;", "commit.sql line 1: COMMIT: execute makes the transaction itself"},
		"set.sql":      {"SET search_path = x;", "use SET LOCAL"},
		"dml.sql":      {"ALTER TABLE ex ADD COLUMN a integer;\nUPDATE ex SET v = 'x' WHERE id = 1;", "the SQL changes rows of tables the queue captures (1 row events)"},
		"unclosed.sql": {"ALTER TABLE ex ADD COLUMN a integer;\nSELECT 'oops;\n", "unclosed.sql line 2: string literal not closed"},
	} {
		out, err := skiff(t, "execute", "--provider", p.prov, "--queue", "q", sqlFile(t, name, tc.sql))
		require.Error(t, err, name)
		require.Contains(t, out, tc.want, name)
		require.Contains(t, out, "nothing changed", name)
	}
	require.Equal(t, 2, columns(prov), "nothing changed on the provider")
	require.Equal(t, before, events(), "nothing queued")
	p.caughtUp(t, time.Minute, "q")
	require.Equal(t, 2, columns(tgt), "nothing changed on the target")
	p.compare(t, "public.ex")
}

// TestExecuteThroughRename: a table the subscription replicates under another name stops the
// worker on an execute of it, with an error naming the statement and the way on; once the
// operator has run the equivalent on the target and set the event aside, replication goes on.
func TestExecuteThroughRename(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", executeDDL+`CREATE TABLE ex_copy (id bigint PRIMARY KEY, v text); INSERT INTO ex_copy SELECT * FROM ex;`)
	p.capture(t, "q", "public.ex")
	p.subscribe(t, "q", "--table", "public.ex:public.ex_copy")
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, ctx, &wg, "q")

	out, err := skiff(t, "execute", "--provider", p.prov, "--queue", "q", sqlFile(t, "add.sql", "ALTER TABLE ex ADD COLUMN extra integer DEFAULT 7;"))
	require.NoError(t, err, out)
	exec1(t, prov, `INSERT INTO ex VALUES (500, 'after', 8)`)
	var msg string
	var event int64
	pgtest.Eventually(t, time.Minute, "the worker stops on the execute event", func() bool {
		var m *string
		var e *int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT last_error, last_error_event FROM skiff.subscription WHERE queue = 'q'`).Scan(&m, &e))
		if m == nil || e == nil {
			return false
		}
		msg, event = *m, *e
		return true
	})
	require.Contains(t, msg, "ALTER TABLE ex ADD COLUMN extra integer DEFAULT 7")
	require.Contains(t, msg, `changes table "public"."ex", which this subscription replicates through a rename to "public"."ex_copy"`)
	require.Contains(t, msg, fmt.Sprintf("skiff event skip --provider P --target T --queue Q --event %d", event))

	out, err = skiff(t, "event", "show", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)
	require.Contains(t, out, fmt.Sprintf("event %d (skiff execute)", event))
	require.Contains(t, out, `tables changed: "public"."ex"`)

	exec1(t, tgt, `ALTER TABLE ex_copy ADD COLUMN extra integer DEFAULT 7`)
	out, err = skiff(t, "event", "skip", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--event", fmt.Sprint(event), "--reason", "ran by hand")
	require.NoError(t, err, out)
	p.caughtUp(t, time.Minute, "q")
	require.Equal(t, dumpTable(t, prov, "ex"), dumpTable(t, tgt, "ex_copy"))
}
