package tests

import (
	"context"
	"sync"
	"testing"
	"time"
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
