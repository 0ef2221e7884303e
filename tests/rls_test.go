package tests

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// rlsError is what the server says when a query of a role that does not bypass row-level
// security meets a policy while row_security is off; rlsHint is a piece of skiff's advice.
const (
	rlsError = "row-level security"
	rlsHint  = "BYPASSRLS"
)

// TestRowLevelSecurity: skiff's role (no superuser, the privileges docs/roles.md lists) meets
// tables whose owner enabled row-level security with a policy that shows it only some rows.
// Nothing is copied, compared or applied through the policy: on the provider the initial copy
// of the table fails naming the table and the way out (BYPASSRLS), where it copied the rows the
// policy showed before and reported success; once the role bypasses row-level security the
// worker copies the table again, whole. On the target an UPDATE of every row stops the worker
// (it updated the rows the policy showed and warned of the others before); once the role
// bypasses it there too, the batch applies whole. Each side ends equal to the provider, row by
// row. PostgreSQL 9.5 and later (row-level security).
func TestRowLevelSecurity(t *testing.T) {
	t.Parallel()
	forEachPair(t, testRowLevelSecurity)
}

func testRowLevelSecurity(t *testing.T, provVersion, tgtVersion string) {
	ctx := context.Background()
	if pgtest.Shared(t, provVersion).Install.Num < 90500 || pgtest.Shared(t, tgtVersion).Install.Num < 90500 {
		t.Skip("row-level security is 9.5+")
	}
	ps, ts, provApp, tgtApp := lpSetup(t, provVersion, tgtVersion, false)
	prov, tgt := ps.url(ps.skiff), ts.url(ts.skiff)
	run := func(args ...string) string {
		t.Helper()
		return mustSkiff(t, args...)
	}
	provSu, tgtSu := connect(t, ps.url("postgres")), connect(t, ts.url("postgres"))

	// The column lpWriter's updates set (TestLeastPrivilege adds it by DDL).
	exec1(t, provApp, `ALTER TABLE appdata.orders ADD COLUMN status text`)
	exec1(t, tgtApp, `ALTER TABLE appdata.orders ADD COLUMN status text`)
	// The owner's policy shows other roles the accounts of one region only.
	exec1(t, provApp, `ALTER TABLE appdata.accounts ENABLE ROW LEVEL SECURITY`)
	exec1(t, provApp, `CREATE POLICY us_only ON appdata.accounts USING (region = 'us')`)

	run("init", "provider", "--db", prov)
	run("init", "target", "--db", tgt)
	lock := lockPrivilege(ps.num)
	exec1(t, provApp, `GRANT `+lock+` ON appdata.accounts, appdata.orders TO `+ps.skiff)
	run("table", "add", "--db", prov, "--queue", "rls", "appdata.orders", "appdata.accounts", "appdata.order_ids")
	exec1(t, provApp, `REVOKE `+lock+` ON appdata.accounts, appdata.orders FROM `+ps.skiff)
	startProc(t, "ticker", "--db", prov, "--poll", "50ms")

	out, err := skiff(t, "subscribe", "--provider", prov, "--target", tgt, "--queue", "rls", "--consumer", "c1")
	require.Error(t, err, "a copy through a policy is a failure, not a copy of the rows the policy shows:\n%s", out)
	require.Contains(t, out, `"appdata"."accounts" -> "appdata"."accounts" (copying: FAILED`)
	require.Contains(t, out, rlsError)
	require.Contains(t, out, rlsHint, "the error says how to let the copy see every row")
	require.Contains(t, out, `provider: COPY "appdata"."accounts"`)
	require.NotContains(t, out, "COPY from stdin failed", "the provider's error alone, not the target's echo of it")

	w := startProc(t, "worker", "--provider", prov, "--target", tgt, "--queue", "rls", "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")
	tgtConn := connect(t, tgt)
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	lpWriter(t, wctx, &wwg, ps.url(ps.app), 1, &txs)
	pgtest.Eventually(t, time.Minute, "the worker's copy fails on the policy too", func() bool {
		return t.Failed() || strings.Contains(w.String(), rlsError)
	})
	require.False(t, t.Failed())
	require.False(t, allInSync(t, tgtConn), "appdata.accounts is not in sync while the policy hides rows from skiff")

	exec1(t, provSu, `ALTER ROLE `+ps.skiff+` BYPASSRLS`)
	pgtest.Eventually(t, 3*time.Minute, "every table in sync once skiff bypasses row-level security", func() bool { return allInSync(t, tgtConn) })
	before := txs.Load()
	pgtest.Eventually(t, time.Minute, "writers run", func() bool { return t.Failed() || txs.Load() > before+100 })
	require.False(t, t.Failed())
	wstop()
	wwg.Wait()
	p := &pair{prov: prov, tgt: tgt}
	p.caughtUp(t, 2*time.Minute, "rls")
	provConn := connect(t, prov)
	awkCompare(t, provConn, tgtConn, "appdata.accounts", "")
	awkCompare(t, provConn, tgtConn, "appdata.orders", "")

	// The target's owner hides the odd orders from skiff; every order is updated.
	exec1(t, tgtApp, `ALTER TABLE appdata.orders ENABLE ROW LEVEL SECURITY`)
	exec1(t, tgtApp, `CREATE POLICY even_only ON appdata.orders USING (id % 2 = 0)`)
	failures := strings.Count(w.String(), rlsError)
	exec1(t, provApp, `UPDATE appdata.orders SET amount = amount + 1, note = 'after the policy'`)
	pgtest.Eventually(t, time.Minute, "the worker stops on the target's policy", func() bool {
		return t.Failed() || strings.Count(w.String(), rlsError) > failures
	})
	require.False(t, t.Failed())
	var updated int
	require.NoError(t, tgtSu.QueryRow(ctx, `SELECT count(*) FROM appdata.orders WHERE note = 'after the policy'`).Scan(&updated))
	require.Zero(t, updated, "no row of the batch is applied while the policy hides some")
	require.Contains(t, w.String(), rlsHint)

	exec1(t, tgtSu, `ALTER ROLE `+ts.skiff+` BYPASSRLS`)
	p.caughtUp(t, 2*time.Minute, "rls")
	awkCompare(t, provConn, tgtConn, "appdata.orders", "")
	p.sequencesSynced(t, time.Minute, "rls")
	run("compare", "--provider", prov, "--target", tgt, "--queue", "rls")
	require.NoError(t, tgtSu.QueryRow(ctx, `SELECT count(*) FROM appdata.orders WHERE note = 'after the policy'`).Scan(&updated))
	require.Positive(t, updated)
}
