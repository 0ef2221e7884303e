package queue

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// The security suite (docs/security.md): a hostile login role that owns captured tables and
// writes them tries every way it has to run its own code with the rights of skiff's owner (here
// a superuser) or to make skiff run SQL of its choosing. After each attempt it must not be
// superuser, no object it could not create itself may exist, and the captured events must be
// exactly the writes it made.

var hostileCounter atomic.Int64

// hostile is an unprivileged role with a schema of its own and CREATE on public (the default
// before PostgreSQL 15; granted here on every version), whose functions, operators and casts
// try to escalate: each, when run, tries ALTER ROLE ... SUPERUSER and logs the role it ran as
// into <schema>.ran.
type hostile struct {
	role   string
	admin  *pgx.Conn // skiff's operator: a superuser
	writer *pgx.Conn // a session of the hostile role, its own schema and public before pg_catalog
}

func newHostile(t *testing.T, p *provider) *hostile {
	t.Helper()
	h := &hostile{role: fmt.Sprintf("mallory%d", hostileCounter.Add(1)), admin: p.conn(t)}
	var exists bool
	require.NoError(t, h.admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, h.role).Scan(&exists))
	if exists { // a shared server keeps roles across test databases
		h.role = fmt.Sprintf("%s_%d", h.role, p.conn(t).PgConn().PID())
	}
	r := pgx.Identifier{h.role}.Sanitize()
	exec(t, h.admin, `CREATE ROLE `+r+` LOGIN`)
	exec(t, h.admin, `CREATE SCHEMA `+r+` AUTHORIZATION `+r)
	exec(t, h.admin, `GRANT CREATE ON SCHEMA public TO `+r)
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pg.Connect(ctx, p.url, "skiff-test")
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, `DROP SCHEMA `+r+` CASCADE`)
		_, _ = c.Exec(ctx, `DROP OWNED BY `+r+` CASCADE`)
		_, _ = c.Exec(ctx, `DROP ROLE `+r)
	})
	h.writer = pgtest.Connect(t, strings.Replace(p.url, "postgres://postgres@", "postgres://"+h.role+"@", 1))
	exec(t, h.writer, `SET standard_conforming_strings = on`)
	exec(t, h.writer, `CREATE TABLE `+r+`.ran (who text, what text)`)
	exec(t, h.writer, `GRANT INSERT ON `+r+`.ran TO PUBLIC`)
	exec(t, h.writer, `GRANT USAGE ON SCHEMA `+r+` TO PUBLIC`)
	return h
}

// evilBody is the body of a PL/pgSQL function that tries to make the role superuser, logs who
// it ran as and then returns ret.
func (h *hostile) evilBody(what, ret string) string {
	r := pgx.Identifier{h.role}.Sanitize()
	return `BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE ` + strings.ReplaceAll(r, `'`, `''`) + ` SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    INSERT INTO ` + r + `.ran VALUES (current_user, '` + what + `');
    RETURN ` + ret + `;
END`
}

// shadow creates, in schema, a function and operators that shadow everything the capture
// function and a --where over numeric and int columns use, each returning the catalog's
// answer so that writes still succeed.
func (h *hostile) shadow(t *testing.T, schema string) {
	t.Helper()
	s := pgx.Identifier{schema}.Sanitize()
	fn := func(name, args, ret, body string) {
		exec(t, h.writer, `CREATE FUNCTION `+s+`.`+name+`(`+args+`) RETURNS `+ret+` LANGUAGE plpgsql AS $f$`+h.evilBody(name, body)+`$f$`)
	}
	op := func(sym, left, right, proc string) {
		exec(t, h.writer, `CREATE OPERATOR `+s+`.`+sym+` (LEFTARG = `+left+`, RIGHTARG = `+right+`, PROCEDURE = `+s+`.`+proc+`)`)
	}
	// Functions the generated code calls (it calls them schema-qualified).
	fn("nextval", "regclass", "bigint", "pg_catalog.nextval($1)")
	fn("now", "", "timestamptz", "pg_catalog.now()")
	fn("txid_current", "", "bigint", "pg_catalog.txid_current()")
	fn("coalesce", "boolean, boolean", "boolean", "coalesce($1, $2)") // never resolves: coalesce is syntax
	// Operators of the generated code: the epoch test (id >> 40) % 3 = 0, TG_OP = 'INSERT',
	// the key comparison, and those of the --where used below.
	fn("shr", "bigint, integer", "bigint", "$1 OPERATOR(pg_catalog.>>) $2")
	op(">>", "bigint", "integer", "shr")
	fn("mod", "bigint, integer", "bigint", "$1 OPERATOR(pg_catalog.%) $2")
	op("%", "bigint", "integer", "mod")
	fn("eq_bi", "bigint, integer", "boolean", "$1 OPERATOR(pg_catalog.=) $2")
	op("=", "bigint", "integer", "eq_bi")
	fn("eq_tt", "text, text", "boolean", "$1 OPERATOR(pg_catalog.=) $2")
	op("=", "text", "text", "eq_tt")
	fn("eq_ii", "integer, integer", "boolean", "$1 OPERATOR(pg_catalog.=) $2")
	op("=", "integer", "integer", "eq_ii")
	fn("gt_ni", "numeric, integer", "boolean", "$1 OPERATOR(pg_catalog.>) $2")
	op(">", "numeric", "integer", "gt_ni")
}

// ranAsOthers lists who ran the hostile code other than the hostile role itself.
func (h *hostile) ranAsOthers(t *testing.T) []string {
	t.Helper()
	rows, err := h.admin.Query(context.Background(), `SELECT who || ': ' || what FROM `+pgx.Identifier{h.role}.Sanitize()+`.ran WHERE who <> $1`, h.role)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// requireHarmless checks that the role did not become superuser and that none of its code ran
// as anybody else.
func (h *hostile) requireHarmless(t *testing.T) {
	t.Helper()
	var super bool
	require.NoError(t, h.admin.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, h.role).Scan(&super))
	require.False(t, super, "%s became superuser", h.role)
	require.Empty(t, h.ranAsOthers(t), "hostile code ran with another role's rights")
}

// TestSecurityHostileRole: on every installed version, a role that owns a captured table and
// shadows every operator and function of the capture function (in its schema and in public,
// its session's search_path putting both before pg_catalog), redirects its row type's and key
// type's casts to text, and renames its table and a column to names built to break out of
// generated SQL, gets nothing: its writes are captured exactly, through a refresh too.
func TestSecurityHostileRole(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			h := newHostile(t, p)
			r := pgx.Identifier{h.role}.Sanitize()
			h.shadow(t, h.role)
			h.shadow(t, "public")
			exec(t, h.writer, `CREATE TYPE `+r+`.mood AS ENUM ('sad', 'ok')`)
			exec(t, h.writer, `CREATE TABLE `+r+`.acct (id int, mood `+r+`.mood, amount numeric, note text, PRIMARY KEY (id, mood))`)
			// Casts of the row type and of the key's enum to text, open to their owner.
			exec(t, h.writer, `CREATE FUNCTION `+r+`.row_text(`+r+`.acct) RETURNS text LANGUAGE plpgsql AS $f$`+h.evilBody("row cast", "'forged'")+`$f$`)
			exec(t, h.writer, `CREATE CAST (`+r+`.acct AS text) WITH FUNCTION `+r+`.row_text(`+r+`.acct)`)
			exec(t, h.writer, `CREATE FUNCTION `+r+`.mood_text(`+r+`.mood) RETURNS text LANGUAGE plpgsql AS $f$`+h.evilBody("enum cast", "'forged'")+`$f$`)
			exec(t, h.writer, `CREATE CAST (`+r+`.mood AS text) WITH FUNCTION `+r+`.mood_text(`+r+`.mood) AS IMPLICIT`)
			exec(t, h.writer, `SET search_path = `+r+`, public, pg_catalog`)

			_, err := AddTable(ctx, h.admin, "q", TableSpec{Name: h.role + ".acct", Where: "amount > 0"})
			require.NoError(t, err)
			_, err = RegisterConsumer(ctx, h.admin, "q", "c")
			require.NoError(t, err)
			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)

			write := func(sqls ...string) {
				t.Helper()
				for _, s := range sqls {
					exec(t, h.writer, s)
				}
			}
			awkward := `b\'` + "\r\n;$skiff$ $$"
			exec(t, h.writer, `INSERT INTO acct VALUES (1, 'ok', 10, 'a'), (2, 'sad', 5, $1)`, awkward)
			write(
				`UPDATE acct SET note = 'c' WHERE id = 1`,
				`UPDATE acct SET mood = 'sad' WHERE id = 1`,
				`UPDATE acct SET amount = -1 WHERE id = 2`, // leaves the filter: a delete
				`INSERT INTO acct VALUES (3, 'ok', 0, 'filtered out')`,
				`DELETE FROM acct WHERE id = 1`)
			_, err = ForceTick(ctx, h.admin, "q")
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			got := make([]string, len(evs))
			for i, e := range evs {
				got[i] = describeEvent(e)
			}
			require.Equal(t, []string{
				`I [1 ok 10 a]`,
				`I [2 sad 5 ` + awkward + `]`,
				`U [1 ok 10 c]`,
				`U [1 sad 10 c] old [1 ok]`,
				`D [2 sad 5 ` + awkward + `]`,
				`D [1 sad 10 c]`,
			}, got)
			h.requireHarmless(t)

			// A capture without --where has no search_path pinned (TestTriggerSearchPathProof):
			// the shadows above stay first in the writer's search_path, and a temporary table
			// named text puts a type of that name first in it too.
			exec(t, h.writer, `CREATE TABLE `+r+`.plain (id int PRIMARY KEY, mood `+r+`.mood, note text)`)
			_, err = AddTable(ctx, h.admin, "q", TableSpec{Name: h.role + ".plain"})
			require.NoError(t, err)
			exec(t, h.writer, `CREATE TEMP TABLE text (x int)`)
			write(`INSERT INTO plain VALUES (1, 'ok', 'a')`,
				`UPDATE plain SET note = 'b'`,
				`UPDATE plain SET id = 2`,
				`DELETE FROM plain`)
			exec(t, h.writer, `DROP TABLE pg_temp.text`)
			_, err = ForceTick(ctx, h.admin, "q")
			require.NoError(t, err)
			_, evs = readBatch(t, src)
			got = got[:0]
			for _, e := range evs {
				got = append(got, describeEvent(e))
			}
			require.Equal(t, []string{`I [1 ok a]`, `U [1 ok b]`, `U [2 ok b] old [1]`, `D [2 ok b]`}, got)
			h.requireHarmless(t)

			// A table and a column renamed to names that break out of a comment, a
			// dollar quote or a statement, then a refresh by the operator.
			for i, name := range []string{
				"\rBEGIN END$skiff$;ALTER ROLE " + h.role + " SUPERUSER;SELECT $skiff$",
				"x\n$$; ALTER ROLE " + h.role + " SUPERUSER; --",
				`a"b'c\d;e` + "\r\n",
			} {
				exec(t, h.writer, `ALTER TABLE acct RENAME TO `+pgx.Identifier{name}.Sanitize())
				exec(t, h.writer, `ALTER TABLE `+pgx.Identifier{name}.Sanitize()+` RENAME COLUMN note TO `+pgx.Identifier{name}.Sanitize())
				_, err = AddTable(ctx, h.admin, "q", TableSpec{Name: pgx.Identifier{h.role, name}.Sanitize(), Refresh: true})
				require.NoError(t, err, "refresh %d", i)
				write(fmt.Sprintf(`INSERT INTO %s VALUES (%d, 'ok', 1, 'n%d')`, pgx.Identifier{name}.Sanitize(), 10+i, i))
				_, err = ForceTick(ctx, h.admin, "q")
				require.NoError(t, err)
				_, evs = readBatch(t, src)
				require.Len(t, evs, 1)
				require.Equal(t, fmt.Sprintf(`I [%d ok 1 n%d]`, 10+i, i), describeEvent(evs[0]))
				require.Equal(t, change.Table{Schema: h.role, Name: name}, evs[0].Table)
				require.Equal(t, []string{"id", "mood", "amount", name}, evs[0].Columns)
				exec(t, h.writer, `ALTER TABLE `+pgx.Identifier{name}.Sanitize()+` RENAME COLUMN `+pgx.Identifier{name}.Sanitize()+` TO note`)
				exec(t, h.writer, `ALTER TABLE `+pgx.Identifier{name}.Sanitize()+` RENAME TO acct`)
			}
			h.requireHarmless(t)
			// Nothing the role could not create itself: every object of its schema and of
			// public is its own (the shadows) or the server's.
			var foreign int
			require.NoError(t, h.admin.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname IN ($1, 'public') AND pg_get_userbyid(c.relowner) <> $1`, h.role).Scan(&foreign))
			require.Zero(t, foreign)
		})
	}
}

// describeEvent renders an event as "OP [values] old [old key]" for comparisons.
func describeEvent(e change.Event) string {
	vals := make([]string, len(e.Values))
	for i, v := range e.Values {
		vals[i] = v.Text
		if !v.Valid {
			vals[i] = "NULL"
		}
	}
	s := string(rune(e.Op)) + " [" + strings.Join(vals, " ") + "]"
	if e.OldKey != nil {
		old := make([]string, len(e.OldKey))
		for i, v := range e.OldKey {
			old[i] = v.Text
		}
		s += " old [" + strings.Join(old, " ") + "]"
	}
	return s
}

// TestSecurityWhere: a --where is one expression that calls only what its author can trust.
// Statements in it, volatile functions, functions and operators a hostile role owns (called
// qualified or found through search_path) are refused at table add, which then leaves
// nothing behind: no queue, no trigger, no object the statements would have made.
func TestSecurityWhere(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			h := newHostile(t, p)
			r := pgx.Identifier{h.role}.Sanitize()
			h.shadow(t, "public")
			exec(t, h.writer, `CREATE TABLE `+r+`.t (id int PRIMARY KEY, amount numeric, note text)`)
			exec(t, h.writer, `CREATE FUNCTION `+r+`.ok(numeric) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$`+h.evilBody("where function", "true")+`$f$`)
			exec(t, h.writer, `CREATE FUNCTION public.ok2(numeric) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$`+h.evilBody("where function", "true")+`$f$`)
			exec(t, h.writer, `CREATE FUNCTION `+r+`.ok_op(numeric, numeric) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$`+h.evilBody("where operator", "true")+`$f$`)
			exec(t, h.writer, `CREATE OPERATOR `+r+`.=== (LEFTARG = numeric, RIGHTARG = numeric, PROCEDURE = `+r+`.ok_op)`)
			table := h.role + ".t"
			for _, c := range []struct{ where, want string }{
				{`true); CREATE TABLE public.pwned (x int); SELECT (true`, "one expression"},
				{`true; ALTER ROLE ` + h.role + ` SUPERUSER`, "one expression"},
				{`amount > 0) OR (true`, "unbalanced"}, // valid inside WHERE (...), refused all the same
				{`true)), false) THEN END IF; PERFORM 1; IF ((true`, "unbalanced"},
				{`random() < 0.5`, "is volatile"},
				{r + `.ok(amount)`, "is owned by role"},
				{`ok2(amount)`, "function"}, // public is not searched: does not resolve
				{`amount OPERATOR(` + r + `.===) 1`, "is owned by role"},
				{`note = (SELECT note FROM ` + r + `.t LIMIT 1)`, "subqueries are not allowed"},
				{`EXISTS (SELECT 1 FROM pg_catalog.pg_class)`, "subqueries are not allowed"},
			} {
				_, err := AddTable(ctx, h.admin, "q", TableSpec{Name: table, Where: c.where})
				require.Error(t, err, c.where)
				require.Contains(t, err.Error(), c.want, c.where)
			}
			var queues, triggers, pwned int
			require.NoError(t, h.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM skiff.queue),
				(SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%'),
				(SELECT count(*) FROM pg_class WHERE relname = 'pwned')`).Scan(&queues, &triggers, &pwned))
			require.Equal(t, []int{0, 0, 0}, []int{queues, triggers, pwned}, "a refused table add leaves nothing behind")
			h.requireHarmless(t)

			// What is accepted runs with catalog operators only, even with public's shadows
			// on every writer's path, and filters as written.
			_, err := AddTable(ctx, h.admin, "q", TableSpec{Name: table, Where: `amount > 0 OR note = 'x'`})
			require.NoError(t, err)
			_, err = RegisterConsumer(ctx, h.admin, "q", "c")
			require.NoError(t, err)
			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)
			exec(t, h.writer, `SET search_path = public, pg_catalog, `+r)
			exec(t, h.writer, `INSERT INTO `+r+`.t VALUES (1, 1, 'a'), (2, 0, 'x'), (3, 0, 'y')`)
			_, err = ForceTick(ctx, h.admin, "q")
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			require.Equal(t, []string{"1", "2"}, ids(evs))
			h.requireHarmless(t)
		})
	}
}

// TestUpgradeCaptures: capture functions made by an older generator are regenerated in place
// (same layout, key and --where, search_path pinned with a --where and not without, no ::text
// cast); one whose --where now
// calls a function a hostile role owns is reported by name and keeps its old function.
func TestUpgradeCaptures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	h := newHostile(t, p)
	c := h.admin
	exec(t, c, `CREATE TABLE a (id int PRIMARY KEY, amount numeric)`)
	exec(t, c, `CREATE TABLE b (id int PRIMARY KEY, amount numeric)`)
	exec(t, c, `CREATE FUNCTION public.positive(numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0'`)
	resA, err := AddTable(ctx, c, "q", TableSpec{Name: "a", Where: "amount > 0"})
	require.NoError(t, err)
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "b", Where: "public.positive(amount)"})
	require.NoError(t, err)
	exec(t, c, `CREATE TABLE d (id int PRIMARY KEY, note text)`)
	_, err = AddTable(ctx, c, "q", TableSpec{Name: "d"})
	require.NoError(t, err)
	// What version 1 left: no pin, the old generator's mark.
	exec(t, c, `UPDATE skiff.captured_table SET capture_version = 1`)
	exec(t, c, `ALTER FUNCTION skiff.`+change.QuoteIdent(fmt.Sprintf("capture_q1_t%d", tableOID(t, c, "a")))+`() RESET search_path`)
	// What version 2 made of a table without --where: search_path pinned by a SET clause.
	exec(t, c, `UPDATE skiff.captured_table SET capture_version = 2 WHERE table_name = 'd'`)
	exec(t, c, `ALTER FUNCTION skiff.`+change.QuoteIdent(fmt.Sprintf("capture_q1_t%d", tableOID(t, c, "d")))+`() SET search_path = pg_catalog, pg_temp`)
	exec(t, c, `ALTER FUNCTION public.positive(numeric) OWNER TO `+pgx.Identifier{h.role}.Sanitize())

	done, err := UpgradeCaptures(ctx, c)
	require.NoError(t, err)
	require.Len(t, done, 3)
	require.Equal(t, change.Table{Schema: "public", Name: "a"}, done[0].Table)
	require.NoError(t, done[0].Err)
	require.Equal(t, change.Table{Schema: "public", Name: "b"}, done[1].Table)
	require.ErrorContains(t, done[1].Err, "is owned by role")
	require.Equal(t, change.Table{Schema: "public", Name: "d"}, done[2].Table)
	require.NoError(t, done[2].Err)

	var version, layout int32
	var config []string
	require.NoError(t, c.QueryRow(ctx, `SELECT t.capture_version, t.layout_id, p.proconfig FROM skiff.captured_table t
		JOIN pg_proc p ON p.proname = t.func_name WHERE t.table_name = 'a'`).Scan(&version, &layout, &config))
	require.Equal(t, int32(captureVersion), version)
	require.Equal(t, resA.Layout, layout, "the layout is kept")
	require.Contains(t, config, "search_path=pg_catalog, pg_temp")
	// d's function lost its SET clause: no --where, nothing to pin.
	require.NoError(t, c.QueryRow(ctx, `SELECT t.capture_version, p.proconfig FROM skiff.captured_table t
		JOIN pg_proc p ON p.proname = t.func_name WHERE t.table_name = 'd'`).Scan(&version, &config))
	require.Equal(t, int32(captureVersion), version)
	require.Empty(t, config)
	again, err := UpgradeCaptures(ctx, c)
	require.NoError(t, err)
	require.Len(t, again, 1, "only the capture that failed is tried again")

	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	exec(t, c, `INSERT INTO a VALUES (1, 1), (2, 0)`)
	exec(t, c, `INSERT INTO d VALUES (3, 'x')`)
	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	require.Equal(t, []string{"1", "3"}, ids(evs))
}

func tableOID(t *testing.T, c *pgx.Conn, name string) uint32 {
	t.Helper()
	var oid uint32
	require.NoError(t, c.QueryRow(context.Background(), `SELECT $1::regclass::oid`, name).Scan(&oid))
	return oid
}
