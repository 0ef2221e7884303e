package tests

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/queue"
)

// TestStuckSlotStopsWorker: a logical queue whose slot cannot decode past a point (here its
// publication was dropped by hand, so pgoutput fails on every change after that) does not
// keep its worker retrying forever. The worker applies what came before, retries the same
// failure a few times, then exits non-zero with an error naming the slot, the position, the
// server's message and the remedy; skiff status shows the same on the subscription. The
// target holds every row committed before the failing change and no other. On 18, pgoutput
// skips a missing publication with a warning instead: the test runs on 15.
func TestStuckSlotStopsWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPair(t, "15", "15", `CREATE TABLE s (id int PRIMARY KEY, v text);`)
	p.src = source{plugin: queue.PluginPgoutput}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `INSERT INTO s SELECT g, 'row ' || g FROM generate_series(1, 100) g`)
	p.capture(t, "qs", "public.s")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "--consumer", "c1")
	require.NoError(t, err, out)
	exec1(t, prov, `INSERT INTO s VALUES (101, 'before the drop')`)
	k, err := queue.QueueKind(ctx, prov, "qs")
	require.NoError(t, err)
	exec1(t, prov, `DROP PUBLICATION `+change.QuoteIdent(k.Publication))
	exec1(t, prov, `INSERT INTO s VALUES (102, 'after the drop')`)

	out, err = skiff(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "--consumer", "c1",
		"--min-backoff", "20ms", "--max-backoff", "100ms")
	require.Error(t, err, "the worker stops by itself")
	slot, err := queue.ConsumerSlot(ctx, prov, "qs", "c1")
	require.NoError(t, err)
	for _, want := range []string{"replication slot " + slot.Name + " cannot go past LSN", "failed 5 times in a row", "does not exist", "skiff unsubscribe"} {
		require.Contains(t, out, want)
	}
	require.Equal(t, 4, strings.Count(out, `"batch failed, retrying"`), "retried 4 times before it stopped:\n%s", out)

	var ids []int
	rows, err := tgt.Query(ctx, `SELECT id FROM s WHERE id > 99 ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var id int
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int{100, 101}, ids, "everything before the failing change, nothing after")

	out, _ = skiff(t, "status", "--provider", p.prov, "--target", p.tgt)
	for _, want := range []string{"cannot go past LSN", slot.Name, "skiff unsubscribe"} {
		require.Contains(t, out, want, "status:\n%s", out)
	}
	t.Logf("status:\n%s", out)
}
