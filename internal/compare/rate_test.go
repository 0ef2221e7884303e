package compare_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCompareRate measures how fast compare checks a table of pgbench_accounts shape; it runs
// only with SKIFF_COMPARE_BENCH=<rows>, e.g.
//
//	SKIFF_COMPARE_BENCH=1000000 go test ./internal/compare/ -run TestCompareRate -v -count=1
func TestCompareRate(t *testing.T) {
	env := os.Getenv("SKIFF_COMPARE_BENCH")
	if env == "" {
		t.Skip("set SKIFF_COMPARE_BENCH=<rows> to measure compare's rate")
	}
	n, err := strconv.Atoi(env)
	require.NoError(t, err)
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, fmt.Sprintf(`CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
			INSERT INTO accounts SELECT g, g / 100000, 0, 'filler ' || g FROM generate_series(1, %d) g; ANALYZE accounts`, n))
		require.NoError(t, err)
	}
	accounts := change.Table{Schema: "public", Name: "accounts"}
	start := time.Now()
	res := run(t, p, tg, false, compare.Pair{Source: accounts, Dest: accounts})
	el := time.Since(start)
	require.True(t, res[0].Equal)
	t.Logf("checksum: %d rows in %s: %.0f rows/s (both sides at once)", n, el, float64(n)/el.Seconds())

	_, err = pgtest.Connect(t, tg).Exec(ctx, `UPDATE accounts SET abalance = 1 WHERE aid = 7`)
	require.NoError(t, err)
	start = time.Now()
	res = run(t, p, tg, true, compare.Pair{Source: accounts, Dest: accounts})
	el = time.Since(start)
	require.Equal(t, []compare.RowDiff{{Key: "(7)", Kind: "different", Values: []string{"7"}}}, res[0].Diffs)
	t.Logf("checksum then --rows: %d rows in %s: %.0f rows/s", n, el, float64(n)/el.Seconds())
}
