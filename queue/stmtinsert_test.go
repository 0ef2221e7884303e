package queue

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// stmtVersions are the versions the statement-level INSERT capture is tested on: the oldest
// that has it (10, from the matrix when installed) and the default.
func stmtVersions() []string {
	out := []string{""}
	if slices.Contains(pgtest.Majors(), "10") && pgtest.DefaultVersion() != "10" {
		out = append(out, "10")
	}
	return out
}

// skipBefore10 skips a test of the statement-level INSERT capture on a server before 10.
func skipBefore10(t *testing.T, c *pgx.Conn) {
	t.Helper()
	if pg.ServerVersionOf(c.PgConn()) < 100000 {
		t.Skip("no transition tables before PostgreSQL 10: captures keep the row trigger")
	}
}

// captureTriggers lists a table's skiff triggers as name:tgtype.
func captureTriggers(t testing.TB, c *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT tgname || ':' || tgtype FROM pg_catalog.pg_trigger
		WHERE tgrelid = $1::text::regclass AND tgname LIKE '%skiff%' ORDER BY 1`, table)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestStatementInsertTriggers: on 10+ a plain table captured with InsertTrigger statement
// gets a row trigger on UPDATE and DELETE, a statement-level INSERT trigger and its
// never-firing companion; without the choice, the row trigger on INSERT too; a table with a
// --where or with a trigger of its own cannot have it (ErrNoStatementInsert). A multi-row INSERT, COPY and INSERT … ON
// CONFLICT DO UPDATE give the same events, in the same order, as the row trigger gives (the
// ON CONFLICT's updates first: they fire as the statement runs, its inserts at its end, and
// they touch other keys); the row text is the same. A --refresh after a trigger of the
// user's was added goes back to the row trigger, a refresh without a choice keeps the set a
// capture has, InsertTrigger row goes back to the row trigger; table remove and queue drop leave no
// trigger and no function behind.
func TestStatementInsertTriggers(t *testing.T) {
	t.Parallel()
	for _, v := range stmtVersions() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			c := p.conn(t)
			skipBefore10(t, c)
			cols := `(id int PRIMARY KEY, v text, gone int, ts timestamptz, f float8, b bytea, a int[])`
			for _, tb := range []string{"s", "r"} {
				// A dropped column: the transition table's rows carry it as the table's do.
				exec(t, c, `CREATE TABLE `+tb+` `+cols)
				exec(t, c, `ALTER TABLE `+tb+` DROP COLUMN gone`)
			}
			exec(t, c, `CREATE TABLE w (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE TABLE u (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`)
			exec(t, c, `CREATE TRIGGER a_touch BEFORE INSERT ON u FOR EACH ROW EXECUTE PROCEDURE touch()`)
			for _, spec := range []TableSpec{{Name: "w", Where: "v <> 'skip'", InsertTrigger: InsertTriggerStatement}, {Name: "u", InsertTrigger: InsertTriggerStatement}} {
				_, err := AddTable(ctx, c, "q", spec)
				require.ErrorIs(t, err, ErrNoStatementInsert, spec.Name)
			}
			for _, spec := range []TableSpec{{Name: "s", InsertTrigger: InsertTriggerStatement}, {Name: "r", InsertTrigger: InsertTriggerStatement},
				{Name: "w", Where: "v <> 'skip'"}, {Name: "u"}} {
				_, err := AddTable(ctx, c, "q", spec)
				require.NoError(t, err, spec.Name)
			}
			var qid int
			require.NoError(t, c.QueryRow(ctx, `SELECT skiff.queue_id('q')`).Scan(&qid))
			q := fmt.Sprint(qid)
			stmtSet := []string{"!skiff_capture_q" + q + ":25", "!skiff_truncate_q" + q + ":32", "skiff_captured_q" + q + ":5", "skiff_insert_q" + q + ":4"}
			rowSet := []string{"!skiff_capture_q" + q + ":29", "!skiff_truncate_q" + q + ":32"}
			require.Equal(t, stmtSet, captureTriggers(t, c, "s"))
			require.Equal(t, rowSet, captureTriggers(t, c, "w"))
			require.Equal(t, rowSet, captureTriggers(t, c, "u"))
			var oid uint32
			require.NoError(t, c.QueryRow(ctx, `SELECT 'r'::regclass::oid`).Scan(&oid))
			useRowTrigger(t, c, "r", qid, fmt.Sprintf(`skiff.capture_q%d_t%d()`, qid, oid))
			require.Equal(t, rowSet, captureTriggers(t, c, "r"))

			_, err := RegisterConsumer(ctx, c, "q", "c")
			require.NoError(t, err)
			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)
			exec(t, c, `SET TimeZone = 'Asia/Tokyo'; SET extra_float_digits = 0; SET DateStyle = 'SQL, DMY'`)
			for _, tb := range []string{"s", "r"} {
				exec(t, c, `INSERT INTO `+tb+` SELECT g, 'v''' || g, '2020-01-02 03:04:05.678+01'::timestamptz + g * interval '1 hour',
					0.5 + g, decode('00ff' || lpad(g::text, 2, '0'), 'hex'), ARRAY[g, NULL] FROM generate_series(1, 50) g`)
				exec(t, c, `INSERT INTO `+tb+` (id) VALUES (100)`)
				_, err := c.PgConn().CopyFrom(ctx, strings.NewReader("200\tcopied\n201\t\\N\n"), `COPY `+tb+` (id, v) FROM STDIN`)
				require.NoError(t, err)
				exec(t, c, `INSERT INTO `+tb+` (id, v) VALUES (5, 'up'), (300, 'new'), (6, 'up') ON CONFLICT (id) DO UPDATE SET v = excluded.v`)
				// The update moves key 7 away, then the same statement inserts 7 again.
				exec(t, c, `INSERT INTO `+tb+` (id, v) VALUES (7, 'first'), (7, 'again') ON CONFLICT (id) DO UPDATE SET id = `+tb+`.id + 1000`)
				exec(t, c, `INSERT INTO `+tb+` SELECT 1 WHERE false`) // no row: no event
			}
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			var got = map[string][]string{}
			for i, e := range evs {
				if i > 0 {
					require.Greater(t, e.ID, evs[i-1].ID)
				}
				got[e.Table.Name] = append(got[e.Table.Name], describeEvent(e))
			}
			require.Len(t, got["s"], 50+1+2+3+2)
			require.Equal(t, got["r"][:53], got["s"][:53], "the statement trigger writes what the row trigger writes, in the same order")
			u5, u6 := "U [5 up 2020-01-02 07:04:05.678+00 5.5 \\x00ff05 {5,NULL}]", "U [6 up 2020-01-02 08:04:05.678+00 6.5 \\x00ff06 {6,NULL}]"
			i300 := "I [300 new NULL NULL NULL NULL]"
			moved := []string{"U [1007 v'7 2020-01-02 09:04:05.678+00 7.5 \\x00ff07 {7,NULL}] old [7]", "I [7 again NULL NULL NULL NULL]"}
			require.Equal(t, append([]string{u5, i300, u6}, moved...), got["r"][53:])
			require.Equal(t, append([]string{u5, u6, i300}, moved...), got["s"][53:],
				"ON CONFLICT: the updates as the statement runs, its inserts at its end (other keys); the key an update freed is inserted after")

			// A trigger of the user's is DDL on the table: the refresh goes back to the row trigger.
			exec(t, c, `CREATE TRIGGER z_touch BEFORE INSERT ON s FOR EACH ROW EXECUTE PROCEDURE touch()`)
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", Refresh: true})
			require.NoError(t, err)
			require.Equal(t, rowSet, captureTriggers(t, c, "s"))
			exec(t, c, `DROP TRIGGER z_touch ON s`)
			exec(t, c, `DROP TRIGGER "!skiff_capture_q`+q+`" ON s`) // the owner drops the triggers: the refresh makes the new set
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", Refresh: true, InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err)
			require.Equal(t, stmtSet, captureTriggers(t, c, "s"))
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", Refresh: true})
			require.NoError(t, err)
			require.Equal(t, stmtSet, captureTriggers(t, c, "s"), "a refresh keeps the set in place")
			exec(t, c, `UPDATE skiff.captured_table SET capture_version = 3`)
			_, err = UpgradeCaptures(ctx, c)
			require.NoError(t, err)
			require.Equal(t, stmtSet, captureTriggers(t, c, "s"), "an upgrade keeps the set in place")
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err, "the same choice again: unchanged")
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", InsertTrigger: InsertTriggerRow})
			require.ErrorIs(t, err, ErrAlreadyAdded)
			require.ErrorContains(t, err, "with the statement INSERT trigger; use --refresh to change it")
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", Refresh: true, InsertTrigger: InsertTriggerRow})
			require.NoError(t, err)
			require.Equal(t, rowSet, captureTriggers(t, c, "s"))
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", Refresh: true, InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err)
			require.Equal(t, stmtSet, captureTriggers(t, c, "s"))

			_, err = RemoveTable(ctx, c, "q", "s")
			require.NoError(t, err)
			require.Empty(t, captureTriggers(t, c, "s"))
			_, err = DropQueue(ctx, c, "q", true)
			require.NoError(t, err)
			var left int
			require.NoError(t, c.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%')
				+ (SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture\_q%')`).Scan(&left))
			require.Zero(t, left)
		})
	}
}

// TestStatementInsertKeepsTableAlone: a table captured with the statement-level INSERT
// trigger cannot become a partition or an inheritance child (a statement trigger does not
// fire for rows routed through a parent): on every version from 10 the server refuses it,
// naming skiff's companion trigger skiff_captured_q<n> (a row trigger with a transition table
// that never fires). Once the table is removed from the queue, both work again. On every
// installed version from 10.
func TestStatementInsertKeepsTableAlone(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		if n, err := strconv.Atoi(v); err != nil || n < 10 {
			continue
		}
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			c := p.conn(t)
			skipBefore10(t, c)
			exec(t, c, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE TABLE parent (id int, v text) PARTITION BY RANGE (id)`)
			exec(t, c, `CREATE TABLE iparent (id int, v text)`)
			_, err := AddTable(ctx, c, "q", TableSpec{Name: "t", InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err)
			var qid int
			require.NoError(t, c.QueryRow(ctx, `SELECT skiff.queue_id('q')`).Scan(&qid))
			_, err = c.Exec(ctx, `ALTER TABLE parent ATTACH PARTITION t FOR VALUES FROM (0) TO (100)`)
			require.ErrorContains(t, err, fmt.Sprintf(`trigger "skiff_captured_q%d" prevents table "t" from becoming a partition`, qid))
			_, err = c.Exec(ctx, `ALTER TABLE t INHERIT iparent`)
			require.ErrorContains(t, err, fmt.Sprintf(`trigger "skiff_captured_q%d" prevents table "t" from becoming an inheritance child`, qid))
			// The companion never fires: a captured INSERT writes one event per row.
			exec(t, c, `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 3) g`)
			var events int
			require.NoError(t, c.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM skiff.event_%[1]d_0)
				+ (SELECT count(*) FROM skiff.event_%[1]d_1) + (SELECT count(*) FROM skiff.event_%[1]d_2)`, qid)).Scan(&events))
			require.Equal(t, 3, events)

			_, err = RemoveTable(ctx, c, "q", "t")
			require.NoError(t, err)
			require.Empty(t, captureTriggers(t, c, "t"))
			exec(t, c, `ALTER TABLE t INHERIT iparent`)
			exec(t, c, `ALTER TABLE t NO INHERIT iparent`)
			exec(t, c, `ALTER TABLE parent ATTACH PARTITION t FOR VALUES FROM (0) TO (100)`)
		})
	}
}

// TestStatementInsertAcrossEpochs: the event table is chosen by each id's epoch, and the ids
// of one multi-row INSERT may cross into the next epoch. The statement trigger writes into the
// epoch it guessed from the sequence, then moves the events of later epochs to their tables:
// every event is read once, in order, and lies in the table its id names. Three statements:
// one whose ids cross from epoch 0 to 1, one whose guess (epoch 1) is behind all its ids
// (epoch 2), one that stays in epoch 2.
func TestStatementInsertAcrossEpochs(t *testing.T) {
	t.Parallel()
	for _, v := range stmtVersions() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupQueue(t, v, "c")
			c := p.conn(t)
			skipBefore10(t, c)
			_, err := AddTable(ctx, c, "q", TableSpec{Name: "t", Refresh: true, InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err)
			var qid int
			require.NoError(t, c.QueryRow(ctx, `SELECT skiff.queue_id('q')`).Scan(&qid))
			require.Contains(t, captureTriggers(t, c, "t"), fmt.Sprintf("skiff_insert_q%d:4", qid))
			seq := fmt.Sprintf("skiff.event_%d_id_seq", qid)
			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)

			tx, err := c.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SELECT setval($1, (1::bigint << 40) - 3)`, seq)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 6) g`) // ids 2^40-2 … 2^40+3
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SELECT setval($1, (2::bigint << 40) - 1)`, seq)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO t SELECT g, 'b' || g FROM generate_series(7, 10) g`) // guess epoch 1, ids of epoch 2
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO t SELECT g, 'c' || g FROM generate_series(11, 12) g`)
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))

			var misplaced int
			require.NoError(t, c.QueryRow(ctx, fmt.Sprintf(`SELECT
				(SELECT count(*) FROM skiff.event_%[1]d_0 WHERE (ev_id >> 40) %% 3 <> 0) +
				(SELECT count(*) FROM skiff.event_%[1]d_1 WHERE (ev_id >> 40) %% 3 <> 1) +
				(SELECT count(*) FROM skiff.event_%[1]d_2 WHERE (ev_id >> 40) %% 3 <> 2)`, qid)).Scan(&misplaced))
			require.Zero(t, misplaced, "every event lies in the table its id names")
			var perTable []int64
			require.NoError(t, c.QueryRow(ctx, fmt.Sprintf(`SELECT ARRAY[(SELECT count(*) FROM skiff.event_%[1]d_0),
				(SELECT count(*) FROM skiff.event_%[1]d_1), (SELECT count(*) FROM skiff.event_%[1]d_2)]`, qid)).Scan(&perTable))
			require.Equal(t, []int64{2, 4, 6}, perTable)

			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			want := make([]string, 12)
			for i := range want {
				want[i] = fmt.Sprint(i + 1)
			}
			require.Equal(t, want, ids(evs), "each event once, in the order of the inserts")
			for i, e := range evs {
				if i > 0 {
					require.Greater(t, e.ID, evs[i-1].ID)
				}
			}
			require.Equal(t, int64(1)<<40-2, evs[0].ID)
			require.Equal(t, int64(2)<<40, evs[6].ID)
		})
	}
}

// TestStatementInsertSearchPathProof: the statement-level INSERT branch, like the row path
// (TestTriggerSearchPathProof), resolves alike under any search_path: every operator and
// function schema-qualified, the transition table read by its name (a transition table is
// found before any relation of the search_path). COALESCE is SQL syntax, not a function
// looked up.
func TestStatementInsertSearchPathProof(t *testing.T) {
	t.Parallel()
	tg := trigger{
		queueID: 7, layout: 9, table: change.Table{Schema: "s", Name: "t"}, funcName: "capture_q7_t1",
		rowTrig: "skiff_capture_q7", truncTrig: "skiff_truncate_q7", insTrig: "skiff_insert_q7", key: []string{"id"},
		stmtInsert: true, rowOnParent: true, version: 150000,
	}
	fn := tg.function()
	require.NotContains(t, fn, "search_path")
	require.Contains(t, fn, "pg_catalog.textin(pg_catalog.record_out(skiff_new_rows.*)), NULL FROM skiff_new_rows;")
	require.Equal(t, 3, strings.Count(fn, "GET DIAGNOSTICS cnt := ROW_COUNT;"))
	require.Contains(t, fn, "IF pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1 AND TG_LEVEL OPERATOR(pg_catalog.=) 'ROW' THEN")
	body := fn[strings.Index(fn, "$skiff$")+len("$skiff$"):]
	qualified := regexp.MustCompile(`--[^\n]*|\$skiff\$|OPERATOR\(pg_catalog\.[^)]+\)|:=|pg_catalog\.[a-z_0-9]+|skiff\.[a-z_0-9]+|"[^"]*"|'[^']*'|skiff_new_rows\.\*|USING ERRCODE =|HINT =`)
	rest := qualified.ReplaceAllString(body, "")
	require.NotRegexp(t, `[=<>%|+*/-]`, rest, "an unqualified operator")
	for _, word := range regexp.MustCompile(`[A-Za-z_][A-Za-z_0-9]*`).FindAllString(rest, -1) {
		switch strings.ToUpper(word) {
		case "DECLARE", "BEGIN", "END", "IF", "THEN", "ELSIF", "ELSE", "RETURN", "NULL", "INSERT", "INTO", "VALUES",
			"ROW", "NEW", "OLD", "TG_OP", "ID", "OKEY", "EV_ID", "EV_TIME", "EV_TXID", "EV_OP", "EV_LAYOUT", "EV_DATA", "EV_EXTRA",
			"TRUE", "FALSE",
			"TG_LEVEL", "CNT", "COALESCE", "SELECT", "FROM", "GET", "DIAGNOSTICS", "ROW_COUNT", "AND", "NOT", "WITH", "AS",
			"DELETE", "WHERE", "RETURNING", "MOVED", "OTHER", "SKIFF_NEW_ROWS",
			// foreignTriggerCheck: pg_trigger's columns, the trigger's variables, RAISE.
			"TGNAME", "TGRELID", "TG_RELID", "TGISINTERNAL", "TGENABLED", "TG_TABLE_SCHEMA", "TG_TABLE_NAME", "IS",
			"RAISE", "EXCEPTION", "USING", "ERRCODE", "HINT", "ARRAY", "ORDER", "BY":
		default:
			t.Errorf("unqualified name %q in the body:\n%s", word, body)
		}
	}
	ddl := strings.Join(tg.ddl(), ";\n")
	require.Contains(t, ddl, `CREATE TRIGGER "skiff_capture_q7" AFTER UPDATE OR DELETE ON "s"."t" FOR EACH ROW`)
	require.Contains(t, ddl, `CREATE TRIGGER "skiff_insert_q7" AFTER INSERT ON "s"."t" REFERENCING NEW TABLE AS skiff_new_rows FOR EACH STATEMENT`)
}

// TestStatementInsertRefusesNestedChanges: a trigger of the user's created on a table after its
// capture took the statement-level INSERT trigger (no refresh since) could change the rows of
// an INSERT before the capture's AFTER STATEMENT trigger writes their events: an AFTER ROW
// trigger updating the row it fired for wrote its UPDATE event ahead of the row's INSERT event,
// and the replica kept the row as inserted. Such a change, made from a trigger, is now refused
// with an error naming the table, the trigger and the refresh; the INSERT writes nothing.
// Changes made at the top level, and nested ones while the table has no trigger of the
// user's (or only a disabled one), go on. The refresh goes back to the row trigger, and the
// trigger's change then comes after the row's INSERT (the capture's trigger fires first).
func TestStatementInsertRefusesNestedChanges(t *testing.T) {
	t.Parallel()
	for _, v := range stmtVersions() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			c := p.conn(t)
			skipBefore10(t, c)
			exec(t, c, `CREATE TABLE "Odd s" (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE TABLE other (id int PRIMARY KEY)`)
			_, err := AddTable(ctx, c, "q", TableSpec{Name: `"Odd s"`, InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err)
			_, err = RegisterConsumer(ctx, c, "q", "c")
			require.NoError(t, err)
			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)

			// A trigger of another table changing this one: no trigger of the user's on it.
			exec(t, c, `CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN UPDATE "Odd s" SET v = v || '+' WHERE id = NEW.id; RETURN NULL; END $$`)
			exec(t, c, `CREATE TRIGGER bump AFTER INSERT ON other FOR EACH ROW EXECUTE PROCEDURE bump()`)
			exec(t, c, `INSERT INTO "Odd s" VALUES (1, 'a')`)
			exec(t, c, `INSERT INTO other VALUES (1)`)

			// The user's trigger on the table itself, created after the capture.
			exec(t, c, `CREATE FUNCTION fix() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN UPDATE "Odd s" SET v = 'fixed' WHERE id = NEW.id; RETURN NULL; END $$`)
			exec(t, c, `CREATE TRIGGER "Fix it" AFTER INSERT ON "Odd s" FOR EACH ROW EXECUTE PROCEDURE fix()`)
			_, err = c.Exec(ctx, `INSERT INTO "Odd s" VALUES (2, 'b')`)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			require.Equal(t, "55000", pgErr.Code)
			require.Contains(t, pgErr.Message, `UPDATE of public."Odd s" from a trigger refused`)
			require.Contains(t, pgErr.Message, `statement-level INSERT trigger and has trigger(s) of its own since ("Fix it")`)
			require.Equal(t, `Run skiff table add --refresh public."Odd s" on the provider (it captures the table's INSERTs row by row again), or drop or disable the trigger.`, pgErr.Hint)
			exec(t, c, `UPDATE "Odd s" SET v = 'top' WHERE id = 1`) // not from a trigger
			exec(t, c, `ALTER TABLE "Odd s" DISABLE TRIGGER "Fix it"`)
			exec(t, c, `INSERT INTO other VALUES (3)`) // nested, the user's trigger disabled: no row 3, nothing changed
			exec(t, c, `ALTER TABLE "Odd s" ENABLE TRIGGER "Fix it"`)
			require.Equal(t, []string{"I [1 a]", "U [1 a+]", "U [1 top]"}, tickedEvents(t, c, src, "q"), "the refused INSERT wrote nothing")

			// The refresh goes back to the row trigger, made again under today's name, which
			// fires before the user's "Fix it": the trigger's change follows the row's INSERT.
			var qid int
			require.NoError(t, c.QueryRow(ctx, `SELECT skiff.queue_id('q')`).Scan(&qid))
			_, err = AddTable(ctx, c, "q", TableSpec{Name: `"Odd s"`, Refresh: true})
			require.NoError(t, err)
			require.Equal(t, []string{fmt.Sprintf("!skiff_capture_q%d:29", qid), fmt.Sprintf("!skiff_truncate_q%d:32", qid)}, captureTriggers(t, c, `"Odd s"`))
			exec(t, c, `INSERT INTO "Odd s" VALUES (2, 'b')`)
			require.Equal(t, []string{"I [2 b]", "U [2 fixed]"}, tickedEvents(t, c, src, "q"))
		})
	}
}
