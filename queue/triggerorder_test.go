package queue

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestCaptureTriggerFiresFirst: the server fires a row's AFTER triggers (and a TRUNCATE's) in
// the order of their names. A trigger of the user's named audit_fix that updates the row it
// fired for, and one named a_reseed that inserts a row after a TRUNCATE, fired before the
// capture's skiff_capture_q<N> / skiff_truncate_q<N>: their events came first (U before the
// row's I, the reseeded row's I before the T), and the replica kept the row as inserted and
// lost the reseeded row. Captures made now name their triggers !skiff_… (rowTriggerName),
// which fire first. A capture made under the old names keeps them through a refresh and an
// upgrade (renaming needs the table's ownership), and CapturesFiredBefore names it with the
// user's triggers that fire first; when its triggers are made again, it gets the new names and
// the old ones are dropped (one event per change, not two).
func TestCaptureTriggerFiresFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, src := capturedT(t)
	var qid int
	require.NoError(t, c.QueryRow(ctx, `SELECT skiff.queue_id('q')`).Scan(&qid))
	newSet := []string{fmt.Sprintf("!skiff_capture_q%d:29", qid), fmt.Sprintf("!skiff_truncate_q%d:32", qid)}
	require.Equal(t, newSet, captureTriggers(t, c, "t"))
	events := func() []string { t.Helper(); return tickedEvents(t, c, src, "q") }

	exec(t, c, `CREATE FUNCTION fix() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN UPDATE t SET v = 'fixed' WHERE id = NEW.id AND v <> 'fixed'; RETURN NULL; END $$`)
	exec(t, c, `CREATE FUNCTION reseed() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO t VALUES (100, 'seed'); RETURN NULL; END $$`)
	exec(t, c, `CREATE TRIGGER audit_fix AFTER INSERT ON t FOR EACH ROW EXECUTE PROCEDURE fix()`)
	exec(t, c, `CREATE TRIGGER a_reseed AFTER TRUNCATE ON t FOR EACH STATEMENT EXECUTE PROCEDURE reseed()`)
	exec(t, c, `INSERT INTO t VALUES (1, 'a')`)
	exec(t, c, `TRUNCATE t`)
	require.Equal(t, []string{"I [1 a]", "U [1 fixed]", "T []", "I [100 seed]", "U [100 fixed]"}, events(),
		"each change's event before the events of the triggers it fired")

	// A capture made under the old names (simulated: renamed, and recorded so).
	exec(t, c, fmt.Sprintf(`ALTER TRIGGER "!skiff_capture_q%d" ON t RENAME TO skiff_capture_q%d`, qid, qid))
	exec(t, c, fmt.Sprintf(`ALTER TRIGGER "!skiff_truncate_q%d" ON t RENAME TO skiff_truncate_q%d`, qid, qid))
	exec(t, c, `UPDATE skiff.captured_table SET row_trigger = 'skiff_capture_q' || queue_id, trunc_trigger = 'skiff_truncate_q' || queue_id`)
	oldSet := []string{fmt.Sprintf("skiff_capture_q%d:29", qid), fmt.Sprintf("skiff_truncate_q%d:32", qid)}
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t", Refresh: true})
	require.NoError(t, err)
	require.Equal(t, oldSet, captureTriggers(t, c, "t"), "a refresh keeps the triggers in place")
	exec(t, c, `UPDATE skiff.captured_table SET capture_version = 5`)
	_, err = UpgradeCaptures(ctx, c)
	require.NoError(t, err)
	require.Equal(t, oldSet, captureTriggers(t, c, "t"), "an upgrade keeps the triggers in place")
	exec(t, c, `DELETE FROM t`)
	exec(t, c, `INSERT INTO t VALUES (2, 'b')`)
	require.Equal(t, []string{"D [100 fixed]", "U [2 fixed]", "I [2 b]"}, events(),
		"under the old name the user's trigger fires first (the flaw the new names fix)")
	late, err := CapturesFiredBefore(ctx, c)
	require.NoError(t, err)
	require.Equal(t, []FiredBefore{{Queue: "q", Table: change.Table{Schema: "public", Name: "t"},
		Triggers: []string{"a_reseed", "audit_fix"}, Drop: fmt.Sprintf("skiff_truncate_q%d", qid)}}, late)

	// Made again (a trigger missing): under the new names, the old ones dropped.
	exec(t, c, fmt.Sprintf(`DROP TRIGGER skiff_truncate_q%d ON t`, qid))
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "t", Refresh: true})
	require.NoError(t, err)
	require.Equal(t, newSet, captureTriggers(t, c, "t"))
	var recorded string
	require.NoError(t, c.QueryRow(ctx, `SELECT row_trigger || ' ' || trunc_trigger FROM skiff.captured_table`).Scan(&recorded))
	require.Equal(t, fmt.Sprintf("!skiff_capture_q%d !skiff_truncate_q%d", qid, qid), recorded)
	exec(t, c, `INSERT INTO t VALUES (3, 'c')`)
	require.Equal(t, []string{"I [3 c]", "U [3 fixed]"}, events(), "one event per change")
	late, err = CapturesFiredBefore(ctx, c)
	require.NoError(t, err)
	require.Empty(t, late)

	_, err = RemoveTable(ctx, c, "q", "t")
	require.NoError(t, err)
	require.Empty(t, captureTriggers(t, c, "t"))
}

// tickedEvents ticks queue q and reads the consumer's next batch through src, each event
// described as describeEvent does.
func tickedEvents(t testing.TB, c *pgx.Conn, src *Source, q string) []string {
	t.Helper()
	_, err := ForceTick(context.Background(), c, q)
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	var out []string
	for _, e := range evs {
		out = append(out, describeEvent(e))
	}
	return out
}
