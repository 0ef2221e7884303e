package tests

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/cmd/skiff/skiffcli"
	"github.com/skiffdb/skiff/examples/customhandler/legacy"
	"github.com/skiffdb/skiff/handlers"
)

// TestExampleCustomHandler runs examples/customhandler's handler as its binary does
// (skiffcli.WithHandler): the tables of schema legacy go to schema app, and each row of
// legacy.users becomes two target rows (app.users without email, app.user_emails with it).
// Subscribe copies under writes (inserts, updates, key changes, deletes), the worker catches
// up, and compare — which runs the provider's rows through the same handler — finds the
// target equal; a wrong email on the target makes it say DIFFERENT.
func TestExampleCustomHandler(t *testing.T) {
	t.Parallel()
	forEachPair(t, testExampleCustomHandler)
}

func testExampleCustomHandler(t *testing.T, provVersion, tgtVersion string) {
	n := copyRows(t) / 40
	p := newPair(t, provVersion, tgtVersion, `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE SCHEMA legacy`)
	exec1(t, prov, `CREATE TABLE legacy.users (id int PRIMARY KEY, name text, email text)`)
	exec1(t, prov, `CREATE TABLE legacy.orders (id int PRIMARY KEY, user_id int, total numeric)`)
	exec1(t, prov, fmt.Sprintf(`INSERT INTO legacy.users SELECT g, 'u' || g, CASE WHEN g %% 9 <> 0 THEN 'u' || g || '@x' END FROM generate_series(1, %d) g`, n))
	exec1(t, prov, fmt.Sprintf(`INSERT INTO legacy.orders SELECT g, g %% 100, g * 1.5 FROM generate_series(1, %d) g`, n))
	exec1(t, tgt, `CREATE SCHEMA app`)
	exec1(t, tgt, `CREATE TABLE app.users (id int PRIMARY KEY, name text)`)
	exec1(t, tgt, `CREATE TABLE app.user_emails (id int PRIMARY KEY, email text)`)
	exec1(t, tgt, `CREATE TABLE app.orders (id int PRIMARY KEY, user_id int, total numeric)`)
	p.capture(t, "qe", "legacy.users", "legacy.orders")

	cli := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := skiffcli.Run(append([]string{"--log-format", "json"}, args...), &out, &out, skiffcli.WithHandler(legacy.Name, legacy.New))
		return code, out.String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qe")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	var next atomic.Int64
	next.Store(10 * int64(n))
	for i := range 2 {
		stmtWriter(t, wctx, &wwg, p.prov, uint64(i), &txs, func(rng *rand.Rand) (string, []any) {
			switch r := rng.IntN(10); {
			case r < 3:
				return `UPDATE legacy.users SET email = $2 WHERE id = $1`, []any{1 + rng.IntN(n), randText(rng)}
			case r < 4:
				return `UPDATE legacy.users SET id = $2 WHERE id = $1`, []any{1 + rng.IntN(n), next.Add(1)}
			case r < 5:
				return `DELETE FROM legacy.users WHERE id = $1`, []any{1 + rng.IntN(n)}
			case r < 7:
				return `INSERT INTO legacy.users VALUES ($1, 'new', $2)`, []any{next.Add(1), randText(rng)}
			default:
				return `UPDATE legacy.orders SET total = total + 1 WHERE id = $1`, []any{1 + rng.IntN(n)}
			}
		})
	}
	code, out := cli("subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qe", "--consumer", "c1",
		"--handler", "legacy.users=legacy", "--handler-config", `legacy.users={"split_column": "email", "split_table": "user_emails"}`,
		"--handler", "legacy.orders=legacy")
	require.Zero(t, code, out)
	reg := handlers.NewRegistry()
	require.NoError(t, reg.Register(legacy.Name, legacy.New))
	p.runWorkerWith(t, ctx, &wg, "qe", reg)
	p.inSync(t, 2*time.Minute, "qe")
	wstop()
	wwg.Wait()
	require.Positive(t, txs.Load())
	p.caughtUp(t, 2*time.Minute, "qe")

	code, out = cli("compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qe")
	require.Zero(t, code, out)
	requireSameRows(t, prov, tgt, `SELECT id, name FROM legacy.users`, `SELECT * FROM app.users`)
	requireSameRows(t, prov, tgt, `SELECT id, email FROM legacy.users`, `SELECT * FROM app.user_emails`)
	requireSameRows(t, prov, tgt, `SELECT * FROM legacy.orders`, `SELECT * FROM app.orders`)

	exec1(t, tgt, `UPDATE app.user_emails SET email = 'wrong' WHERE id = (SELECT min(id) FROM app.user_emails)`)
	code, out = cli("compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qe", "--rows")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, `"app"."user_emails" (`)
	cancel()
	wg.Wait()
}
