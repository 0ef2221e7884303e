package queue

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestAddTableErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE nokey (a int, b text)`)
	exec(t, c, `CREATE TABLE withkey (id int PRIMARY KEY)`)
	exec(t, c, `CREATE VIEW v AS SELECT 1 AS x`)

	_, err := AddTable(ctx, c, "q", TableSpec{Name: "missing"})
	require.ErrorIs(t, err, ErrNoTable)
	require.Equal(t, "table missing: no such table", err.Error())
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "nosuchschema.t"})
	require.ErrorIs(t, err, ErrNoTable)

	_, err = AddTable(ctx, c, "q", TableSpec{Name: "nokey"})
	require.ErrorIs(t, err, ErrNoPrimaryKey)
	require.Equal(t, `table "public"."nokey": table has no primary key; give its identifying columns with --key col,col`, err.Error())

	_, err = AddTable(ctx, c, "q", TableSpec{Name: "nokey", Key: []string{"nope"}})
	require.ErrorContains(t, err, `key column "nope" does not exist`)

	_, err = AddTable(ctx, c, "q", TableSpec{Name: "v"})
	require.ErrorContains(t, err, "is not a table or a sequence")

	_, err = AddTable(ctx, c, "q", TableSpec{Name: "withkey", Where: "nonsense ="})
	require.ErrorContains(t, err, "invalid --where")

	_, err = AddTable(ctx, c, "q", TableSpec{Name: "withkey"})
	require.NoError(t, err)
	res, err := AddTable(ctx, c, "q", TableSpec{Name: "withkey"})
	require.NoError(t, err)
	require.True(t, res.Unchanged, "the same capture again changes nothing")
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "withkey", Where: "id > 0"})
	require.ErrorIs(t, err, ErrAlreadyAdded)
	require.Equal(t, `table "public"."withkey" in queue q: table is already captured by this queue, with other settings (no --where, keyed by its primary key); use --refresh to change them`, err.Error())
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "withkey", Key: []string{"id"}})
	require.ErrorIs(t, err, ErrAlreadyAdded)
	// The failed attempts left nothing behind: one trigger pair, one captured table.
	var triggers int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%'`).Scan(&triggers))
	require.Equal(t, 2, triggers)
	tables, err := Tables(ctx, c, "q")
	require.NoError(t, err)
	require.Len(t, tables, 1)

	_, err = RemoveTable(ctx, c, "q", "nokey")
	require.ErrorIs(t, err, ErrNotCaptured)
	_, err = RemoveTable(ctx, c, "nosuchqueue", "withkey")
	require.ErrorIs(t, err, ErrNoQueue)
	_, _, err = NextBatch(ctx, c, "q", "nobody", 0)
	require.ErrorIs(t, err, ErrNotRegistered)
	_, _, err = Tick(ctx, c, "nosuchqueue")
	require.ErrorIs(t, err, ErrNoQueue)
}

// TestNotInstalled: a database without the provider schema gets a hint, not "function does
// not exist".
func TestNotInstalled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Shared(t, "").NewDB(t)
	c, err := pg.Connect(ctx, url, "skiff-test")
	require.NoError(t, err)
	defer c.Close(ctx)
	exec(t, c, `CREATE TABLE t (id int PRIMARY KEY)`)
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.ErrorIs(t, err, ErrNotInstalled)
	require.Equal(t, "create queue q: skiff's provider schema is not installed (run `skiff init provider`)", err.Error())
	exec(t, c, `CREATE SCHEMA skiff`)
	_, _, err = Tick(ctx, c, "q")
	require.ErrorIs(t, err, ErrNotInstalled)
}

// TestWhereFilter: only matching rows are captured; updates moving a row across the filter
// become inserts and deletes.
func TestWhereFilter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE acct (id int PRIMARY KEY, status text, "Region" text)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "acct", Where: `status = 'active' AND "Region" <> 'status'`})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)

	exec(t, c, `INSERT INTO acct VALUES (1, 'active', 'eu'), (2, 'closed', 'eu'), (3, NULL, 'eu'), (4, 'active', 'status')`)
	exec(t, c, `UPDATE acct SET "Region" = 'us' WHERE id = 1`)   // stays in: U
	exec(t, c, `UPDATE acct SET status = 'active' WHERE id = 2`) // moves in: I
	exec(t, c, `UPDATE acct SET status = 'closed' WHERE id = 1`) // moves out: D
	exec(t, c, `UPDATE acct SET status = 'x' WHERE id = 3`)      // stays out: nothing
	exec(t, c, `DELETE FROM acct WHERE id IN (2, 3)`)            // 2 in: D, 3 out: nothing
	// Key changes across the filter.
	exec(t, c, `INSERT INTO acct VALUES (5, 'active', 'eu')`)                           // I
	exec(t, c, `UPDATE acct SET id = 50 WHERE id = 5`)                                  // stays in: U, old key 5
	exec(t, c, `UPDATE acct SET id = 10, status = 'active' WHERE id = 1`)               // moves in: I of the new key
	exec(t, c, `UPDATE acct SET id = 60, status = 'closed' WHERE id = 50`)              // moves out: D of the old key
	exec(t, c, `UPDATE acct SET id = 40, "Region" = NULL WHERE id = 4`)                 // stays out (NULL is false): nothing
	exec(t, c, `UPDATE acct SET id = 41, "Region" = 'eu' WHERE id = 40`)                // moves in: I
	exec(t, c, `UPDATE acct SET id = 42, status = NULL, "Region" = 'eu' WHERE id = 41`) // moves out: D 41
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	var got []string
	for _, e := range evs {
		ev := fmt.Sprintf("%s %s %s", e.Op, e.Values[0].Text, e.Values[1].Text)
		if e.OldKey != nil {
			ev += " old " + e.OldKey[0].Text
		}
		got = append(got, ev)
	}
	require.Equal(t, []string{"INSERT 1 active", "UPDATE 1 active", "INSERT 2 active", "DELETE 1 active", "DELETE 2 active",
		"INSERT 5 active", "UPDATE 50 active old 5", "INSERT 10 active", "DELETE 50 active", "INSERT 41 active", "DELETE 41 active"}, got)
}

// TestQuotedNamesAndKey: odd schema, table and column names, --key on a table without a
// primary key, and a key update carrying the old key.
func TestQuotedNamesAndKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE SCHEMA "My Schema"`)
	exec(t, c, `CREATE TABLE "My Schema"."Odd ""Table""" ("Key A" int NOT NULL, "b,c" text, "d" text NOT NULL)`)
	exec(t, c, `CREATE UNIQUE INDEX "odd key" ON "My Schema"."Odd ""Table""" ("Key A", "d")`)
	res, err := AddTable(ctx, c, "q", TableSpec{Name: `"My Schema"."Odd ""Table"""`, Key: []string{"Key A", "d"}})
	require.NoError(t, err)
	require.Equal(t, change.Table{Schema: "My Schema", Name: `Odd "Table"`}, res.Table)
	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)
	exec(t, c, `INSERT INTO "My Schema"."Odd ""Table""" VALUES (1, 'x', 'k')`)
	exec(t, c, `UPDATE "My Schema"."Odd ""Table""" SET "Key A" = 2`)
	exec(t, c, `UPDATE "My Schema"."Odd ""Table""" SET "b,c" = 'y'`)
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	require.Len(t, evs, 3)
	require.Equal(t, res.Table, evs[0].Table)
	require.Equal(t, []string{"Key A", "b,c", "d"}, evs[0].Columns)
	require.Equal(t, []string{"Key A", "d"}, evs[0].Key)
	require.Equal(t, []change.Value{change.Text("1"), change.Text("k")}, evs[1].OldKey)
	require.Equal(t, evs[1].OldKey, evs[1].KeyValues(), "the old key finds the target row")
	require.Nil(t, evs[2].OldKey)

	_, err = RemoveTable(ctx, c, "q", `"My Schema"."Odd ""Table"""`)
	require.NoError(t, err)
	exec(t, c, `INSERT INTO "My Schema"."Odd ""Table""" VALUES (3, 'z', 'k')`) // not captured
	var triggers int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%'`).Scan(&triggers))
	require.Zero(t, triggers)

	// A captured table dropped by the user can still be removed by its name.
	_, err = AddTable(ctx, c, "q", TableSpec{Name: `"My Schema"."Odd ""Table"""`, Key: []string{"Key A"}, KeyNotUnique: true})
	require.NoError(t, err)
	exec(t, c, `DROP TABLE "My Schema"."Odd ""Table"""`)
	removed, err := RemoveTable(ctx, c, "q", `"My Schema"."Odd ""Table"""`)
	require.NoError(t, err)
	require.Equal(t, res.Table, removed)
	tables, err := Tables(ctx, c, "q")
	require.NoError(t, err)
	require.Empty(t, tables)
	var funcs int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture\_%'`).Scan(&funcs))
	require.Zero(t, funcs)
}

// TestSequences: table add accepts sequences; get_sequences reports their last values.
func TestSequences(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE SEQUENCE s1`)
	exec(t, c, `CREATE SCHEMA "Odd"`)
	exec(t, c, `CREATE SEQUENCE "Odd"."S 2" START 100`)
	res, err := AddTable(ctx, c, "q", TableSpec{Name: "s1"})
	require.NoError(t, err)
	require.True(t, res.Sequence)
	_, err = AddTable(ctx, c, "q", TableSpec{Name: `"Odd"."S 2"`})
	require.NoError(t, err)
	res, err = AddTable(ctx, c, "q", TableSpec{Name: "s1"})
	require.NoError(t, err, "adding it again changes nothing")
	require.True(t, res.Unchanged)
	exec(t, c, `SELECT nextval('s1'), nextval('s1')`)
	got, err := GetSequences(ctx, c, "q")
	require.NoError(t, err)
	require.Equal(t, []SequenceValue{{"Odd", "S 2", 100, false}, {"public", "s1", 2, true}}, got)
	seqs, err := Sequences(ctx, c, "q")
	require.NoError(t, err)
	require.Len(t, seqs, 2)
	_, err = RemoveTable(ctx, c, "q", "s1")
	require.NoError(t, err)
	got, err = GetSequences(ctx, c, "q")
	require.NoError(t, err)
	require.Len(t, got, 1)
}

// TestTickerThresholds: skiff.ticker ticks on the event count, on lag with events pending and
// when idle, and not otherwise.
func TestTickerThresholds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := setupQueue(t, "", "c")
	c := p.conn(t)
	require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxLag, "1 hour"))
	require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerIdlePeriod, "1 hour"))
	require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxEvents, "10"))
	_, ok, err := Tick(ctx, c, "q")
	require.NoError(t, err)
	require.False(t, ok, "nothing due")
	exec(t, c, `INSERT INTO t SELECT g, 'x' FROM generate_series(1, 9) g`)
	_, ok, err = Tick(ctx, c, "q")
	require.NoError(t, err)
	require.False(t, ok, "9 events < 10")
	exec(t, c, `INSERT INTO t VALUES (10, 'x')`)
	_, ok, err = Tick(ctx, c, "q")
	require.NoError(t, err)
	require.True(t, ok, "10 events")
	info, err := GetQueueInfo(ctx, c)
	require.NoError(t, err)
	require.Zero(t, info[0].PendingEvents)

	require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxLag, "0"))
	_, ok, err = Tick(ctx, c, "q")
	require.NoError(t, err)
	require.False(t, ok, "lag with nothing pending")
	exec(t, c, `INSERT INTO t VALUES (11, 'x')`)
	_, ok, err = Tick(ctx, c, "q")
	require.NoError(t, err)
	require.True(t, ok, "lag with an event pending")

	require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerIdlePeriod, "0"))
	_, ok, err = Tick(ctx, c, "q")
	require.NoError(t, err)
	require.True(t, ok, "idle tick")

	require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerPaused, "true"))
	_, ok, err = Tick(ctx, c, "q")
	require.NoError(t, err)
	require.False(t, ok, "paused")
	require.Error(t, SetQueueConfig(ctx, c, "q", "nope", "1"))
}

// TestMaintenance: cleanup keeps the ticks consumers need; retry events come back to their
// consumer only; drop_queue removes triggers and tables; info functions answer.
func TestMaintenance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := setupQueue(t, "", "a", "b")
	c := p.conn(t)
	exec(t, c, `INSERT INTO t VALUES (1, 'x'), (2, 'y')`)
	for i := 0; i < 3; i++ {
		_, err := ForceTick(ctx, c, "q")
		require.NoError(t, err)
	}
	srcA, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "a", MaxEvents: -1})
	require.NoError(t, err)
	b, err := srcA.NextBatch(ctx)
	require.NoError(t, err)
	var evs []change.Event
	require.NoError(t, srcA.Events(ctx, b, func(ch []change.Event) error { evs = append(evs, ch...); return nil }))
	require.Len(t, evs, 2)
	ok, err := EventRetry(ctx, c, b.ID, evs[1].ID, 0)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, srcA.Finish(ctx, b))

	n, err := CleanupTicks(ctx, c, "q")
	require.NoError(t, err)
	require.Zero(t, n, "consumer b still needs the first tick")

	n, err = RetryEvents(ctx, c)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	// a's next batches hold the retried event; b sees each event once, no retry.
	var gotA []change.Event
	for len(gotA) == 0 {
		_, evs := readBatch(t, srcA)
		gotA = append(gotA, evs...)
	}
	require.Len(t, gotA, 1)
	require.Equal(t, "2", gotA[0].Values[0].Text)
	srcB, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "b", MaxEvents: 100000})
	require.NoError(t, err)
	_, evsB := readBatch(t, srcB)
	require.Equal(t, []string{"1", "2"}, ids(evsB))

	n, err = CleanupTicks(ctx, c, "q")
	require.NoError(t, err)
	require.Positive(t, n)

	cons, err := GetConsumerInfo(ctx, c)
	require.NoError(t, err)
	require.Len(t, cons, 2)
	require.Equal(t, "a", cons[0].Consumer)
	vac, err := TablesToVacuum(ctx, c)
	require.NoError(t, err)
	require.Contains(t, vac, "skiff.tick")

	_, err = DropQueue(ctx, c, "q", false)
	require.ErrorIs(t, err, ErrHasConsumers)
	require.ErrorContains(t, err, "queue q has consumers: a, b")
	dropped, err := DropQueue(ctx, c, "q", true)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, dropped.Consumers)
	require.Equal(t, []change.Table{{Schema: "public", Name: "t"}}, dropped.Tables)
	_, err = DropQueue(ctx, c, "q", true)
	require.ErrorIs(t, err, ErrNoQueue)
	exec(t, c, `INSERT INTO t VALUES (3, 'after drop')`) // no trigger left to fail
	var left int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'skiff' AND c.relname LIKE 'event\_%'`).Scan(&left))
	require.Equal(t, 1, left, "only event_template remains")
}

// TestServerDown: a clear error when the provider cannot be reached.
func TestServerDown(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t, pgtest.Options{})
	url := srv.URL("postgres")
	srv.Stop()
	_, err := pg.Connect(context.Background(), url, "skiff-test")
	require.Error(t, err)
	require.False(t, strings.Contains(err.Error(), "\n"))
	require.True(t, strings.HasPrefix(err.Error(), "connect to postgres@"), err.Error())
	require.False(t, errors.Is(err, ErrNoTable))
}

// TestTriggerSQLIs84Safe: the generated capture function uses nothing PostgreSQL 8.4 lacks,
// and its per-row path has no dynamic SQL or catalog access.
func TestTriggerSQLIs84Safe(t *testing.T) {
	t.Parallel()
	tg := trigger{
		queueID: 7, layout: 9, table: change.Table{Schema: "s", Name: "t"}, funcName: "capture_q7_t1",
		rowTrig: "skiff_capture_q7", truncTrig: "skiff_truncate_q7", key: []string{"id", "k"},
		whereNew: `NEW."status" = 'a'`, whereOld: `OLD."status" = 'a'`,
		pins: []pin{{"datestyle", "ISO, YMD"}, {"extra_float_digits", "2"}},
	}
	for _, stmt := range tg.ddl() {
		low := strings.ToLower(stmt)
		for _, bad := range []string{"format(", "if not exists", "execute '", "execute format", "json", "pg_catalog.pg_", " when (", "string_agg"} {
			require.NotContains(t, low, bad, stmt)
		}
	}
	fn := tg.function()
	require.Contains(t, fn, "SET datestyle = 'ISO, YMD'")
	require.Equal(t, 6, strings.Count(fn, "pg_catalog.nextval('skiff.event_7_id_seq'::pg_catalog.regclass)"), "one per emitted event kind")
	require.Contains(t, fn, "SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp\n")
	require.Contains(t, fn, `okey := pg_catalog.textin(pg_catalog.record_out(ROW(OLD."id", OLD."k")));`)
	require.Contains(t, fn, `IF okey OPERATOR(pg_catalog.=) pg_catalog.textin(pg_catalog.record_out(ROW(NEW."id", NEW."k"))) THEN`)
	require.NotContains(t, fn, "::text", "a cast to text could be one the table's owner created")
	require.NotContains(t, fn, `"s"."t"`, "no name in the body")
}

// TestTriggerSearchPathProof: without a --where, the capture function of a plain table has no
// search_path SET clause (it would cost every row a save, set and restore), so its body must
// resolve alike under any search_path: every operator, function and type in it is
// schema-qualified. The pins stay; with neither, the function has no SET clause at all.
func TestTriggerSearchPathProof(t *testing.T) {
	t.Parallel()
	tg := trigger{
		queueID: 7, layout: 9, table: change.Table{Schema: "s", Name: "t"}, funcName: "capture_q7_t1",
		rowTrig: "skiff_capture_q7", truncTrig: "skiff_truncate_q7", key: []string{"id", "k"},
		pins: []pin{{"datestyle", "ISO, YMD"}},
	}
	fn := tg.function()
	require.NotContains(t, fn, "search_path")
	require.Contains(t, fn, "SECURITY DEFINER\nSET datestyle = 'ISO, YMD'\nAS ")
	tg.pins = nil
	fn = tg.function()
	require.NotContains(t, fn, "\nSET ")

	body := fn[strings.Index(fn, "$skiff$")+len("$skiff$"):]
	qualified := regexp.MustCompile(`--[^\n]*|\$skiff\$|OPERATOR\(pg_catalog\.[^)]+\)|:=|pg_catalog\.[a-z_0-9]+|skiff\.[a-z_0-9]+|"[^"]*"|'[^']*'`)
	rest := qualified.ReplaceAllString(body, "")
	require.NotRegexp(t, `[=<>%|+*/-]`, rest, "an unqualified operator")
	for _, word := range regexp.MustCompile(`[A-Za-z_][A-Za-z_0-9]*`).FindAllString(rest, -1) {
		switch strings.ToUpper(word) {
		case "DECLARE", "BEGIN", "END", "IF", "THEN", "ELSIF", "ELSE", "RETURN", "NULL", "INSERT", "INTO", "VALUES",
			"ROW", "NEW", "OLD", "TG_OP", "ID", "OKEY", "EV_ID", "EV_TIME", "EV_TXID", "EV_OP", "EV_LAYOUT", "EV_DATA", "EV_EXTRA",
			"TRUE", "FALSE":
		default:
			t.Errorf("unqualified name %q in the body:\n%s", word, body)
		}
	}
}
