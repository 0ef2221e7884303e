package tests

import (
	"context"
	"sync"
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

// worker runs an in-process worker until the test ends.
func (d *ddlCase) worker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	d.runWorker(t, ctx, &wg, "q")
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
