package tests

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// fkDDL: parent is referenced by child's foreign key on both sides; child's key cascades, so
// a copy of parent that deleted through the key would empty child on the target.
const fkDDL = `
CREATE TABLE parent (id int PRIMARY KEY, v text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent ON DELETE CASCADE, note text);
CREATE TABLE other (id int PRIMARY KEY, v text);
`

// TestResyncReferencedTable: the target has the provider's foreign keys. skiff subscribe
// copies both tables; the referenced one is then damaged on the target and resynced with skiff
// table resync while its referencing table holds rows and writers go on; the worker copies it
// again (the referencing rows stay, nothing cascades) and every table ends equal.
func TestResyncReferencedTable(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", fkDDL)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 2000) g;
		INSERT INTO child SELECT g, 1 + g % 2000, 'c' || g FROM generate_series(1, 5000) g`)
	p.capture(t, "qf", "public.parent", "public.child", "public.other")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qf", "--consumer", "c1")
	require.NoError(t, err, out)
	require.Contains(t, out, `"public"."parent" -> "public"."parent" (catching-up: 2000 rows copied)`)

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qf")
	startProc(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "qf", "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")
	p.inSync(t, 2*time.Minute, "qf")

	// Writers: new parents with children, changed children.
	wctx, wstop := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		c := connect(t, p.prov)
		for i := 1; wctx.Err() == nil; i++ {
			err := pgx.BeginFunc(wctx, c, func(tx pgx.Tx) error {
				for _, sql := range []string{
					`INSERT INTO parent VALUES (10000 + $1, 'new')`,
					`INSERT INTO child VALUES (10000 + $1, 10000 + $1, 'new')`,
					// $1::int: 8.4 types $1 text from the first use, then finds no text % integer.
					`UPDATE child SET note = 'changed ' || $1::int WHERE id = 1 + $1::int % 5000`,
				} {
					if _, err := tx.Exec(wctx, sql, i); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil && wctx.Err() == nil {
				t.Errorf("writer: %v", err)
				return
			}
		}
	}()

	exec1(t, tgt, `SET session_replication_role = replica; UPDATE parent SET v = 'damaged' WHERE id % 10 = 0; RESET session_replication_role`)
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qf", "--consumer", "c1", "public.parent")
	require.NoError(t, err, out)
	pgtest.Eventually(t, 2*time.Minute, "parent copied again", func() bool {
		s := tableStates(t, tgt)["parent"]
		return s == "catching-up+snap" || s == "in-sync+snap"
	})
	var children int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM child WHERE id <= 5000`).Scan(&children))
	require.Equal(t, 5000, children, "the copy of parent must leave child's rows alone")
	wstop()
	wwg.Wait()
	p.inSync(t, 2*time.Minute, "qf")
	p.caughtUp(t, 2*time.Minute, "qf")
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qf")
	require.NoError(t, err, out)
	p.compare(t, "public.parent", "public.child", "public.other")
	cancel()
}

// TestFailingCopyDoesNotStallQueue: one table's copy fails (the target column has another
// type) while the worker runs: the other tables keep replicating, skiff status names the
// table and the error and exits 1; once the target is fixed, skiff table resync copies it at
// once and every table ends equal.
func TestFailingCopyDoesNotStallQueue(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", fkDDL)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE TABLE typed (id int PRIMARY KEY, v text); INSERT INTO typed VALUES (1, 'not a number')`)
	exec1(t, tgt, `CREATE TABLE typed (id int PRIMARY KEY, v int)`)
	exec1(t, prov, `INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 100) g`)
	p.capture(t, "qt", "public.parent", "public.child", "public.other", "public.typed")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qt", "--consumer", "c1")
	require.Error(t, err, out)
	require.Contains(t, out, `"public"."typed" -> "public"."typed" (copying: FAILED`)

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qt")
	w := startProc(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "qt", "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")
	pgtest.Eventually(t, time.Minute, "the worker's copy of typed fails too", func() bool {
		for _, line := range strings.Split(w.String(), "\n") {
			if strings.Contains(line, `"msg":"table copy failed, will copy again"`) && strings.Contains(line, `"table":"\"public\".\"typed\""`) {
				return true
			}
		}
		return false
	})

	// typed keeps failing; the others replicate meanwhile, typed's changes (which no copy
	// snapshot holds) wait in its backlog.
	exec1(t, prov, `INSERT INTO typed VALUES (2, 'still not a number')`)
	exec1(t, prov, `INSERT INTO other VALUES (1, 'while typed fails'); INSERT INTO child VALUES (1, 1, 'c')`)
	tick, err := queue.ForceTick(ctx, prov, "qt")
	require.NoError(t, err)
	pgtest.Eventually(t, time.Minute, "the other tables replicate while typed's copy fails", func() bool {
		var n int
		var at int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT (SELECT count(*) FROM other) + (SELECT count(*) FROM child),
			(SELECT tick FROM skiff.subscription)`).Scan(&n, &at))
		return n == 2 && at >= tick
	})
	require.NotContains(t, w.String(), `"msg":"batch failed, retrying"`, "no batch waits for typed's copy")
	require.NotContains(t, w.String(), `"msg":"waiting for an initial copy's snapshot"`)
	require.True(t, strings.HasPrefix(tableStates(t, tgt)["typed"], "copying"), tableStates(t, tgt)["typed"])
	var backlog int
	pgtest.Eventually(t, time.Minute, "typed's events are held in its backlog", func() bool {
		require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM skiff.copy_backlog WHERE source_name = 'typed'`).Scan(&backlog))
		return backlog > 0
	})

	out, err = skiff(t, "status", "--provider", p.prov, "--target", p.tgt)
	require.Error(t, err, out)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.ExitCode(), out)
	require.Contains(t, out, `copy of table public.typed failing`)
	require.Contains(t, out, "invalid input syntax for")
	require.NotContains(t, out, "not running")
	js, err := exec.Command(skiffBinary(t), "status", "--provider", p.prov, "--target", p.tgt, "--json").Output()
	require.Error(t, err, "exit 1 with --json too")
	var rep struct {
		Queues []struct {
			Consumers []struct {
				Subscription struct {
					Tables []struct {
						Source    string `json:"source"`
						State     string `json:"state"`
						CopyError string `json:"copy_error"`
					} `json:"tables"`
				} `json:"subscription"`
			} `json:"consumers"`
		} `json:"queues"`
		Problems []string `json:"problems"`
	}
	require.NoError(t, json.Unmarshal(js, &rep), string(js))
	var failing []string
	for _, tb := range rep.Queues[0].Consumers[0].Subscription.Tables {
		if tb.CopyError != "" {
			failing = append(failing, tb.Source)
		}
	}
	require.Equal(t, []string{"public.typed"}, failing)
	require.Len(t, rep.Problems, 1, strings.Join(rep.Problems, "\n"))

	// Fixed on the target: a resync copies it now, not after the retry's backoff.
	exec1(t, tgt, `ALTER TABLE typed ALTER COLUMN v TYPE text`)
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qt", "--consumer", "c1", "public.typed")
	require.NoError(t, err, out)
	p.inSync(t, 2*time.Minute, "qt")
	exec1(t, prov, `UPDATE typed SET v = 'after the fix'`)
	p.caughtUp(t, time.Minute, "qt")
	out, err = skiff(t, "status", "--provider", p.prov, "--target", p.tgt)
	require.NoError(t, err, out)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qt")
	require.NoError(t, err, out)
	p.compare(t, "public.parent", "public.child", "public.other", "public.typed")
	cancel()
}
