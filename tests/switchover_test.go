package tests

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

const switchoverDDL = `
CREATE TABLE ex (id bigint PRIMARY KEY, v text);
CREATE TABLE seqt (id serial PRIMARY KEY, v text);
INSERT INTO ex SELECT g, 'v' || g FROM generate_series(1, 100) g;
INSERT INTO seqt (v) SELECT 's' || g FROM generate_series(1, 20) g;
`

// switchoverPairs: the move skiff exists for (the oldest installed to the newest) and 15 to
// itself; the default version to itself when no matrix is installed.
func switchoverPairs() [][2]string {
	majors := pgtest.Majors() // newest first
	var out [][2]string
	if len(majors) >= 2 {
		out = append(out, [2]string{majors[len(majors)-1], majors[0]})
	}
	for _, v := range majors {
		if v == "15" {
			out = append(out, [2]string{"15", "15"})
		}
	}
	if len(out) == 0 {
		out = append(out, [2]string{"", ""})
	}
	return out
}

// app is an application writing to the queue's tables: each transaction inserts a row into
// ex (and, once extra is set, fills column extra), updates an older one and inserts into seqt
// (its id from the sequence). When the database it writes to refuses with SQLSTATE 25006 —
// skiff switchover's write block — it records the time, waits until moved is closed (the
// switchover said NEW is ready) and goes on writing to newURL, as an application whose
// connection string is changed would.
type app struct {
	oldURL, newURL string
	extra          atomic.Bool
	commits        atomic.Int64
	onNew          atomic.Int64 // commits on NEW
	nextID         atomic.Int64
	blockedAt      atomic.Pointer[time.Time]
	blockMsg       atomic.Pointer[string]
	moved          chan struct{}
}

func newApp(oldURL, newURL string) *app {
	a := &app{oldURL: oldURL, newURL: newURL, moved: make(chan struct{})}
	a.nextID.Store(1000)
	return a
}

// run starts n writers until ctx ends.
func (a *app) run(t *testing.T, ctx context.Context, wg *sync.WaitGroup, n int) {
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := connect(t, a.oldURL)
			onNew := false
			for ctx.Err() == nil {
				id := a.nextID.Add(1)
				err := writeTx(ctx, c, func(tx pgx.Tx) error {
					var err error
					if a.extra.Load() {
						_, err = tx.Exec(ctx, `INSERT INTO ex (id, v, extra) VALUES ($1, $2, $3)`, id, fmt.Sprint("w", id), id%100)
					} else {
						_, err = tx.Exec(ctx, `INSERT INTO ex (id, v) VALUES ($1, $2)`, id, fmt.Sprint("w", id))
					}
					if err == nil {
						_, err = tx.Exec(ctx, `UPDATE ex SET v = v || '+' WHERE id = $1`, id/2)
					}
					if err == nil {
						_, err = tx.Exec(ctx, `INSERT INTO seqt (v) VALUES ($1)`, fmt.Sprint("s", id))
					}
					return err
				})
				var pgErr *pgconn.PgError
				switch {
				case err == nil:
					a.commits.Add(1)
					if onNew {
						a.onNew.Add(1)
					}
				case ctx.Err() != nil:
					return
				case errors.As(err, &pgErr) && pgErr.Code == "25006" && !onNew:
					now := time.Now()
					a.blockedAt.CompareAndSwap(nil, &now)
					msg := pgErr.Message
					a.blockMsg.Store(&msg)
					select {
					case <-a.moved:
					case <-ctx.Done():
						return
					}
					c = connect(t, a.newURL)
					onNew = true
				default:
					t.Errorf("app writer: %v", err)
					return
				}
			}
		}()
	}
}

// wrote waits until the app has committed n more transactions.
func (a *app) wrote(t *testing.T, n int64) {
	t.Helper()
	at := a.commits.Load()
	pgtest.Eventually(t, 2*time.Minute, "the application writes", func() bool { return a.commits.Load() >= at+n })
}

// TestSwitchover is the move end to end, per version pair: an application writing a few
// hundred commits/s; skiff execute of ADD COLUMN … DEFAULT and CREATE INDEX mid-stream (the
// application then writes the new column); repair of rows changed by hand on the target (dry
// run checked, then --apply); switchover --dry-run, then switchover --reverse while the
// application writes; the application moves to NEW, its writes reach OLD through the reverse
// replication (ticker and worker as the built binary), which OLD's capture triggers do not
// queue again and OLD's write block does not stop; both sides equal row by row, and skiff
// compare equal both ways. The write freeze is logged.
func TestSwitchover(t *testing.T) {
	t.Parallel()
	for _, vp := range switchoverPairs() {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			testSwitchover(t, vp[0], vp[1])
		})
	}
}

func testSwitchover(t *testing.T, provVersion, tgtVersion string) {
	bg := context.Background()
	p := newPair(t, provVersion, tgtVersion, switchoverDDL)
	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "q", "public.ex", "public.seqt")
	require.NoError(t, err, out)
	p.subscribe(t, "q")
	old, nw := connect(t, p.prov), connect(t, p.tgt)

	fwd, stopFwd := context.WithCancel(bg)
	var fwg sync.WaitGroup
	defer func() { stopFwd(); fwg.Wait() }()
	ticker(t, fwd, &fwg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, fwd, &fwg, "q")

	application := newApp(p.prov, p.tgt)
	actx, stopApp := context.WithCancel(bg)
	var awg sync.WaitGroup
	defer func() { stopApp(); awg.Wait() }()
	application.run(t, actx, &awg, 4)
	start := time.Now()
	application.wrote(t, 200)
	t.Logf("application: %.0f commits/s", float64(application.commits.Load())/time.Since(start).Seconds())

	// DDL through the queue while the application writes.
	out, err = skiff(t, "execute", "--provider", p.prov, "--queue", "q",
		sqlFile(t, "add.sql", "ALTER TABLE ex ADD COLUMN extra integer DEFAULT 7;\n"))
	require.NoError(t, err, out)
	application.extra.Store(true)
	application.wrote(t, 100)
	out, err = skiff(t, "execute", "--provider", p.prov, "--queue", "q", sqlFile(t, "index.sql", "CREATE INDEX ex_extra ON ex (extra);"))
	require.NoError(t, err, out)
	application.wrote(t, 100)

	// Rows changed by hand on the target (rows the application never writes), then repaired;
	// the application pauses so that no row is pending replication.
	stopApp()
	awg.Wait()
	p.caughtUp(t, time.Minute, "q")
	p.sequencesSynced(t, time.Minute, "q")
	exec1(t, nw, `UPDATE ex SET v = 'by hand' WHERE id = 3; DELETE FROM ex WHERE id = 4; INSERT INTO ex (id, v) VALUES (-1, 'stray')`)
	out, err = skiff(t, "repair", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.Error(t, err, out)
	require.Contains(t, out, "dry run: nothing changed")
	require.Contains(t, out, `"public"."ex": 3 rows to fix`)
	for _, want := range []string{`DELETE FROM "public"."ex"`, `UPDATE "public"."ex"`, `INSERT INTO "public"."ex"`} {
		require.Contains(t, out, want)
	}
	var v string
	require.NoError(t, nw.QueryRow(bg, `SELECT v FROM ex WHERE id = 3`).Scan(&v))
	require.Equal(t, "by hand", v, "the dry run changed nothing")
	out, err = skiff(t, "repair", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--apply")
	require.NoError(t, err, out)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)

	actx, stopApp = context.WithCancel(bg)
	application.run(t, actx, &awg, 4)
	application.wrote(t, 100)

	out, err = skiff(t, "switchover", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--reverse", "--dry-run")
	require.NoError(t, err, out)
	require.Contains(t, out, "dry run: nothing changed")
	require.NotContains(t, out, "check FAIL")
	application.wrote(t, 50)
	require.Nil(t, application.blockedAt.Load(), "the dry run blocked nothing")

	out, err = skiff(t, "switchover", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--reverse")
	close(application.moved)
	if at := application.blockedAt.Load(); at != nil {
		t.Logf("the application waited %.3f s (first write refused → the switchover command returned)", time.Since(*at).Seconds())
	}
	require.NoError(t, err, out)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "step ") || strings.HasPrefix(l, "NEW ready") {
			t.Logf("%s", l)
		}
	}
	m := regexp.MustCompile(`write freeze ([0-9.]+) s`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	t.Logf("write freeze: %s s (%s → %s)", m[1], provVersion, tgtVersion)
	require.NotNil(t, application.blockMsg.Load(), "the application met the block")
	require.Contains(t, *application.blockMsg.Load(), "moved to 127.0.0.1:")
	require.Contains(t, *application.blockMsg.Load(), "/"+nw.Config().Database)
	require.NotContains(t, *application.blockMsg.Load(), "password")

	// The way back runs: forward worker stopped, reverse ticker and worker started.
	stopFwd()
	fwg.Wait()
	startProc(t, "ticker", "--db", p.tgt, "--poll", "50ms")
	startProc(t, "worker", "--provider", p.tgt, "--target", p.prov, "--queue", "q")
	pgtest.Eventually(t, time.Minute, "the application writes to NEW", func() bool { return application.onNew.Load() >= 200 })
	stopApp()
	awg.Wait()

	back := &pair{prov: p.tgt, tgt: p.prov}
	back.caughtUp(t, time.Minute, "q")
	back.sequencesSynced(t, time.Minute, "q")
	p.compare(t, "public.ex", "public.seqt")
	out, err = skiff(t, "compare", "--provider", p.tgt, "--target", p.prov, "--queue", "q")
	require.NoError(t, err, out)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)

	// The reverse worker's writes on OLD were not queued again by OLD's capture triggers.
	var queued int
	require.NoError(t, old.QueryRow(bg, `SELECT (SELECT count(*) FROM `+eventTables(t, old, "q")+` e WHERE e.ev_id > 0 AND e.ev_time > $1::timestamptz)`,
		*application.blockedAt.Load()).Scan(&queued))
	require.Zero(t, queued, "OLD queued no event after the switch")
	// OLD stays blocked for the application.
	_, err = old.Exec(bg, `INSERT INTO ex (id, v) VALUES (-2, 'late')`)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code)

	// Switching back (the tables were just compared: --skip-compare): NEW is blocked, the
	// block on OLD is dropped, and the forward replication, started again, takes OLD's
	// writes from where it stood.
	out, err = skiff(t, "switchover", "--provider", p.tgt, "--target", p.prov, "--queue", "q", "--skip-compare")
	require.NoError(t, err, out)
	require.Contains(t, out, "step unblock NEW")
	require.Contains(t, out, "tables not compared (--skip-compare)")
	m = regexp.MustCompile(`write freeze ([0-9.]+) s`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	t.Logf("switching back: write freeze %s s", m[1])
	_, err = nw.Exec(bg, `INSERT INTO ex (id, v) VALUES (-2, 'late')`)
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code)
	again, stopAgain := context.WithCancel(bg)
	defer stopAgain() // before the deferred fwg.Wait
	ticker(t, again, &fwg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, again, &fwg, "q")
	exec1(t, old, `INSERT INTO ex (id, v, extra) VALUES (-5, 'back on OLD', 1); INSERT INTO seqt (v) VALUES ('back on OLD')`)
	p.caughtUp(t, time.Minute, "q")
	p.compare(t, "public.ex", "public.seqt")
}

// eventTables is a FROM item with every event table of queue q on a provider.
func eventTables(t *testing.T, c *pgx.Conn, q string) string {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT skiff.event_table_name(skiff.queue_id($1), n) FROM generate_series(0, 2) n`, q)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = "SELECT ev_id, ev_time FROM " + n
	}
	return "(" + strings.Join(parts, " UNION ALL ") + ")"
}

// TestSwitchoverRefuses: OLD and NEW swapped, the worker not running, a table still copying:
// each refuses with its reason and changes nothing; a step that fails (the tables differ) is
// undone. OLD stays writable every time.
func TestSwitchoverRefuses(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	p := newPair(t, "", "", switchoverDDL)
	p.capture(t, "q", "public.ex", "public.seqt")
	p.subscribe(t, "q")
	old, nw := connect(t, p.prov), connect(t, p.tgt)
	writable := func(id int) {
		t.Helper()
		exec1(t, old, fmt.Sprintf(`INSERT INTO ex (id, v) VALUES (%d, 'still writable')`, id))
		var n int
		require.NoError(t, old.QueryRow(bg, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'skiff_block%'`).Scan(&n))
		require.Zero(t, n, "no write block left on OLD")
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := skiff(t, append([]string{"switchover"}, args...)...)
		require.Error(t, err, out)
		return out
	}

	out := run("--provider", p.tgt, "--target", p.prov, "--queue", "q", "--reverse")
	require.Contains(t, out, "OLD and NEW are swapped: queue q replicates from")
	require.Contains(t, out, "nothing changed")
	writable(-1)
	var n int
	require.NoError(t, nw.QueryRow(bg, `SELECT count(*) FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid WHERE nspname = 'skiff' AND relname = 'queue'`).Scan(&n))
	require.Zero(t, n, "no provider schema installed on NEW")

	out = run("--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.Contains(t, out, "check FAIL worker running")
	require.Contains(t, out, "no worker holds subscription q/c1 on NEW")
	writable(-2)

	out, err := skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "public.ex")
	require.NoError(t, err, out)
	out = run("--provider", p.prov, "--target", p.tgt, "--queue", "q", "--dry-run")
	require.Contains(t, out, `check FAIL tables in sync`)
	require.Contains(t, out, `"public"."ex" is copying`)
	writable(-3)

	// A step that fails is undone: the worker runs, the tables are in sync, but a row was
	// changed by hand on NEW, so the compare step fails after OLD was blocked.
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, ctx, &wg, "q")
	p.inSync(t, time.Minute, "q")
	exec1(t, nw, `UPDATE ex SET v = 'by hand' WHERE id = 5`)
	out = run("--provider", p.prov, "--target", p.tgt, "--queue", "q", "--reverse")
	require.Contains(t, out, "step block writes on OLD")
	require.Contains(t, out, "step compare")
	require.Contains(t, out, "OLD and NEW differ")
	require.Contains(t, out, "switchover failed: every step undone, OLD is writable")
	writable(-4)
	require.NoError(t, nw.QueryRow(bg, `SELECT count(*) FROM skiff.queue`).Scan(&n))
	require.Zero(t, n, "no queue on NEW: the reverse replication was undone (its schema, installed before the freeze, stays)")
	require.NoError(t, nw.QueryRow(bg, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%'`).Scan(&n))
	require.Zero(t, n, "no trigger on NEW")
	exec1(t, nw, `UPDATE ex SET v = 'v5' WHERE id = 5`)
	p.caughtUp(t, time.Minute, "q")
	p.compare(t, "public.ex", "public.seqt")
}

// TestSwitchoverInterrupted: NEW cannot apply OLD's last writes (a lock on NEW holds the
// worker's batch back). The wait gives up after --wait, or the command is interrupted
// (SIGINT) while it waits: either way every step is undone, OLD is writable and the command
// exits 1.
func TestSwitchoverInterrupted(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	p := newPair(t, "", "", switchoverDDL)
	p.capture(t, "q", "public.ex", "public.seqt")
	p.subscribe(t, "q")
	old, nw := connect(t, p.prov), connect(t, p.tgt)
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, ctx, &wg, "q")
	p.caughtUp(t, time.Minute, "q")

	// The worker's next batch waits for this lock.
	lock, err := nw.Begin(bg)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(bg) }()
	_, err = lock.Exec(bg, `LOCK TABLE ex IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	exec1(t, old, `INSERT INTO ex (id, v) VALUES (-1, 'held back')`)

	writable := func(id int) {
		t.Helper()
		exec1(t, old, fmt.Sprintf(`INSERT INTO ex (id, v) VALUES (%d, 'still writable')`, id))
		var n int
		require.NoError(t, old.QueryRow(bg, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'skiff_block%'`).Scan(&n))
		require.Zero(t, n, "no write block left on OLD")
	}

	out, err := skiff(t, "switchover", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--wait", "2s")
	require.Error(t, err, out)
	require.Contains(t, out, "step wait for NEW")
	require.Regexp(t, `NEW is at tick \d+ after 2s, not yet at \d+`, out)
	require.Contains(t, out, "switchover failed: every step undone, OLD is writable")
	writable(-2)

	cmd := exec.Command(skiffBinary(t), "--log-format", "json", "switchover", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--reverse")
	po := &procOut{}
	cmd.Stdout, cmd.Stderr = po, po
	require.NoError(t, cmd.Start())
	pgtest.Eventually(t, time.Minute, "the switchover waits for NEW", func() bool { return strings.Contains(po.String(), "step block writes on OLD") })
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, po.String())
	require.Equal(t, 1, ee.ExitCode(), po.String())
	require.Contains(t, po.String(), "switchover failed: every step undone, OLD is writable")
	writable(-3)

	require.NoError(t, lock.Rollback(bg))
	p.caughtUp(t, time.Minute, "q")
	p.compare(t, "public.ex", "public.seqt")
}
