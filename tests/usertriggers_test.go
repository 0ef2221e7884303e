package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUserTriggersChangingTheirRows: the provider's table has triggers of the application's
// that change rows in reply to a change — audit_fix, AFTER INSERT, rewrites the row it fired
// for; "Bump", AFTER UPDATE (a quoted name), counts the row's updates in it; a_reseed, AFTER
// TRUNCATE, inserts a row again. The server fires AFTER triggers in the order of their names,
// and these sort before skiff_capture_q<N> and skiff_truncate_q<N>, the capture's names before
// capture version 6: their changes were queued before the change that fired them, and the
// target kept rows as first inserted (and lost the reseeded row). The capture's triggers now
// fire first; the target ends equal to the provider, row by row.
func TestUserTriggersChangingTheirRows(t *testing.T) {
	t.Parallel()
	forEachPair(t, func(t *testing.T, provVersion, tgtVersion string) {
		p := newPair(t, provVersion, tgtVersion, `CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0)`)
		prov := connect(t, p.prov)
		exec1(t, prov, `CREATE FUNCTION fix() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN UPDATE t SET v = 'fixed ' || v WHERE id = NEW.id; RETURN NULL; END $$`)
		exec1(t, prov, `CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NEW.n = OLD.n THEN UPDATE t SET n = n + 1 WHERE id = NEW.id; END IF;
				RETURN NULL;
			END $$`)
		exec1(t, prov, `CREATE FUNCTION reseed() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO t (id, v) VALUES (0, 'seed'); RETURN NULL; END $$`)
		exec1(t, prov, `CREATE TRIGGER audit_fix AFTER INSERT ON t FOR EACH ROW EXECUTE PROCEDURE fix()`)
		exec1(t, prov, `CREATE TRIGGER "Bump" AFTER UPDATE ON t FOR EACH ROW EXECUTE PROCEDURE bump()`)
		exec1(t, prov, `CREATE TRIGGER a_reseed AFTER TRUNCATE ON t FOR EACH STATEMENT EXECUTE PROCEDURE reseed()`)
		p.capture(t, "qa", "public.t")
		p.subscribe(t, "qa")

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		ticker(t, ctx, &wg, p.prov, 20*time.Millisecond, "qa")
		p.runWorker(t, ctx, &wg, "qa")
		exec1(t, prov, `INSERT INTO t (id, v) SELECT g, 'v' || g FROM generate_series(1, 50) g`)
		exec1(t, prov, `INSERT INTO t (id, v) VALUES (51, 'one')`)
		exec1(t, prov, `UPDATE t SET v = v || '!' WHERE id % 5 = 0`)
		p.caughtUp(t, 2*time.Minute, "qa")
		p.compare(t, "t")

		exec1(t, prov, `TRUNCATE t`)
		exec1(t, prov, `INSERT INTO t (id, v) VALUES (52, 'after')`)
		p.caughtUp(t, 2*time.Minute, "qa")
		cancel()
		wg.Wait()
		p.compare(t, "t")
	})
}

// TestMisorderedCaptureStopsWorker: a capture still under the names of before capture version
// 6 (skiff_capture_q<N>) on a table with audit_fix, an AFTER INSERT trigger rewriting its row
// and sorting first, queues each row's UPDATE before its INSERT. The worker used to apply that
// with a warning (the UPDATE found no row) and leave the rows as first inserted; it now stops
// on the batch (apply.ErrMisordered), naming the table, the row and the way out, and applies
// nothing of it. The way out as the error and skiff init provider say it: the capture moved
// to the new names (the owner drops its truncate trigger, then table add --refresh), and the
// table copied again (table resync); the tables then compare equal, row by row, under new
// writes.
func TestMisorderedCaptureStopsWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDDLCase(t, "", "")
	var qid int
	require.NoError(t, d.prov.QueryRow(ctx, `SELECT queue_id FROM skiff.captured_table`).Scan(&qid))
	// A capture made before version 6 (simulated: renamed, and recorded so).
	exec1(t, d.prov, fmt.Sprintf(`ALTER TRIGGER "!skiff_capture_q%d" ON t RENAME TO skiff_capture_q%d`, qid, qid))
	exec1(t, d.prov, fmt.Sprintf(`ALTER TRIGGER "!skiff_truncate_q%d" ON t RENAME TO skiff_truncate_q%d`, qid, qid))
	exec1(t, d.prov, `UPDATE skiff.captured_table SET row_trigger = 'skiff_capture_q' || queue_id, trunc_trigger = 'skiff_truncate_q' || queue_id`)
	exec1(t, d.prov, `CREATE FUNCTION fix() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN UPDATE t SET a = 'fixed ' || a WHERE id = NEW.id; RETURN NULL; END $$`)
	exec1(t, d.prov, `CREATE TRIGGER audit_fix AFTER INSERT ON t FOR EACH ROW EXECUTE PROCEDURE fix()`)

	d.workerProc(t)
	exec1(t, d.prov, `INSERT INTO t SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 3) g`)
	d.tick(t)
	s := d.stuck(t, "out of order")
	for _, want := range []string{`on "public"."t"`, "row (id=1) was changed by the UPDATE of event", "skiff init provider", "skiff table resync"} {
		require.Contains(t, s.lastError, want)
	}
	var n int
	require.NoError(t, d.tgt.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Zero(t, n, "nothing of the batch is applied")

	out, err := skiff(t, "init", "provider", "--db", d.pair.prov)
	require.NoError(t, err, out)
	require.Contains(t, out, "DROP TRIGGER") // the log's JSON escapes the quotes
	require.Contains(t, out, fmt.Sprintf(`skiff_truncate_q%d`, qid))
	exec1(t, d.prov, fmt.Sprintf(`DROP TRIGGER skiff_truncate_q%d ON t`, qid))
	d.refresh(t, "public.t")
	exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4')`)
	out, err = skiff(t, "table", "resync", "--provider", d.pair.prov, "--target", d.pair.tgt, "--queue", "q", "--consumer", "c1", "public.t")
	require.NoError(t, err, out)
	exec1(t, d.prov, `INSERT INTO t VALUES (5, 'a5', 5, 'c5'), (6, 'a6', 6, 'c6')`)
	d.inSync(t, time.Minute, "q")
	d.caughtUp(t, 30*time.Second)
	require.Zero(t, d.sub(t).deadLetters)
	d.compare(t, "public.t")
	var fixed int
	require.NoError(t, d.tgt.QueryRow(ctx, `SELECT count(*) FROM t WHERE a LIKE 'fixed %'`).Scan(&fixed))
	require.Equal(t, 6, fixed)
}

// TestCrossRowDeleteStopsWorker: a trigger that deletes *another* row of the same multi-row
// INSERT (here: keep the lowest id of a group) gets that row's DELETE queued before its
// INSERT, whatever the capture's trigger names — row-level AFTER triggers fire row by row at
// the statement's end. The target would keep the deleted row; the worker stops on the batch
// instead, naming the row, and a resync of the table brings the target level with the
// provider, compared row by row.
func TestCrossRowDeleteStopsWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDDLCase(t, "", "")
	exec1(t, d.prov, `CREATE FUNCTION dedupe() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN DELETE FROM t WHERE b = NEW.b AND id > NEW.id; RETURN NULL; END $$`)
	exec1(t, d.prov, `CREATE TRIGGER dedupe AFTER INSERT ON t FOR EACH ROW EXECUTE PROCEDURE dedupe()`)
	d.workerProc(t)
	exec1(t, d.prov, `INSERT INTO t VALUES (1, 'a1', 1, 'c1'), (2, 'a2', 1, 'c2'), (3, 'a3', 3, 'c3')`)
	d.tick(t)
	s := d.stuck(t, "out of order")
	require.Contains(t, s.lastError, "row (id=2) was deleted by the DELETE of event")
	var n int
	require.NoError(t, d.tgt.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Zero(t, n, "nothing of the batch is applied")

	out, err := skiff(t, "table", "resync", "--provider", d.pair.prov, "--target", d.pair.tgt, "--queue", "q", "--consumer", "c1", "public.t")
	require.NoError(t, err, out)
	exec1(t, d.prov, `INSERT INTO t VALUES (4, 'a4', 4, 'c4')`)
	d.inSync(t, time.Minute, "q")
	d.caughtUp(t, 30*time.Second)
	d.compare(t, "public.t")
}
