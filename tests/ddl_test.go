package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// ddlCase is a provider and a target with table t captured by queue q and subscribed by
// consumer c1 (no copy): the DDL tests script writes, DDL and ticks on it.
type ddlCase struct {
	*pair
	prov, tgt *pgx.Conn
}

const ddlTable = `CREATE TABLE t (id int PRIMARY KEY, a text, b int, c text);`

func newDDLCase(t *testing.T, provVersion, tgtVersion string) *ddlCase {
	t.Helper()
	p := newPair(t, provVersion, tgtVersion, ddlTable)
	p.capture(t, "q", "public.t")
	p.subscribe(t, "q")
	return &ddlCase{pair: p, prov: connect(t, p.prov), tgt: connect(t, p.tgt)}
}

// both runs sql on the provider and on the target.
func (d *ddlCase) both(t *testing.T, sql string) {
	t.Helper()
	exec1(t, d.prov, sql)
	exec1(t, d.tgt, sql)
}

// tick closes the provider transactions committed so far into a tick interval of their own.
func (d *ddlCase) tick(t *testing.T) {
	t.Helper()
	_, err := queue.ForceTick(context.Background(), d.prov, "q")
	require.NoError(t, err)
}

// refresh runs `skiff table add --refresh` for table t, as a DBA would after the DDL.
func (d *ddlCase) refresh(t *testing.T, table string) {
	t.Helper()
	out, err := skiff(t, "table", "add", "--db", d.pair.prov, "--queue", "q", "--refresh", table)
	require.NoError(t, err, out)
}

// workerProc runs `skiff worker` (which also copies resynced tables) until the test ends.
func (d *ddlCase) workerProc(t *testing.T) {
	t.Helper()
	w := d.startWorkerProc(t, "q")
	t.Cleanup(func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", w.out.String())
		}
	})
}

// worker runs an in-process worker until the test ends.
func (d *ddlCase) worker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop) // should runWorker stop half way
	d.runWorker(t, ctx, &wg, "q")
	// Cleanups run last in, first out: the worker stops before runWorker's connections are
	// closed under it (pgx panics on a connection closed while in use).
	t.Cleanup(stop)
}

// caughtUp ticks and waits until the target has applied that tick; on timeout it reports the
// worker's last error.
func (d *ddlCase) caughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	tick, err := queue.ForceTick(ctx, d.prov, "q")
	require.NoError(t, err)
	var lastErr *string
	defer func() {
		if t.Failed() && lastErr != nil {
			t.Logf("the worker's last error: %s", *lastErr)
		}
	}()
	pgtest.Eventually(t, timeout, "the target applies the last tick", func() bool {
		var at *int64
		err := d.tgt.QueryRow(ctx, `SELECT tick, last_error FROM skiff.subscription WHERE queue = 'q'`).Scan(&at, &lastErr)
		require.NoError(t, err)
		return at != nil && *at >= tick
	})
}

// TestDDLAddColumn is issue 11's reproduction: ALTER TABLE ADD COLUMN on both sides, an
// INSERT, then `skiff table add --refresh`. The INSERT's event carries the old layout and a
// row one field wider; the worker must decode it with the added column and go on.
func TestDDLAddColumn(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		d := newDDLCase(t, provVersion, tgtVersion)
		d.worker(t)
		exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
		d.caughtUp(t, time.Minute)
		d.both(t, `ALTER TABLE t ADD COLUMN extra int`)
		exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4', 40)`)
		exec1(t, d.prov, `UPDATE t SET extra = 10 WHERE id = 1`)
		d.refresh(t, "public.t")
		exec1(t, d.prov, `INSERT INTO t VALUES (5, 'a5', 5, 'c5', 50)`)
		exec1(t, d.prov, `UPDATE t SET extra = 20 WHERE id = 2`)
		d.caughtUp(t, 30*time.Second)
		d.compare(t, "public.t")
	})
}

// TestDDLDropColumn: DROP COLUMN on both sides while the worker is behind. Events written
// before the drop carry the dropped column, which the target no longer has; events between
// the drop and the refresh are a field short of their layout. Both apply.
func TestDDLDropColumn(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		d := newDDLCase(t, provVersion, tgtVersion)
		exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
		exec1(t, d.prov, `UPDATE t SET b = b + 100 WHERE id = 1`)
		d.tick(t)
		d.both(t, `ALTER TABLE t DROP COLUMN b`)
		exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 'c4')`)
		exec1(t, d.prov, `UPDATE t SET a = 'a2x' WHERE id = 2`)
		exec1(t, d.prov, `DELETE FROM t WHERE id = 3`)
		d.refresh(t, "public.t")
		exec1(t, d.prov, `INSERT INTO t VALUES (5, 'a5', 'c5')`)
		d.worker(t)
		d.caughtUp(t, 30*time.Second)
		d.compare(t, "public.t")
	})
}

// TestDDLDropAndAddColumn: one ALTER drops a column and adds another, so rows keep their
// field count but not their columns: (id, a, b, c) becomes (id, b, c, z). Events before and
// after it, in tick intervals of their own, decode to the columns they were written with
// (the drop's transaction is placed among the ticks); then a drop and an add in separate
// statements, with writes between them.
func TestDDLDropAndAddColumn(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		d := newDDLCase(t, provVersion, tgtVersion)
		exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
		exec1(t, d.prov, `UPDATE t SET b = b + 100 WHERE id = 1`)
		d.tick(t)
		exec1(t, d.prov, `ALTER TABLE t DROP COLUMN a, ADD COLUMN z text`)
		d.tick(t)
		exec1(t, d.prov, `INSERT INTO t VALUES (4, 4, 'c4', 'z4')`)
		exec1(t, d.prov, `UPDATE t SET z = 'z' || id WHERE id <= 2`)
		exec1(t, d.tgt, `ALTER TABLE t DROP COLUMN a, ADD COLUMN z text`)
		d.refresh(t, "public.t")
		exec1(t, d.prov, `INSERT INTO t VALUES (5, 5, 'c5', 'z5')`)
		d.tick(t)

		// Separate statements: drop b, write, add w, write; then the refresh.
		d.both(t, `ALTER TABLE t DROP COLUMN b`)
		d.tick(t)
		exec1(t, d.prov, `INSERT INTO t VALUES (6, 'c6', 'z6')`)
		exec1(t, d.prov, `UPDATE t SET c = 'c1x' WHERE id = 1`)
		d.tick(t)
		d.both(t, `ALTER TABLE t ADD COLUMN w int`)
		d.tick(t)
		exec1(t, d.prov, `INSERT INTO t VALUES (7, 'c7', 'z7', 7)`)
		exec1(t, d.prov, `UPDATE t SET w = id WHERE id <= 3`)
		d.refresh(t, "public.t")

		d.worker(t)
		d.caughtUp(t, 30*time.Second)
		d.compare(t, "public.t")
	})
}

// TestDDLRenameAndRetype: RENAME COLUMN and ALTER COLUMN TYPE on both sides while the worker
// is behind: events before and after them apply under the column's current name.
func TestDDLRenameAndRetype(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		d := newDDLCase(t, provVersion, tgtVersion)
		exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
		exec1(t, d.prov, `UPDATE t SET a = 'a1x' WHERE id = 1`)
		d.both(t, `ALTER TABLE t RENAME COLUMN a TO "A 2"`)
		exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4')`)
		exec1(t, d.prov, `UPDATE t SET "A 2" = 'a2x' WHERE id = 2`)
		d.both(t, `ALTER TABLE t ALTER COLUMN b TYPE bigint`)
		exec1(t, d.prov, `INSERT INTO t VALUES (5, 'a5', 5000000000, 'c5')`)
		d.refresh(t, "public.t")
		exec1(t, d.prov, `INSERT INTO t VALUES (6, 'a6', 6, 'c6')`)
		d.worker(t)
		d.caughtUp(t, 30*time.Second)
		d.compare(t, "public.t")
	})
}

// subState is what the target records of the test's subscription.
type subState struct {
	tick        int64
	lastError   string
	lastEvent   int64
	lastErrorAt time.Time
	deadLetters int
}

func (d *ddlCase) sub(t *testing.T) subState {
	t.Helper()
	var s subState
	var tick, ev *int64
	var msg *string
	var at *time.Time
	err := d.tgt.QueryRow(context.Background(), `SELECT tick, last_error, last_error_event, last_error_at,
		(SELECT count(*) FROM skiff.dead_letter) FROM skiff.subscription WHERE queue = 'q'`).Scan(&tick, &msg, &ev, &at, &s.deadLetters)
	require.NoError(t, err)
	if tick != nil {
		s.tick = *tick
	}
	if msg != nil {
		s.lastError = *msg
	}
	if ev != nil {
		s.lastEvent = *ev
	}
	if at != nil {
		s.lastErrorAt = *at
	}
	return s
}

// stuck waits until the worker fails with an error containing want, then until it has retried
// the batch twice more, and checks that it applied and set aside nothing meanwhile. It
// returns the event the error names.
func (d *ddlCase) stuck(t *testing.T, want string) subState {
	t.Helper()
	aside := d.sub(t).deadLetters
	var s subState
	pgtest.Eventually(t, 30*time.Second, "the worker fails with "+want, func() bool {
		s = d.sub(t)
		return strings.Contains(s.lastError, want)
	})
	for range 2 {
		prev := s.lastErrorAt
		pgtest.Eventually(t, 30*time.Second, "the worker retries the batch", func() bool {
			s = d.sub(t)
			return s.lastErrorAt.After(prev)
		})
	}
	require.Contains(t, s.lastError, want)
	require.NotZero(t, s.lastEvent, "the error names the event: %s", s.lastError)
	require.Equal(t, aside, s.deadLetters, "nothing is set aside without skiff event skip")
	return s
}

func (d *ddlCase) event(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return skiff(t, append([]string{"event", args[0], "--provider", d.pair.prov, "--target", d.pair.tgt, "--queue", "q", "--consumer", "c1"}, args[1:]...)...)
}

// TestWorkerSkipsNothingByItself: an event the target refuses (a CHECK constraint the target
// added) and an event that cannot be decoded stop the worker; it retries the batch and applies
// nothing, sets nothing aside, until the causes are gone: then every row arrives.
func TestWorkerSkipsNothingByItself(t *testing.T) {
	t.Parallel()
	d := newDDLCase(t, "", "")
	exec1(t, d.tgt, `ALTER TABLE t ADD CONSTRAINT b_small CHECK (b < 100)`)
	d.workerProc(t)
	exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 2) g`)
	exec1(t, d.prov, `INSERT INTO t VALUES (3, 'a3', 500, 'c3')`)
	exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4')`)
	d.tick(t)
	before := d.sub(t).tick
	s := d.stuck(t, `b_small`)
	require.Equal(t, before, s.tick, "the failing batch is not applied")
	var n int
	require.NoError(t, d.tgt.QueryRow(context.Background(), `SELECT count(*) FROM t`).Scan(&n))
	require.Zero(t, n, "no row of the failing batch is on the target")

	exec1(t, d.tgt, `ALTER TABLE t DROP CONSTRAINT b_small`)
	d.caughtUp(t, 30*time.Second)
	require.Zero(t, d.sub(t).deadLetters)
	d.compare(t, "public.t")

	// A row written in the same tick interval as a drop and an add cannot be decoded: the
	// worker waits; the operator resyncs the table after its refresh, whose copy holds the row.
	exec1(t, d.prov, `INSERT INTO t VALUES (5, 'a5', 5, 'c5')`)
	d.both(t, `ALTER TABLE t DROP COLUMN a, ADD COLUMN z text`)
	d.tick(t)
	d.stuck(t, `decode event`)
	d.refresh(t, "public.t")
	exec1(t, d.prov, `INSERT INTO t VALUES (6, 6, 'c6', 'z6')`)
	out, err := skiff(t, "table", "resync", "--provider", d.pair.prov, "--target", d.pair.tgt, "--queue", "q", "--consumer", "c1", "public.t")
	require.NoError(t, err, out)
	d.inSync(t, time.Minute, "q")
	d.caughtUp(t, 30*time.Second)
	require.Zero(t, d.sub(t).deadLetters)
	d.compare(t, "public.t")
}

// TestEventSkip: an event that cannot be decoded (a row written in the same tick interval as
// a drop and an add of columns) and one the target refuses are shown by skiff event show and
// set aside by skiff event skip: each is recorded in skiff.dead_letter in its batch's
// transaction, the rest of the batch applies, and the tables compare equal but for those rows.
func TestEventSkip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDDLCase(t, "", "")
	exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
	d.tick(t)
	exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4')`)
	d.both(t, `ALTER TABLE t DROP COLUMN a, ADD COLUMN z text`)
	d.tick(t)
	exec1(t, d.prov, `INSERT INTO t VALUES (5, 5, 'c5', 'z5')`)
	d.refresh(t, "public.t")
	exec1(t, d.prov, `INSERT INTO t VALUES (6, 6, 'c6', 'z6')`)
	d.workerProc(t)
	s := d.stuck(t, "decode event")
	require.Contains(t, s.lastError, `of "public"."t" (layout 1): row has 4 fields`)

	out, err := d.event(t, "show")
	require.NoError(t, err, out)
	for _, want := range []string{
		fmt.Sprintf(`event %d of "public"."t" in batch `, s.lastEvent),
		"operation   INSERT",
		`layout      1 ("id", "a", "b", "c")`,
		"data        (4,a4,4,c4)",
		"decoded     no: decode event",
		"error       apply batch",
		fmt.Sprintf("--event %d --reason TEXT", s.lastEvent),
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, d.pair.prov, "no connection string in the output")

	out, err = d.event(t, "skip", "--event", fmt.Sprint(s.lastEvent+1000), "--reason", "x")
	require.Error(t, err, out)
	require.Contains(t, out, "is not in batch")
	out, err = d.event(t, "skip", "--event", fmt.Sprint(s.lastEvent), "--reason", "written during the column swap")
	require.NoError(t, err, out)
	require.Contains(t, out, fmt.Sprintf(`event %d of "public"."t" (INSERT) set aside`, s.lastEvent))
	d.caughtUp(t, 30*time.Second)

	var op, table, data, reason, errText string
	var batch int64
	var aside *time.Time
	require.NoError(t, d.tgt.QueryRow(ctx, `SELECT op, source_schema || '.' || source_name, data, reason, error, batch_id, set_aside_at
		FROM skiff.dead_letter WHERE event_id = $1`, s.lastEvent).Scan(&op, &table, &data, &reason, &errText, &batch, &aside))
	require.Equal(t, "I", op)
	require.Equal(t, "public.t", table)
	require.Equal(t, "(4,a4,4,c4)", data)
	require.Equal(t, "written during the column swap", reason)
	require.Contains(t, errText, "decode event")
	require.NotNil(t, aside, "set aside in the batch's transaction")
	var logged int
	require.NoError(t, d.tgt.QueryRow(ctx, `SELECT count(*) FROM skiff.batch_log WHERE batch_id = $1`, batch).Scan(&logged))
	require.Equal(t, 1, logged, "the batch that left it out is applied")
	awkCompare(t, d.prov, d.tgt, "public.t", "id <> 4")

	// The target refuses a row: set it aside too; the rows after it in the batch apply.
	exec1(t, d.tgt, `ALTER TABLE t ADD CONSTRAINT c_short CHECK (length(c) < 5)`)
	exec1(t, d.prov, `INSERT INTO t VALUES (7, 7, 'c7', 'z7'), (8, 8, 'too long', 'z8'), (9, 9, 'c9', 'z9')`)
	exec1(t, d.prov, `UPDATE t SET z = 'z1x' WHERE id = 1`)
	d.tick(t)
	s = d.stuck(t, "c_short")
	out, err = d.event(t, "show")
	require.NoError(t, err, out)
	require.Contains(t, out, `"id"=8 "b"=8 "c"=too long "z"=z8`)
	out, err = d.event(t, "skip", "--event", fmt.Sprint(s.lastEvent), "--reason", "c too long for the target")
	require.NoError(t, err, out)
	d.caughtUp(t, 30*time.Second)
	var keyCols, keyVals []string
	require.NoError(t, d.tgt.QueryRow(ctx, `SELECT key_columns, key_values FROM skiff.dead_letter WHERE event_id = $1`, s.lastEvent).Scan(&keyCols, &keyVals))
	require.Equal(t, []string{"id"}, keyCols)
	require.Equal(t, []string{"8"}, keyVals)
	awkCompare(t, d.prov, d.tgt, "public.t", "id NOT IN (4, 8)")

	out, err = skiff(t, "status", "--provider", d.pair.prov, "--target", d.pair.tgt, "--json")
	require.NoError(t, err, out)
	require.Contains(t, out, `"dead_letters": 2`)
	out, err = d.event(t, "skip", "--event", fmt.Sprint(s.lastEvent), "--reason", "again")
	require.Error(t, err, out)
	require.Contains(t, out, "no open batch")
}

// TestResyncClearsUndecodableEvents: an event whose row cannot be decoded (here its data was
// damaged by hand) no longer stops the queue once its table is resynced: the new copy holds
// the row, so the worker drops the event instead of needing it.
func TestResyncClearsUndecodableEvents(t *testing.T) {
	t.Parallel()
	d := newDDLCase(t, "", "")
	exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
	exec1(t, d.prov, `UPDATE skiff.event_1_0 SET ev_data = '(2,"unterminated' WHERE ev_data LIKE '(2,%'`)
	d.tick(t)
	d.workerProc(t)
	tgt := d.tgt
	pgtest.Eventually(t, 30*time.Second, "the worker fails on the damaged event", func() bool {
		var msg *string
		require.NoError(t, tgt.QueryRow(context.Background(), `SELECT last_error FROM skiff.subscription`).Scan(&msg))
		return msg != nil && strings.Contains(*msg, "malformed record literal")
	})
	out, err := skiff(t, "table", "resync", "--provider", d.pair.prov, "--target", d.pair.tgt, "--queue", "q", "--consumer", "c1", "public.t")
	require.NoError(t, err, out)
	d.inSync(t, time.Minute, "q")
	exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4')`)
	d.caughtUp(t, 30*time.Second)
	d.compare(t, "public.t")
}
