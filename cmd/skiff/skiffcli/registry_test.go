package skiffcli

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// upperRegistry is the built-in handlers and "upper", which writes column v in upper case.
func upperRegistry(t *testing.T) *handlers.Registry {
	t.Helper()
	reg := handlers.NewRegistry()
	require.NoError(t, reg.Register("upper", func(change.Table, json.RawMessage) (handlers.Handler, error) {
		return handlers.Func(func(ev *change.Event) (bool, error) {
			if i := slices.Index(ev.Columns, "v"); i >= 0 && ev.Values[i].Valid {
				vals := slices.Clone(ev.Values) // never edit an event's slices in place
				vals[i] = change.Text(strings.ToUpper(vals[i].Text))
				ev.Values = vals
			}
			return true, nil
		}), nil
	}))
	return reg
}

// TestRegistryReachesEveryCommand: Options.Registry is the registry of every command of the
// binary. subscribe --handler names a custom handler only with it (the default registry
// refuses the name), its initial copy runs it, the worker runs it on replicated rows, and
// compare runs it on the provider's rows (equal with it; refused without it).
func TestRegistryReachesEveryCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, pconn := initProvider(t)
	tg, tconn := initTargetOn(t, "")
	execAll(t, pconn, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'copied'), (2, NULL)`)
	execAll(t, tconn, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", "q", "t")
	require.Zero(t, code, stderr)
	reg := upperRegistry(t)
	custom := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(append([]string{"--log-format", "json"}, args...), &out, &errb, Options{Registry: reg})
		return code, out.String(), errb.String()
	}
	subscribe := []string{"subscribe", "--provider", p, "--target", tg, "--queue", "q", "--consumer", "c1", "--handler", "public.t=upper"}

	code, _, stderr = skiff(t, subscribe...)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "upper")
	require.Zero(t, count(t, tconn, `SELECT count(*) FROM skiff.subscription`), "refused: nothing recorded")

	code, _, stderr = custom(subscribe...)
	require.Zero(t, code, stderr)
	require.Equal(t, []string{"1 COPIED", "2 "}, rowsOf(t, tconn), "the initial copy ran the handler")

	done := make(chan string, 1)
	go func() {
		_, _, stderr := custom("worker", "--provider", p, "--target", tg, "--queue", "q", "--consumer", "c1",
			"--min-backoff", "50ms", "--max-backoff", "200ms")
		done <- stderr
	}()
	execAll(t, pconn, `INSERT INTO t VALUES (3, 'replicated')`, `UPDATE t SET v = 'updated' WHERE id = 2`)
	tick, err := queue.ForceTick(ctx, pconn, "q")
	require.NoError(t, err)
	pgtest.Eventually(t, time.Minute, "the worker applies the tick", func() bool {
		return count(t, tconn, `SELECT count(*) FROM skiff.subscription WHERE tick >= $1`, tick) == 1
	})
	require.Equal(t, []string{"1 COPIED", "2 UPDATED", "3 REPLICATED"}, rowsOf(t, tconn), "the worker ran the handler")

	compare := []string{"compare", "--provider", p, "--target", tg, "--queue", "q", "--rows"}
	code, stdout, stderr := custom(compare...)
	require.Zero(t, code, stdout+stderr)
	code, stdout, stderr = skiff(t, compare...)
	require.Equal(t, 1, code, stdout+stderr)
	require.Contains(t, stdout+stderr, "upper")

	// The worker ends with its subscription (it stops by itself, exit 1).
	code, _, stderr = skiff(t, "unsubscribe", "--provider", p, "--target", tg, "--queue", "q", "--consumer", "c1", "--force")
	require.Zero(t, code, stderr)
	select {
	case stderr := <-done:
		require.Contains(t, stderr, "the worker stops")
	case <-time.After(time.Minute):
		t.Fatal("the worker goes on after its subscription was removed")
	}
}

// rowsOf lists t's rows on conn as "id v".
func rowsOf(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id::text || ' ' || coalesce(v, '') FROM t ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}
