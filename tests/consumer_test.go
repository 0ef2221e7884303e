package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/queue"
)

// spellings returns three connection strings of one database: the URL the harness gives
// (127.0.0.1), the same with localhost, and a keyword/value string.
func spellings(t *testing.T, url string) (ip, localhost, keywords string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", cfg.Host)
	return url, strings.Replace(url, "@127.0.0.1:", "@localhost:", 1),
		fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s sslmode=disable application_name=kv", cfg.Port, cfg.Database, cfg.User)
}

// subscriptions counts the target's subscriptions of a queue and the provider's consumers of it.
func subscriptions(t *testing.T, p *pair, q string) (onTarget, onProvider int) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, connect(t, p.tgt).QueryRow(ctx, `SELECT count(*) FROM skiff.subscription WHERE queue = $1`, q).Scan(&onTarget))
	infos, err := queue.GetConsumerInfo(ctx, connect(t, p.prov))
	require.NoError(t, err)
	for _, in := range infos {
		if in.Queue == q {
			onProvider++
		}
	}
	return onTarget, onProvider
}

// TestConsumerNameIndependentOfSpelling: a subscription made through one spelling of the
// target's URL (127.0.0.1) is found by the worker, table resync and a second subscribe
// through others (localhost, keyword/value); the second subscribe, run while the worker
// replicates, resumes the subscription (no second consumer, no copy again). A subscription
// named by an earlier skiff after its URL (skiff@127.0.0.1:port/db) keeps working under any
// spelling; a queue of the same name on another provider is refused without --consumer; a
// second consumer of the queue into the same tables is refused.
func TestConsumerNameIndependentOfSpelling(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
		CREATE TABLE "old" (id int PRIMARY KEY)`) // quoted: 8.4 reads a bare old or new as a rule's OLD/NEW
	tgt := connect(t, p.tgt)
	exec1(t, tgt, `TRUNCATE t`)
	p.capture(t, "qn", "t")
	tIP, tLocal, tKV := spellings(t, p.tgt)
	_, pLocal, _ := spellings(t, p.prov)

	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", tIP, "--queue", "qn")
	require.NoError(t, err, out)
	require.Contains(t, out, "catching-up: 100 rows copied")
	var name string
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT consumer FROM skiff.subscription WHERE queue = 'qn'`).Scan(&name))
	require.Regexp(t, `^skiff@t\d+_\w+/[0-9a-f]{16}$`, name, "named after the target database, not its URL")

	startProc(t, "ticker", "--db", p.prov, "--poll", "50ms")
	worker := startProc(t, "worker", "--provider", pLocal, "--target", tLocal, "--queue", "qn", "--min-backoff", "100ms")
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO t VALUES (101, 'new'), (102, 'new')`)
	p.inSync(t, time.Minute, "qn")
	p.caughtUp(t, time.Minute, "qn")
	require.Contains(t, worker.String(), `"consumer":"`+name+`"`)

	// Subscribe again through a third spelling while the worker runs: resumed, nothing copied.
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", tKV, "--queue", "qn")
	require.NoError(t, err, out)
	require.Contains(t, out, `"public"."t" -> "public"."t" (in-sync: already subscribed)`)
	require.Contains(t, out, "subscription resumed")
	require.NotContains(t, out, "rows copied")
	onTarget, onProvider := subscriptions(t, p, "qn")
	require.Equal(t, [2]int{1, 1}, [2]int{onTarget, onProvider}, "one subscription, one consumer")
	require.Equal(t, map[string]string{"t": "in-sync+snap"}, tableStates(t, tgt), "the copy is not done again")

	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", tKV, "--queue", "qn", "t")
	require.NoError(t, err, out)
	exec1(t, prov, `UPDATE t SET v = 'changed' WHERE id <= 10`)
	p.inSync(t, time.Minute, "qn")
	p.caughtUp(t, time.Minute, "qn")
	p.compare(t, "t")

	// A second consumer of the queue into the same table is refused.
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", tIP, "--queue", "qn", "--consumer", "other", "--no-copy")
	require.Error(t, err, out)
	require.Contains(t, out, "destination is written by another subscription of the queue")

	// The queue of the same name on another provider: a subscription of its own (its
	// consumer names the provider), refused here because it would write the same table
	// without --merge (tests.TestMergeProviders subscribes two such providers).
	other := newPair(t, "", "", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	other.capture(t, "qn", "t")
	out, err = skiff(t, "subscribe", "--provider", other.prov, "--target", tIP, "--queue", "qn", "--no-copy")
	require.Error(t, err, out)
	require.Contains(t, out, "qn/"+name+"/postgres@", "the second provider's subscription is named after it")
	require.Contains(t, out, "destination is written by another subscription of the queue")
	onTarget, onProvider = subscriptions(t, p, "qn")
	require.Equal(t, [2]int{1, 1}, [2]int{onTarget, onProvider})

	// A subscription an earlier skiff named after its URL: found under every spelling.
	p.capture(t, "qold", "old")
	legacy := "skiff@" + strings.TrimPrefix(strings.SplitN(tIP, "?", 2)[0], "postgres://postgres@")
	ctx := context.Background()
	_, err = queue.RegisterConsumer(ctx, prov, "qold", legacy)
	require.NoError(t, err)
	_, err = apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "qold", Consumer: legacy, Provider: "p"},
		[]change.Route{{Source: change.Table{Schema: "public", Name: "old"}, Dest: change.Table{Schema: "public", Name: "old"}, State: change.StateInSync}})
	require.NoError(t, err)
	startProc(t, "worker", "--provider", p.prov, "--target", tKV, "--queue", "qold", "--min-backoff", "100ms")
	exec1(t, prov, `INSERT INTO "old" SELECT generate_series(1, 10)`)
	p.caughtUp(t, time.Minute, "qold")
	p.compare(t, `"old"`)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", tLocal, "--queue", "qold", "--no-copy")
	require.NoError(t, err, out)
	require.Contains(t, out, "already subscribed")
	onTarget, onProvider = subscriptions(t, p, "qold")
	require.Equal(t, [2]int{1, 1}, [2]int{onTarget, onProvider})
}
