package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestIdleLogicalQueueRetainsLittleWAL: a logical queue whose tables see no writes while
// another table of the database (in no queue) is written heavily. The running worker answers
// the server's keepalives and confirms the stream's idle position, so the slot's restart_lsn
// follows the WAL: the WAL it retains stays a few MB while tens of MB are written elsewhere
// (a slot that is never confirmed would hold all of it). The queue's table, copied by
// subscribe, goes in-sync without a write to it: the slot's confirmed position passes the
// copy point.
func TestIdleLogicalQueueRetainsLittleWAL(t *testing.T) {
	t.Parallel()
	forEachLogical(t, func(t *testing.T, provVersion, _ string, src source) { testIdleQueue(t, provVersion, src) })
}

func testIdleQueue(t *testing.T, provVersion string, src source) {
	const (
		written = 48 << 20 // WAL written by the busy table
		bound   = 4 << 20  // WAL the idle slot may retain once the writes stop
	)
	// A server of its own: the WAL positions are the test's alone.
	p := newPairOn(t, pgtest.New(t, pgtest.Options{Version: provVersion}), pgtest.Shared(t, ""),
		`CREATE TABLE idle (id int PRIMARY KEY, v text); CREATE TABLE busy (id bigserial PRIMARY KEY, pad text);`)
	p.src = src
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO idle SELECT g, 'row ' || g FROM generate_series(1, 100) g`)
	p.capture(t, "qi", "public.idle")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qi", "--consumer", "c1")
	require.NoError(t, err, out)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	p.runWorker(t, ctx, &wg, "qi")
	p.inSync(t, time.Minute, "qi")

	slot, err := queue.ConsumerSlot(ctx, prov, "qi", "c1")
	require.NoError(t, err)
	current, diff := `pg_catalog.pg_current_wal_lsn()`, `pg_catalog.pg_wal_lsn_diff`
	if pg.ServerVersion(prov) < 100000 {
		current, diff = `pg_catalog.pg_current_xlog_location()`, `pg_catalog.pg_xlog_location_diff`
	}
	retained := func() int64 {
		var n int64
		require.NoError(t, prov.QueryRow(ctx, `SELECT `+diff+`(`+current+`, restart_lsn)::bigint
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot.Name).Scan(&n))
		return n
	}
	var start string
	require.NoError(t, prov.QueryRow(ctx, `SELECT `+current+`::text`).Scan(&start))
	walSince := func() int64 {
		var n int64
		require.NoError(t, prov.QueryRow(ctx, `SELECT `+diff+`(`+current+`, $1::text::pg_lsn)::bigint`, start).Scan(&n))
		return n
	}

	passedStart := func() bool {
		var n int64
		require.NoError(t, prov.QueryRow(ctx, `SELECT `+diff+`(restart_lsn, $2::text::pg_lsn)::bigint
			FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot.Name, start).Scan(&n))
		return n > 0
	}

	// Heavy writes elsewhere, in many transactions, sampling the slot's retained WAL, for
	// longer than the server's interval between running-transactions records (15 s), the
	// points where a slot's restart_lsn can move. With pgoutput the writes go on until the
	// restart point has moved past where they began (at most 3 minutes): the walsender decodes
	// every table's WAL before it can move the slot, and on a loaded machine it reaches the
	// first running-transactions record after the writes began well after the 25 s.
	busy := connect(t, p.prov)
	began := time.Now()
	var most int64
	moved := false
	for walSince() < written || time.Since(began) < 25*time.Second ||
		src.plugin == queue.PluginPgoutput && !moved && time.Since(began) < 3*time.Minute {
		exec1(t, busy, `INSERT INTO busy (pad) SELECT repeat('x', 500) FROM generate_series(1, 200)`)
		exec1(t, busy, `DELETE FROM busy WHERE id % 2 = 0`)
		most = max(most, retained())
		moved = moved || passedStart()
	}
	total := walSince()
	t.Logf("%d MB of WAL written in %v; the idle slot retained at most %.1f MB meanwhile", total>>20, time.Since(began).Round(time.Millisecond), float64(most)/(1<<20))

	// The slot follows the WAL: its restart point moves up to the end of the writes once the
	// server logs its next running-transactions record (at most 15 s on an active server).
	var last int64
	pgtest.Eventually(t, 2*time.Minute, "the idle slot retains under 4 MB", func() bool {
		last = retained()
		return last < bound
	})
	t.Logf("retained WAL after the writes: %.1f MB", float64(last)/(1<<20))
	if src.plugin == queue.PluginPgoutput {
		// pgoutput sends nothing of the busy table: the worker confirms keepalives' WAL end
		// and the restart point moves at each running-transactions record. test_decoding
		// decodes every table: the worker reads the busy table's rows (and skips them), and
		// the slot moves as fast as it reads, behind the writes on a loaded machine.
		require.True(t, moved, "the slot's restart point moved while the writes went on (%d MB written, at most %d MB retained)", total>>20, most>>20)
	}

	// Still replicating: a change to the idle table arrives.
	exec1(t, prov, `UPDATE idle SET v = 'woken' WHERE id = 7`)
	p.caughtUp(t, time.Minute, "qi")
	p.compare(t, "public.idle")
}
