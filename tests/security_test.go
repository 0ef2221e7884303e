package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

var hostileRoles atomic.Int64

// TestSecurityCopyAndCompare: the initial copy and compare evaluate a capture's --where in the
// operator's session (a superuser here). A role with CREATE on public (the default before 15)
// creates there an operator >(numeric, integer), a better match for `amount > 0` than the
// catalog's, whose function tries to make it superuser. Neither the copy nor compare may pick
// it; the target gets exactly the filtered rows and compare says equal.
func TestSecurityCopyAndCompare(t *testing.T) {
	t.Parallel()
	ddl := `CREATE TABLE public.acct (id int PRIMARY KEY, amount numeric, note text)`
	p := newPair(t, "", "", ddl)
	h := newHostileRole(t, p.prov)
	h.shadowOperator(t, ">", "numeric", "integer", "$1 OPERATOR(pg_catalog.>) $2")
	exec1(t, h.admin, `INSERT INTO public.acct SELECT i, i % 3 - 1, 'n' || i FROM generate_series(1, 300) i`)

	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "q", "--where", "amount > 0", "public.acct")
	require.NoError(t, err, out)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)

	h.requireHarmless(t)
	var rows int
	require.NoError(t, connect(t, p.tgt).QueryRow(context.Background(), `SELECT count(*) FROM public.acct WHERE amount > 0 AND note LIKE 'n%'`).Scan(&rows))
	require.Equal(t, 100, rows, "the copy holds exactly the filtered rows")
	var all int
	require.NoError(t, connect(t, p.tgt).QueryRow(context.Background(), `SELECT count(*) FROM public.acct`).Scan(&all))
	require.Equal(t, 100, all)
}

// TestSecurityWorkerOnTarget: the worker matches keys with "=" on the target. A role there
// with CREATE on public creates =(mood, mood) for the key's enum type, an exact match the
// catalog's anyenum operator is not; the worker (a superuser) must not pick it.
func TestSecurityWorkerOnTarget(t *testing.T) {
	t.Parallel()
	ddl := `CREATE TYPE public.mood AS ENUM ('sad', 'ok');
		CREATE TABLE public.acct (id int, mood public.mood, note text, PRIMARY KEY (id, mood))`
	p := newPair(t, "", "", ddl)
	h := newHostileRole(t, p.tgt)
	h.shadowOperator(t, "=", "public.mood", "public.mood", "$1::text OPERATOR(pg_catalog.=) $2::text")

	p.capture(t, "q", "public.acct")
	p.subscribe(t, "q")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.runWorker(t, ctx, &wg, "q")
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO public.acct SELECT i, 'ok', 'n' || i FROM generate_series(1, 50) i`)
	p.caughtUp(t, time.Minute, "q")
	exec1(t, prov, `UPDATE public.acct SET note = 'changed' WHERE id % 2 = 0`)
	exec1(t, prov, `UPDATE public.acct SET mood = 'sad' WHERE id % 5 = 0`)
	exec1(t, prov, `DELETE FROM public.acct WHERE id % 7 = 0`)
	p.caughtUp(t, time.Minute, "q")
	cancel()
	wg.Wait()
	p.compare(t, "public.acct")

	h.requireHarmless(t)
}

// TestSecurityCastOnTarget: the owner of a column's type may CREATE CAST (text AS type)
// WITH FUNCTION; a worker that turned text into the column's type with a cast would run that
// function with its own rights (a superuser's here). Values reach the type's input function as
// typed parameters or COPY instead: the role's casts never run, on the set-based statements
// (enum key, enum column) as on the row-by-row ones (an array of the enum, a domain over it).
func TestSecurityCastOnTarget(t *testing.T) {
	t.Parallel()
	ddl := `CREATE TYPE public.mood AS ENUM ('sad', 'ok');
		CREATE DOMAIN public.feeling AS public.mood;
		CREATE TABLE public.acct (id int, mood public.mood, moods public.mood[], felt public.feeling, note text,
		                          PRIMARY KEY (id, mood))`
	p := newPair(t, "", "", ddl)
	h := newHostileRole(t, p.tgt)
	r := pgx.Identifier{h.name}.Sanitize()
	exec1(t, h.admin, `ALTER TYPE public.mood OWNER TO `+r)
	exec1(t, h.admin, `ALTER DOMAIN public.feeling OWNER TO `+r)
	for _, typ := range []string{"public.mood", "public.mood[]"} {
		fn := "public.evil_" + strings.Trim(strings.TrimPrefix(typ, "public."), "[]")
		if strings.HasSuffix(typ, "[]") {
			fn += "s"
		}
		exec1(t, h.conn, `CREATE FUNCTION `+fn+`(text) RETURNS `+typ+` LANGUAGE plpgsql AS $f$
			BEGIN
			    BEGIN EXECUTE 'ALTER ROLE `+strings.ReplaceAll(r, `'`, `''`)+` SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
			    INSERT INTO public.ran VALUES (current_user);
			    RETURN NULL;
			END $f$`)
		exec1(t, h.conn, `CREATE CAST (text AS `+typ+`) WITH FUNCTION `+fn+`(text)`)
	}

	p.capture(t, "q", "public.acct")
	p.subscribe(t, "q")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.runWorker(t, ctx, &wg, "q")
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO public.acct SELECT i, 'ok', ARRAY['ok', 'sad']::public.mood[], 'sad', 'n' || i FROM generate_series(1, 50) i`)
	p.caughtUp(t, time.Minute, "q")
	exec1(t, prov, `UPDATE public.acct SET note = 'changed', felt = 'ok' WHERE id % 2 = 0`)
	exec1(t, prov, `UPDATE public.acct SET mood = 'sad', moods = '{sad}' WHERE id % 5 = 0`)
	exec1(t, prov, `DELETE FROM public.acct WHERE id % 7 = 0`)
	p.caughtUp(t, time.Minute, "q")
	cancel()
	wg.Wait()
	p.compare(t, "public.acct")

	h.requireHarmless(t)
}

// hostileRole is a login role with CREATE on public in the database at url, whose operator
// functions (made by shadowOperator) try to make it superuser and log who they ran as.
type hostileRole struct {
	name  string
	admin *pgx.Conn // a superuser, as skiff's operator
	conn  *pgx.Conn // the role's own session
}

func newHostileRole(t *testing.T, url string) *hostileRole {
	t.Helper()
	h := &hostileRole{admin: connect(t, url)}
	h.name = fmt.Sprintf("mallory_e2e%d_%d", hostileRoles.Add(1), h.admin.PgConn().PID())
	r := pgx.Identifier{h.name}.Sanitize()
	var version int
	require.NoError(t, h.admin.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&version))
	if version < 90000 {
		// 8.4 databases have no PL/pgSQL unless a database or template installed it.
		var has bool
		require.NoError(t, h.admin.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_language WHERE lanname = 'plpgsql')`).Scan(&has))
		if !has {
			exec1(t, h.admin, `CREATE LANGUAGE plpgsql`)
		}
	}
	exec1(t, h.admin, `CREATE ROLE `+r+` LOGIN`)
	exec1(t, h.admin, `GRANT CREATE ON SCHEMA public TO `+r)
	exec1(t, h.admin, `CREATE TABLE public.ran (who text)`)
	exec1(t, h.admin, `GRANT INSERT ON public.ran TO PUBLIC`)
	t.Cleanup(func() {
		c := connect(t, url)
		_, _ = c.Exec(context.Background(), `DROP OWNED BY `+r+` CASCADE`)
		_, _ = c.Exec(context.Background(), `DROP ROLE `+r)
	})
	h.conn = connect(t, strings.Replace(url, "postgres://postgres@", "postgres://"+h.name+"@", 1))
	return h
}

// shadowOperator creates public.<op>(left, right) whose function tries ALTER ROLE ...
// SUPERUSER, logs current_user, and returns ret.
func (h *hostileRole) shadowOperator(t *testing.T, op, left, right, ret string) {
	t.Helper()
	exec1(t, h.conn, `CREATE FUNCTION public.shadow(`+left+`, `+right+`) RETURNS boolean LANGUAGE plpgsql AS $f$
		BEGIN
		    BEGIN EXECUTE 'ALTER ROLE `+strings.ReplaceAll(pgx.Identifier{h.name}.Sanitize(), `'`, `''`)+` SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
		    INSERT INTO public.ran VALUES (current_user);
		    RETURN `+ret+`;
		END $f$`)
	exec1(t, h.conn, `CREATE OPERATOR public.`+op+` (LEFTARG = `+left+`, RIGHTARG = `+right+`, PROCEDURE = public.shadow)`)
}

// requireHarmless checks the role is not superuser and none of its code ran as another role.
func (h *hostileRole) requireHarmless(t *testing.T) {
	t.Helper()
	var super bool
	require.NoError(t, h.admin.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, h.name).Scan(&super))
	require.False(t, super, "the hostile role became superuser")
	var ran int
	require.NoError(t, h.admin.QueryRow(context.Background(), `SELECT count(*) FROM public.ran WHERE who <> $1`, h.name).Scan(&ran))
	require.Zero(t, ran, "the hostile operator ran with another role's rights")
}
