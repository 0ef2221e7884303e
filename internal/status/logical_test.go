package status_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/status"
	"github.com/skiffdb/skiff/queue"
)

// TestLogicalQueue: a logical queue is not reported for lacking ticks; its consumer shows
// its slot (confirmed LSN, WAL kept, lag in bytes); a slot nobody streams from, one keeping
// more WAL than allowed, one dropped by hand, and a skiff slot no subscription records are
// each reported, naming the slot.
func TestLogicalQueue(t *testing.T) {
	t.Parallel()
	pcfg, tcfg, prov := setup(t, "")
	ctx := context.Background()
	if pg.ServerVersion(prov) < 90400 {
		t.Skip("logical decoding needs 9.4+")
	}
	_, err := prov.Exec(ctx, `CREATE TABLE lt (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	_, err = queue.AddTable(ctx, prov, "lq", queue.TableSpec{Name: "lt", Source: queue.SourceLogical})
	require.NoError(t, err)
	_, err = queue.ForceTick(ctx, prov, "main")
	require.NoError(t, err)
	collect := func(maxWAL int64) *status.Report {
		t.Helper()
		r, err := status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Hour, LongTransaction: time.Hour,
			MaxRetainedWAL: maxWAL})
		require.NoError(t, err)
		return r
	}
	lq := func(r *status.Report) status.Queue {
		t.Helper()
		for _, q := range r.Queues {
			if q.Name == "lq" {
				return q
			}
		}
		t.Fatal("no queue lq")
		return status.Queue{}
	}

	r := collect(0)
	require.Equal(t, "logical", lq(r).Source)
	require.Empty(t, lq(r).Stall, "a logical queue has no ticker to miss")
	require.Empty(t, r.Problems)

	_, err = queue.RegisterConsumer(ctx, prov, "lq", "c1")
	require.NoError(t, err)
	r = collect(0)
	require.Contains(t, lq(r).Consumers[0].Stall, "no replication slot: run skiff subscribe")

	slot, _, err := queue.EnsureSlot(ctx, prov, "lq", "c1")
	require.NoError(t, err)
	_, err = prov.Exec(ctx, `INSERT INTO lt SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g`)
	require.NoError(t, err)
	r = collect(1024)
	c := lq(r).Consumers[0]
	require.NotNil(t, c.Slot)
	require.Equal(t, slot.Name, c.Slot.Name)
	require.False(t, c.Slot.Active)
	require.NotEmpty(t, c.Slot.ConfirmedLSN)
	require.Greater(t, c.Slot.LagBytes, int64(2000*1000), "the rows written since the slot's creation")
	require.GreaterOrEqual(t, c.Slot.RetainedWALBytes, c.Slot.LagBytes)
	require.Contains(t, c.Stall, "replication slot "+slot.Name+" inactive: worker not running?")
	require.Contains(t, c.Stall, "of WAL on the provider (more than 1.0 KiB)")
	var text bytes.Buffer
	require.NoError(t, status.Text(&text, r))
	require.Regexp(t, `queue lq +logical \(`, text.String())
	require.Contains(t, text.String(), "slot "+slot.Name+" inactive")

	// A skiff slot of no subscription; the consumer's own slot dropped by hand.
	_, err = prov.Exec(ctx, `SELECT pg_create_logical_replication_slot('skiff_d1_q999_s1', 'test_decoding')`)
	require.NoError(t, err)
	_, err = prov.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot.Name)
	require.NoError(t, err)
	r = collect(0)
	c = lq(r).Consumers[0]
	require.True(t, c.Slot.Missing)
	require.Contains(t, c.Stall, "is gone")
	var orphan string
	for _, p := range r.Problems {
		if strings.HasPrefix(p, "replication slot skiff_d1_q999_s1 ") {
			orphan = p
		}
	}
	require.Regexp(t, `^replication slot skiff_d1_q999_s1 belongs to no subscription \(left by a removed one\?\): it keeps [0-9.]+ [KMG]?i?B of WAL `+
		`on the provider; drop it if nothing uses it: SELECT pg_drop_replication_slot\('skiff_d1_q999_s1'\)$`, orphan)
	_, err = prov.Exec(ctx, `SELECT pg_drop_replication_slot('skiff_d1_q999_s1')`)
	require.NoError(t, err)
}
