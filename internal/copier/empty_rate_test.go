package copier_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestEmptyRate measures what emptying a destination costs a copy of a full table (a
// resync): TRUNCATE when no other table references it, DELETE (as replica) when a foreign
// key does, with and without VACUUM between the copies (a DELETE leaves the old rows as dead
// tuples until vacuum). It is a measurement, not a timed test: it runs only with
// SKIFF_EMPTY_BENCH=<rows>, e.g.
//
//	SKIFF_EMPTY_BENCH=1000000 go test ./internal/copier/ -run TestEmptyRate -v -count=1
func TestEmptyRate(t *testing.T) {
	env := os.Getenv("SKIFF_EMPTY_BENCH")
	if env == "" {
		t.Skip("set SKIFF_EMPTY_BENCH=<rows> to measure TRUNCATE against DELETE in a resync")
	}
	n, err := strconv.Atoi(env)
	require.NoError(t, err)
	srv := pgtest.New(t, pgtest.Options{})
	p, tg := srv.NewDB(t), srv.NewDB(t)
	ctx := context.Background()
	ddl := `CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
		CREATE TABLE plain (LIKE accounts INCLUDING ALL)`
	pc := pgtest.Connect(t, p)
	_, err = pc.Exec(ctx, ddl)
	require.NoError(t, err)
	_, err = pc.Exec(ctx, fmt.Sprintf(`INSERT INTO accounts SELECT g, g / 100000, 0, 'filler ' || g FROM generate_series(1, %d) g;
		INSERT INTO plain SELECT * FROM accounts`, n))
	require.NoError(t, err)
	_, err = pc.Exec(ctx, `VACUUM ANALYZE`)
	require.NoError(t, err)
	tc := pgtest.Connect(t, tg)
	_, err = tc.Exec(ctx, ddl+`; CREATE TABLE history (id int PRIMARY KEY, aid int REFERENCES accounts)`)
	require.NoError(t, err)
	pcfg, tcfg := configs(t, p, tg)
	table := func(name string) copier.Table {
		tb := change.Table{Schema: "public", Name: name}
		return copier.Table{Source: tb, Dest: tb}
	}
	run := func(name string, vacuum bool) []time.Duration {
		var times []time.Duration
		for round := 0; round < 4; round++ {
			if vacuum {
				_, err := tc.Exec(ctx, `VACUUM `+name)
				require.NoError(t, err)
			}
			start := time.Now()
			res, err := copier.Copy(ctx, copier.Config{Provider: pcfg, Target: tcfg}, []copier.Table{table(name)})
			require.NoError(t, err)
			require.EqualValues(t, n, res[0].Rows)
			if round > 0 { // the first copy fills an empty table: no emptying to measure
				times = append(times, time.Since(start))
			}
		}
		slices.Sort(times)
		return times
	}
	// The emptying statements alone, on the full tables, rolled back.
	stmt := func(sql string) []time.Duration {
		var times []time.Duration
		for round := 0; round < 5; round++ {
			tx, err := tc.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SET LOCAL session_replication_role = replica`)
			require.NoError(t, err)
			start := time.Now()
			_, err = tx.Exec(ctx, sql)
			require.NoError(t, err)
			times = append(times, time.Since(start))
			require.NoError(t, tx.Rollback(ctx))
		}
		slices.Sort(times)
		return times
	}
	trunc := run("plain", false)
	run("accounts", false) // fill it
	truncStmt := stmt(`TRUNCATE plain`)
	delStmt := stmt(`DELETE FROM accounts`)
	del := run("accounts", false)
	delVac := run("accounts", true)
	var size int64
	require.NoError(t, tc.QueryRow(ctx, `SELECT pg_total_relation_size('accounts')`).Scan(&size))
	t.Logf("resync of %d rows, PostgreSQL %s", n, srv.Install.Major)
	t.Logf("TRUNCATE alone: median %s of %v", truncStmt[len(truncStmt)/2], truncStmt)
	t.Logf("DELETE alone:   median %s of %v", delStmt[len(delStmt)/2], delStmt)
	t.Logf("TRUNCATE + COPY (not referenced):            median %s of %v", trunc[len(trunc)/2], trunc)
	t.Logf("DELETE + COPY (referenced), autovacuum only: median %s of %v", del[len(del)/2], del)
	t.Logf("DELETE + COPY (referenced), VACUUM before:   median %s of %v", delVac[len(delVac)/2], delVac)
	t.Logf("size of the referenced table after the DELETE copies: %.1f MB", float64(size)/1e6)
}
