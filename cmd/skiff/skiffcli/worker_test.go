package skiffcli

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// TestWorkerStartsAllQueuesOrNone: a worker given several queues starts all of them or none.
// The second queue's subscription is held by another worker: the command fails naming that
// queue and the cause, and the first queue — connected, locked and with a batch waiting —
// applied nothing and is free for another worker as soon as the command returns.
func TestWorkerStartsAllQueuesOrNone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, pconn := initProvider(t)
	tg, tconn := initTargetOn(t, "")
	ddl := []string{`CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, v text)`}
	execAll(t, pconn, ddl...)
	execAll(t, tconn, ddl...)
	for q, table := range map[string]string{"qa": "a", "qb": "b"} {
		code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", q, table)
		require.Zero(t, code, stderr)
		code, _, stderr = skiff(t, "subscribe", "--provider", p, "--target", tg, "--queue", q, "--no-copy", "--consumer", "c1")
		require.Zero(t, code, stderr)
	}
	// A batch waits for queue qa: a worker that started it would apply it at once.
	execAll(t, pconn, `INSERT INTO a VALUES (1, 'x')`)
	_, err := queue.ForceTick(ctx, pconn, "qa")
	require.NoError(t, err)

	// Another worker holds qb's subscription.
	holder, err := pg.Connect(ctx, tg, "other worker")
	require.NoError(t, err)
	t.Cleanup(func() { _ = holder.Close(context.Background()) })
	app, err := apply.Open(ctx, holder, apply.Config{Queue: "qb", Consumer: "c1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = app.Close(context.Background()) })

	code, stdout, stderr := skiff(t, "--log-format", "json", "worker", "--provider", p, "--target", tg,
		"--queue", "qa", "--queue", "qb", "--consumer", "c1")
	require.Equal(t, 1, code, stdout+stderr)
	require.Contains(t, stderr, "queue qb")
	require.Contains(t, stderr, apply.ErrLocked.Error())
	require.Contains(t, stderr, "no queue started")
	require.NotContains(t, stderr, "worker started")

	// qa is free at once (its connection closed before the command returned) and untouched.
	other, err := pg.Connect(ctx, tg, "next worker")
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	qa, err := apply.Open(ctx, other, apply.Config{Queue: "qa", Consumer: "c1"})
	require.NoError(t, err, "qa must not be held by a worker left running")
	require.NoError(t, qa.Close(ctx))
	require.Zero(t, count(t, tconn, `SELECT count(*) FROM a`))
	require.Zero(t, count(t, tconn, `SELECT coalesce(sum(batches_applied), 0)::int FROM skiff.subscription`))
}
