package tests

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// toCounter makes the role names of TestTargetOwnerCode unique: roles are cluster-wide.
var toCounter atomic.Int64

// TestTargetOwnerCode: the target's table belongs to a role that is not a superuser, and the
// worker and the copy connect to the target as a superuser. The owner attaches code of its
// own: a trigger enabled ALWAYS (it fires under replica role) whose function makes the owner
// superuser, later an index over a function it owns. The copy and then the worker refuse the
// table, naming the trigger or index, its function and its owner, and run none of it (the owner
// stays an ordinary role; on the previous code the copy fired the trigger and made it
// superuser); once a superuser disables the trigger and the owner drops the index, the copy
// and the batches go through and the replica equals the provider row by row. Targets from
// 9.0 (PL/pgSQL by default).
func TestTargetOwnerCode(t *testing.T) {
	t.Parallel()
	forEachPair(t, testTargetOwnerCode)
}

func testTargetOwnerCode(t *testing.T, provVersion, tgtVersion string) {
	ctx := context.Background()
	if pgtest.Shared(t, tgtVersion).Install.Num < 90000 {
		t.Skip("the owner's trigger function is PL/pgSQL, not installed by default before 9.0")
	}
	p := newPair(t, provVersion, tgtVersion, `CREATE TABLE public.acct (id integer PRIMARY KEY, v text)`)
	owner := fmt.Sprintf("owner_%d", toCounter.Add(1))
	tgtSu := connect(t, p.tgt)
	exec1(t, tgtSu, `CREATE ROLE `+owner+` LOGIN`)
	t.Cleanup(func() {
		if !t.Failed() {
			c := connect(t, p.tgt) // the role owns objects in this database only
			_, _ = c.Exec(context.Background(), `DROP OWNED BY `+owner)
			_, _ = c.Exec(context.Background(), `DROP ROLE `+owner)
		}
	})
	exec1(t, tgtSu, `CREATE SCHEMA own AUTHORIZATION `+owner)
	exec1(t, tgtSu, `ALTER TABLE public.acct OWNER TO `+owner)
	exec1(t, tgtSu, `GRANT CREATE ON SCHEMA public TO `+owner) // its indexes (PUBLIC has no CREATE there from 15)
	ownerConn := connect(t, strings.Replace(p.tgt, "postgres@", owner+"@", 1))
	var who string
	require.NoError(t, ownerConn.QueryRow(ctx, `SELECT current_user`).Scan(&who))
	require.Equal(t, owner, who)
	exec1(t, ownerConn, `CREATE FUNCTION own.promote() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN EXECUTE 'ALTER ROLE `+owner+` SUPERUSER'; RETURN NULL; END $$`)
	exec1(t, ownerConn, `CREATE TRIGGER promote AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.acct
		FOR EACH STATEMENT EXECUTE PROCEDURE own.promote()`)
	exec1(t, ownerConn, `ALTER TABLE public.acct ENABLE ALWAYS TRIGGER promote`)
	superuser := func() bool {
		var super bool
		require.NoError(t, tgtSu.QueryRow(ctx, `SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1`, owner).Scan(&super))
		return super
	}

	provConn := connect(t, p.prov)
	exec1(t, provConn, `INSERT INTO public.acct SELECT g, 'row ' || g FROM generate_series(1, 200) g`)
	p.capture(t, "q", "public.acct")
	startProc(t, "ticker", "--db", p.prov, "--poll", "50ms")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--consumer", "c1")
	require.False(t, superuser(), "the owner's trigger never ran as the copy's superuser:\n%s", out)
	require.Error(t, err, out)
	require.Contains(t, out, `trigger promote`)
	require.Contains(t, out, `own.promote()`)
	require.Contains(t, out, `owned by `+owner)

	w := startProc(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")
	pgtest.Eventually(t, time.Minute, "the worker's copy refuses the table too", func() bool {
		return strings.Count(w.String(), "owned by "+owner) >= 1
	})
	exec1(t, tgtSu, `ALTER TABLE public.acct DISABLE TRIGGER promote`)
	p.inSync(t, 2*time.Minute, "q") // copied once the trigger is disabled
	tgt := connect(t, p.tgt)

	// An index over a function the owner controls: evaluated by every write into the table.
	exec1(t, ownerConn, `CREATE FUNCTION own.ident(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT $1'`)
	exec1(t, ownerConn, `CREATE INDEX acct_ident ON public.acct (own.ident(id))`)
	refusals := strings.Count(w.String(), "owned by "+owner)
	exec1(t, provConn, `UPDATE public.acct SET v = v || ' updated'`)
	exec1(t, provConn, `INSERT INTO public.acct VALUES (1000, 'new')`)
	pgtest.Eventually(t, time.Minute, "the worker refuses the batch", func() bool {
		return strings.Count(w.String(), "owned by "+owner) > refusals
	})
	require.Contains(t, w.String(), `index public.acct_ident`)
	var updated int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM public.acct WHERE v LIKE '% updated'`).Scan(&updated))
	require.Zero(t, updated, "nothing of the refused batch is written")
	exec1(t, ownerConn, `DROP INDEX public.acct_ident`)
	p.caughtUp(t, 2*time.Minute, "q")
	p.compare(t, "public.acct")
	require.False(t, superuser())
}
