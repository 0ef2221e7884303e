package copier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCopyRate measures the initial copy against a plain psql pipe between the same two
// servers, `psql P -c "COPY t TO STDOUT" | psql T -c "COPY t FROM STDIN"`, and logs the ratio.
// It is a measurement, not a timed test: it runs only with SKIFF_COPY_BENCH=<rows>, e.g.
//
//	SKIFF_COPY_BENCH=1000000 go test ./internal/copier/ -run TestCopyRate -v -count=1
//
// SKIFF_COPY_ROUNDS sets the number of paired rounds (default 5); the medians are compared.
func TestCopyRate(t *testing.T) {
	env := os.Getenv("SKIFF_COPY_BENCH")
	if env == "" {
		t.Skip("set SKIFF_COPY_BENCH=<rows> to measure the copy rate")
	}
	n, err := strconv.Atoi(env)
	require.NoError(t, err)
	prov := pgtest.New(t, pgtest.Options{})
	tgt := pgtest.New(t, pgtest.Options{})
	p, tg := prov.URL("postgres"), tgt.URL("postgres")
	ctx := context.Background()
	ddl := `CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))`
	pc := pgtest.Connect(t, p)
	_, err = pc.Exec(ctx, ddl)
	require.NoError(t, err)
	_, err = pc.Exec(ctx, fmt.Sprintf(`INSERT INTO accounts SELECT g, g / 100000, 0, 'filler ' || g FROM generate_series(1, %d) g`, n))
	require.NoError(t, err)
	_, err = pc.Exec(ctx, `VACUUM ANALYZE accounts`)
	require.NoError(t, err)
	tc := pgtest.Connect(t, tg)
	_, err = tc.Exec(ctx, ddl)
	require.NoError(t, err)

	psql := filepath.Join(prov.Install.BinDir, "psql")
	pipeCmd := fmt.Sprintf(`%s -X -q "%s" -c "COPY accounts TO STDOUT" | %s -X -q "%s" -c "COPY accounts FROM STDIN"`, psql, p, psql, tg)
	pcfg, tcfg := configs(t, p, tg)
	tbl := copier.Table{Source: change.Table{Schema: "public", Name: "accounts"}, Dest: change.Table{Schema: "public", Name: "accounts"}}

	var skiffTimes, pipeTimes []time.Duration
	var bytes int64
	rounds := 5
	if r := os.Getenv("SKIFF_COPY_ROUNDS"); r != "" {
		rounds, err = strconv.Atoi(r)
		require.NoError(t, err)
	}
	var ratios []float64
	var cpu time.Duration // the copier's own CPU (this process), all rounds
	for round := 0; round < rounds; round++ {
		_, err = tc.Exec(ctx, `TRUNCATE accounts`)
		require.NoError(t, err)
		start := time.Now()
		out, err := exec.Command("bash", "-o", "pipefail", "-c", pipeCmd).CombinedOutput()
		require.NoError(t, err, string(out))
		pipeTimes = append(pipeTimes, time.Since(start))

		var before, after syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &before))
		start = time.Now()
		res, err := copier.Copy(ctx, copier.Config{Provider: pcfg, Target: tcfg}, []copier.Table{tbl})
		require.NoError(t, err)
		skiffTimes = append(skiffTimes, time.Since(start))
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &after))
		cpu += time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
		ratios = append(ratios, pipeTimes[round].Seconds()/skiffTimes[round].Seconds())
		require.EqualValues(t, n, res[0].Rows)
		bytes = res[0].Bytes
	}
	slices.Sort(skiffTimes)
	slices.Sort(pipeTimes)
	slices.Sort(ratios)
	sk, pp := skiffTimes[rounds/2], pipeTimes[rounds/2] // medians
	t.Logf("pipe command: %s", pipeCmd)
	t.Logf("rows %d, COPY text %.1f MB, PostgreSQL %s", n, float64(bytes)/1e6, prov.Install.Major)
	t.Logf("skiff copier: %s median of %v: %.0f rows/s, %.1f MB/s", sk, skiffTimes, float64(n)/sk.Seconds(), float64(bytes)/sk.Seconds()/1e6)
	t.Logf("psql pipe:    %s median of %v: %.0f rows/s, %.1f MB/s", pp, pipeTimes, float64(n)/pp.Seconds(), float64(bytes)/pp.Seconds()/1e6)
	t.Logf("copier process CPU per copy: %s (%.1f µs/row)", cpu/time.Duration(rounds), float64(cpu.Microseconds())/float64(rounds)/float64(n))
	t.Logf("ratio skiff/pipe (rate) of the medians: %.2f; per round (paired, sorted): %.2f", pp.Seconds()/sk.Seconds(), ratios)
}

// TestCopyRateThroughHandlers measures the copy of one table through handlers: none (a plain
// COPY of the table), the columns handler (set-based: COPY (SELECT …) TO STDOUT), the filter
// handler keeping about half the rows (set-based) and the columns handler wrapped in a Func (no
// SQL form: every row through Go). A measurement, not a timed test: it runs only with
// SKIFF_COPY_BENCH=<rows>, e.g.
//
//	SKIFF_COPY_BENCH=1000000 go test ./internal/copier/ -run TestCopyRateThroughHandlers -v -count=1
func TestCopyRateThroughHandlers(t *testing.T) {
	env := os.Getenv("SKIFF_COPY_BENCH")
	if env == "" {
		t.Skip("set SKIFF_COPY_BENCH=<rows> to measure the copy rate through handlers")
	}
	n, err := strconv.Atoi(env)
	require.NoError(t, err)
	prov := pgtest.New(t, pgtest.Options{})
	tgt := pgtest.New(t, pgtest.Options{})
	p, tg := prov.URL("postgres"), tgt.URL("postgres")
	ctx := context.Background()
	pc := pgtest.Connect(t, p)
	_, err = pc.Exec(ctx, `CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))`)
	require.NoError(t, err)
	_, err = pc.Exec(ctx, fmt.Sprintf(`INSERT INTO accounts SELECT g, g %% 2, 0, 'filler ' || g FROM generate_series(1, %d) g`, n))
	require.NoError(t, err)
	_, err = pc.Exec(ctx, `VACUUM ANALYZE accounts`)
	require.NoError(t, err)
	tc := pgtest.Connect(t, tg)
	_, err = tc.Exec(ctx, `CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
		CREATE TABLE narrow (aid int PRIMARY KEY, bid int NOT NULL, balance int NOT NULL)`)
	require.NoError(t, err)
	reg := handlers.NewRegistry()
	require.NoError(t, reg.Register("narrow_go", func(change.Table, json.RawMessage) (handlers.Handler, error) {
		h := &handlers.Columns{Exclude: []string{"filler"}, Rename: map[string]string{"abalance": "balance"}}
		return handlers.Func(h.Handle), nil
	}))
	pcfg, tcfg := configs(t, p, tg)
	accounts := change.Table{Schema: "public", Name: "accounts"}
	narrow := change.Table{Schema: "public", Name: "narrow"}
	narrowCfg := `{"exclude": ["filler"], "rename": {"abalance": "balance"}}`
	for _, c := range []struct {
		name string
		tbl  copier.Table
		rows int
	}{
		{"no handler (COPY table TO STDOUT)", copier.Table{Source: accounts, Dest: accounts}, n},
		{"columns (COPY (SELECT …) TO STDOUT)", copier.Table{Source: accounts, Dest: narrow, Handler: "columns", Config: narrowCfg}, n},
		{"filter, half the rows (SQL)", copier.Table{Source: accounts, Dest: accounts, Handler: "filter", Config: `{"column": "bid", "in": ["1"]}`}, (n + 1) / 2},
		{"columns without an SQL form (Go)", copier.Table{Source: accounts, Dest: narrow, Handler: "narrow_go"}, n},
	} {
		var times []time.Duration
		for range 3 {
			start := time.Now()
			res, err := copier.Copy(ctx, copier.Config{Provider: pcfg, Target: tcfg, Registry: reg}, []copier.Table{c.tbl})
			require.NoError(t, err)
			require.EqualValues(t, c.rows, res[0].Rows)
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		t.Logf("%-40s median %s of %v: %.0f provider rows/s", c.name, times[1], times, float64(n)/times[1].Seconds())
	}
}
