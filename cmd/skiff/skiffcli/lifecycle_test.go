package skiffcli

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// initTargetOn makes a fresh database on the server of a version, installs the target schema
// through `skiff init target` and returns its URL and a connection.
func initTargetOn(t *testing.T, version string) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.Shared(t, version).NewDB(t)
	code, _, stderr := skiff(t, "init", "target", "--db", url)
	require.Zero(t, code, stderr)
	conn, err := pg.Connect(context.Background(), url, "skiff-test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return url, conn
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

func consumers(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	infos, err := queue.GetConsumerInfo(context.Background(), conn)
	require.NoError(t, err)
	var out []string
	for _, c := range infos {
		out = append(out, c.Queue+"/"+c.Consumer)
	}
	return out
}

// TestUnsubscribe: unsubscribe unregisters the consumer on the provider and removes the
// subscription and its table states on the target; it refuses while a worker holds the
// subscription unless --force; without --target it unregisters an abandoned consumer.
func TestUnsubscribe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, pconn := initProvider(t)
	execAll(t, pconn, `CREATE TABLE orders (id serial PRIMARY KEY, v text)`)
	code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", "q", "orders")
	require.Zero(t, code, stderr)
	// One target each: two subscriptions of a queue may not write one destination.
	tgs, tconns := map[string]string{}, map[string]*pgx.Conn{}
	for _, c := range []string{"c1", "c2", "c3"} {
		tgs[c], tconns[c] = initTargetOn(t, "")
		execAll(t, tconns[c], `CREATE TABLE orders (id serial PRIMARY KEY, v text)`)
		code, _, stderr = skiff(t, "subscribe", "--provider", p, "--target", tgs[c], "--queue", "q", "--no-copy", "--consumer", c)
		require.Zero(t, code, stderr)
	}
	require.Equal(t, []string{"q/c1", "q/c2", "q/c3"}, consumers(t, pconn))

	// A worker holds c1.
	wconn, err := pg.Connect(ctx, tgs["c1"], "skiff worker q")
	require.NoError(t, err)
	defer wconn.Close(ctx)
	worker, err := apply.Open(ctx, wconn, apply.Config{Queue: "q", Consumer: "c1"})
	require.NoError(t, err)
	unsub := []string{"unsubscribe", "--provider", p, "--target", tgs["c1"], "--queue", "q", "--consumer", "c1"}
	code, _, stderr = skiff(t, unsub...)
	oneLineError(t, code, stderr, "another worker holds the subscription")
	require.Contains(t, stderr, "--force")
	require.Equal(t, []string{"q/c1", "q/c2", "q/c3"}, consumers(t, pconn), "nothing changed")
	require.NoError(t, worker.Close(ctx))

	code, stdout, stderr := skiff(t, unsub...)
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "consumer c1 unregistered from queue q on the provider")
	require.Contains(t, stdout, "subscription of consumer c1 to queue q removed from the target (1 table)")
	require.Equal(t, []string{"q/c2", "q/c3"}, consumers(t, pconn))
	require.Zero(t, count(t, tconns["c1"], `SELECT count(*) FROM skiff.subscription WHERE consumer = 'c1'`))
	require.Zero(t, count(t, tconns["c1"], `SELECT count(*) FROM skiff.table_state`), "its table states are gone")
	require.Equal(t, 1, count(t, tconns["c2"], `SELECT count(*) FROM skiff.table_state`), "the other subscriptions' tables stay")
	code, _, stderr = skiff(t, unsub...)
	oneLineError(t, code, stderr, "consumer c1 is not registered on queue q of the provider and has no subscription on the target")

	// --force takes the subscription from under a worker (which then stops).
	w2, err := pg.Connect(ctx, tgs["c2"], "skiff worker q")
	require.NoError(t, err)
	defer w2.Close(ctx)
	worker, err = apply.Open(ctx, w2, apply.Config{Queue: "q", Consumer: "c2"})
	require.NoError(t, err)
	defer func() { _ = worker.Close(ctx) }()
	code, stdout, stderr = skiff(t, "unsubscribe", "--provider", p, "--target", tgs["c2"], "--queue", "q", "--consumer", "c2", "--force")
	require.Zero(t, code, stderr)
	require.Contains(t, stderr, "a worker holds the subscription")
	require.Contains(t, stdout, "subscription of consumer c2 to queue q removed from the target")

	// The target is gone: unregister on the provider alone.
	code, stdout, stderr = skiff(t, "unsubscribe", "--provider", p, "--queue", "q", "--consumer", "c3")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "consumer c3 unregistered from queue q on the provider")
	require.Empty(t, consumers(t, pconn))
	require.Equal(t, 1, count(t, tconns["c3"], `SELECT count(*) FROM skiff.subscription WHERE consumer = 'c3'`), "no --target: the target is not touched")

	code, _, stderr = skiff(t, "unsubscribe", "--provider", p, "--queue", "q")
	oneLineError(t, code, stderr, "--consumer")
}

// TestQueueDrop: queue drop refuses while consumers are registered (naming them), and with
// --force removes the queue's triggers, functions, event tables and sequence — also of a
// table renamed since it was captured.
func TestQueueDrop(t *testing.T) {
	t.Parallel()
	p, conn := initProvider(t)
	execAll(t, conn, `CREATE SCHEMA app`, `CREATE TABLE app.orders (id serial PRIMARY KEY, v text)`,
		`CREATE TABLE keep (id int PRIMARY KEY)`)
	code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", "q", "app.orders")
	require.Zero(t, code, stderr)
	code, _, stderr = skiff(t, "table", "add", "--db", p, "--queue", "other", "keep")
	require.Zero(t, code, stderr)
	_, err := queue.RegisterConsumer(context.Background(), conn, "q", "skiff@old:5432/app")
	require.NoError(t, err)
	execAll(t, conn, `ALTER TABLE app.orders RENAME TO orders_v2`, `ALTER SCHEMA app RENAME TO app2`)
	var qid int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT queue_id FROM skiff.queue WHERE queue_name = 'q'`).Scan(&qid))

	code, _, stderr = skiff(t, "queue", "drop", "--db", p, "--queue", "q")
	oneLineError(t, code, stderr, "queue q has consumers: skiff@old:5432/app")
	require.Contains(t, stderr, "skiff unsubscribe")
	require.Contains(t, stderr, "--force")

	code, stdout, stderr := skiff(t, "queue", "drop", "--db", p, "--queue", "q", "--force")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "dropped queue q (1 table, 1 sequence no longer captured; 1 consumer unregistered)")
	require.Zero(t, count(t, conn, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app2.orders_v2'::regclass`))
	require.Zero(t, count(t, conn, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'skiff' AND c.relname LIKE $1`, "event\\_"+strconv.Itoa(qid)+"\\_%"))
	require.Zero(t, count(t, conn, `SELECT count(*) FROM pg_proc WHERE proname LIKE $1`, "capture\\_q"+strconv.Itoa(qid)+"\\_%"))
	require.Zero(t, count(t, conn, `SELECT count(*) FROM skiff.captured_sequence`))
	execAll(t, conn, `INSERT INTO app2.orders_v2 (v) VALUES ('after the drop')`)
	// Row and truncate triggers (and, with a statement-level INSERT capture, skiff_insert_q).
	require.Equal(t, 2, count(t, conn, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'keep'::regclass AND tgname NOT LIKE 'skiff\_insert%'`),
		"the other queue keeps its capture")

	code, _, stderr = skiff(t, "queue", "drop", "--db", p, "--queue", "q")
	oneLineError(t, code, stderr, "queue q: queue does not exist")
}

// TestUninstall: uninstall refuses while queues or subscriptions exist unless --force, then
// leaves no trigger, function, table or schema of skiff behind; in a database that is
// provider and target at once it removes only its role's part. On every installed version.
func TestUninstall(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			p, pconn := initProviderOn(t, v)
			tg, tconn := initTargetOn(t, v)
			ddl := []string{`CREATE TABLE orders (id serial PRIMARY KEY, v text)`, `CREATE TABLE items (id int PRIMARY KEY)`}
			execAll(t, pconn, ddl...)
			execAll(t, tconn, ddl...)
			code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", "q", "orders", "items")
			require.Zero(t, code, stderr)
			code, _, stderr = skiff(t, "table", "add", "--db", p, "--queue", "q2", "--key", "id", "--also-in-other-queue", "items")
			require.Zero(t, code, stderr)
			code, _, stderr = skiff(t, "subscribe", "--provider", p, "--target", tg, "--queue", "q", "--no-copy", "--consumer", "c1")
			require.Zero(t, code, stderr)
			execAll(t, pconn, `INSERT INTO orders (v) VALUES ('queued')`)

			code, _, stderr = skiff(t, "uninstall", "provider", "--db", p)
			oneLineError(t, code, stderr, "the provider has queues: q, q2")
			require.Contains(t, stderr, "--force")
			code, _, stderr = skiff(t, "uninstall", "target", "--db", tg)
			oneLineError(t, code, stderr, "the target has subscriptions: q/c1")
			require.Contains(t, stderr, "skiff unsubscribe")

			code, stdout, stderr := skiff(t, "uninstall", "target", "--db", tg, "--force")
			require.Zero(t, code, stdout+stderr)
			require.Contains(t, stdout, "target schema removed")
			require.Contains(t, stderr, "consumer c1 stays registered on the provider of queue q")
			code, stdout, stderr = skiff(t, "uninstall", "provider", "--db", p, "--force")
			require.Zero(t, code, stderr)
			require.Contains(t, stdout, "dropped queue q")
			require.Contains(t, stdout, "provider schema removed")
			for _, c := range []*pgx.Conn{pconn, tconn} {
				noSkiffLeft(t, c)
			}
			execAll(t, pconn, `INSERT INTO orders (v) VALUES ('after')`, `TRUNCATE items`)
			require.Equal(t, 2, count(t, pconn, `SELECT count(*) FROM orders`))

			// Again: nothing to do.
			code, stdout, stderr = skiff(t, "uninstall", "provider", "--db", p)
			require.Zero(t, code, stderr)
			require.Contains(t, stdout, "no provider schema")

			// One database, both roles: each uninstall removes its own part.
			b, bconn := initProviderOn(t, v)
			code, _, stderr = skiff(t, "init", "target", "--db", b)
			require.Zero(t, code, stderr)
			execAll(t, bconn, ddl...)
			code, _, stderr = skiff(t, "table", "add", "--db", b, "--queue", "q", "orders")
			require.Zero(t, code, stderr)
			code, _, stderr = skiff(t, "uninstall", "provider", "--db", b, "--force")
			require.Zero(t, code, stderr)
			require.Equal(t, 1, count(t, bconn, `SELECT count(*) FROM pg_namespace WHERE nspname = 'skiff'`), "the target's schema stays")
			rels := relations(t, bconn)
			require.Contains(t, rels, "subscription", "the target's tables stay")
			for _, r := range rels {
				require.NotRegexp(t, `^(queue|tick|consumer|captured_table|table_layout|provider_migrations|event_.*)$`, r, "provider relations are gone")
			}
			code, _, stderr = skiff(t, "init", "provider", "--db", b)
			require.Zero(t, code, stderr)
			code, _, stderr = skiff(t, "uninstall", "target", "--db", b)
			require.Zero(t, code, stderr)
			require.Positive(t, count(t, bconn, `SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
				WHERE n.nspname = 'skiff'`), "the provider's functions stay")
			code, _, stderr = skiff(t, "uninstall", "provider", "--db", b)
			require.Zero(t, code, stderr)
			noSkiffLeft(t, bconn)
		})
	}
}

// noSkiffLeft checks the catalog for anything of skiff: the schema (and with it every
// table, sequence, function and type in it) and capture triggers on user tables.
func noSkiffLeft(t *testing.T, c *pgx.Conn) {
	t.Helper()
	require.Zero(t, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = 'skiff'`), "schema skiff")
	require.Zero(t, count(t, c, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%'`), "skiff's triggers")
	require.Zero(t, count(t, c, `SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture\_q%' OR proname IN ('create_queue', 'ticker', 'next_batch')`), "skiff's functions")
	require.Zero(t, count(t, c, `SELECT count(*) FROM pg_class WHERE relname LIKE 'event\_%' OR relname IN ('queue', 'tick', 'subscription', 'table_state', 'provider_migrations', 'target_migrations')`), "skiff's tables")
}

func relations(t *testing.T, c *pgx.Conn) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'skiff' ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestWorkerStopsWhenUnsubscribed: a worker whose subscription is removed from under it
// (unsubscribe --force) stops with a clear error instead of retrying forever.
func TestWorkerStopsWhenUnsubscribed(t *testing.T) {
	t.Parallel()
	p, pconn := initProvider(t)
	tg, tconn := initTargetOn(t, "")
	execAll(t, pconn, `CREATE TABLE orders (id int PRIMARY KEY)`)
	execAll(t, tconn, `CREATE TABLE orders (id int PRIMARY KEY)`)
	code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", "q", "orders")
	require.Zero(t, code, stderr)
	code, _, stderr = skiff(t, "subscribe", "--provider", p, "--target", tg, "--queue", "q", "--no-copy", "--consumer", "c1")
	require.Zero(t, code, stderr)

	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run([]string{"--log-format", "json", "worker", "--provider", p, "--target", tg, "--queue", "q", "--consumer", "c1",
			"--min-backoff", "50ms", "--max-backoff", "200ms"}, &out, &errb)
		done <- result{code, errb.String()}
	}()
	pgtest.Eventually(t, 30*time.Second, "the worker holds the subscription", func() bool {
		return count(t, tconn, `SELECT count(*) FROM skiff.subscription WHERE worker IS NOT NULL`) == 1
	})
	code, _, stderr = skiff(t, "unsubscribe", "--provider", p, "--target", tg, "--queue", "q", "--consumer", "c1", "--force")
	require.Zero(t, code, stderr)
	select {
	case r := <-done:
		require.Equal(t, 1, r.code, r.stderr)
		require.Contains(t, r.stderr, "the worker stops")
	case <-time.After(30 * time.Second):
		t.Fatal("the worker goes on after its subscription was removed")
	}
}
