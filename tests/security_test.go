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
	admin := connect(t, p.prov)
	role := fmt.Sprintf("mallory_e2e%d_%d", hostileRoles.Add(1), admin.PgConn().PID())
	r := pgx.Identifier{role}.Sanitize()
	exec1(t, admin, `CREATE ROLE `+r+` LOGIN`)
	exec1(t, admin, `GRANT CREATE ON SCHEMA public TO `+r)
	exec1(t, admin, `CREATE TABLE public.ran (who text)`)
	exec1(t, admin, `GRANT INSERT ON public.ran TO PUBLIC`)
	t.Cleanup(func() {
		c := connect(t, p.prov)
		_, _ = c.Exec(context.Background(), `DROP OWNED BY `+r+` CASCADE`)
		_, _ = c.Exec(context.Background(), `DROP ROLE `+r)
	})
	m := connect(t, strings.Replace(p.prov, "postgres://postgres@", "postgres://"+role+"@", 1))
	exec1(t, m, `CREATE FUNCTION public.gt_ni(numeric, integer) RETURNS boolean LANGUAGE plpgsql AS $f$
		BEGIN
		    BEGIN EXECUTE 'ALTER ROLE `+strings.ReplaceAll(r, `'`, `''`)+` SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
		    INSERT INTO public.ran VALUES (current_user);
		    RETURN $1 OPERATOR(pg_catalog.>) $2;
		END $f$`)
	exec1(t, m, `CREATE OPERATOR public.> (LEFTARG = numeric, RIGHTARG = integer, PROCEDURE = public.gt_ni)`)
	exec1(t, admin, `INSERT INTO public.acct SELECT i, i % 3 - 1, 'n' || i FROM generate_series(1, 300) i`)

	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "q", "--where", "amount > 0", "public.acct")
	require.NoError(t, err, out)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)

	var super bool
	require.NoError(t, admin.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&super))
	require.False(t, super, "the hostile role became superuser")
	var ran int
	require.NoError(t, admin.QueryRow(context.Background(), `SELECT count(*) FROM public.ran WHERE who <> $1`, role).Scan(&ran))
	require.Zero(t, ran, "the hostile operator ran with another role's rights")
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
	admin := connect(t, p.tgt)
	role := fmt.Sprintf("mallory_tgt%d_%d", hostileRoles.Add(1), admin.PgConn().PID())
	r := pgx.Identifier{role}.Sanitize()
	exec1(t, admin, `CREATE ROLE `+r+` LOGIN`)
	exec1(t, admin, `GRANT CREATE ON SCHEMA public TO `+r)
	exec1(t, admin, `CREATE TABLE public.ran (who text)`)
	exec1(t, admin, `GRANT INSERT ON public.ran TO PUBLIC`)
	t.Cleanup(func() {
		c := connect(t, p.tgt)
		_, _ = c.Exec(context.Background(), `DROP OWNED BY `+r+` CASCADE`)
		_, _ = c.Exec(context.Background(), `DROP ROLE `+r)
	})
	m := connect(t, strings.Replace(p.tgt, "postgres://postgres@", "postgres://"+role+"@", 1))
	exec1(t, m, `CREATE FUNCTION public.eq_mood(public.mood, public.mood) RETURNS boolean LANGUAGE plpgsql AS $f$
		BEGIN
		    BEGIN EXECUTE 'ALTER ROLE `+strings.ReplaceAll(r, `'`, `''`)+` SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
		    INSERT INTO public.ran VALUES (current_user);
		    RETURN $1::text OPERATOR(pg_catalog.=) $2::text;
		END $f$`)
	exec1(t, m, `CREATE OPERATOR public.= (LEFTARG = public.mood, RIGHTARG = public.mood, PROCEDURE = public.eq_mood)`)

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

	var super bool
	require.NoError(t, admin.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&super))
	require.False(t, super, "the hostile role became superuser")
	var ran int
	require.NoError(t, admin.QueryRow(context.Background(), `SELECT count(*) FROM public.ran WHERE who <> $1`, role).Scan(&ran))
	require.Zero(t, ran, "the hostile operator ran with the worker's rights")
}
