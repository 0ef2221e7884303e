package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestSlotCreatedAcrossATruncate: a TRUNCATE commits while skiff subscribe's replication
// slot is being created, and a transaction older than it is still running when the slot's
// snapshot builder turns full. PostgreSQL then builds the slot's first historic catalog
// snapshot without the TRUNCATE (the builder tracks no commit before its full snapshot, and
// that snapshot's xmin is the older transaction's), and keeps it until the next transaction
// that changes the catalog commits: a row written to the truncated table after the slot was
// created cannot be decoded ("could not map filenode … to relation OID"), at every restart of
// the stream, and the subscription is stuck. Seen under the concurrent writers of
// TestAwkwardNamesAndValues on 10, 15 and 18. subscribe settles a new slot (a catalog change
// of its own, the transactions running then waited for, the slot advanced past them) before
// it copies the tables: the row arrives.
//
// The test orders the transactions around the slot's creation by the locks it waits on: the
// slot waits for the transactions running when it starts (a), then, once its snapshot is
// full, for those running at that point (c).
func TestSlotCreatedAcrossATruncate(t *testing.T) {
	t.Parallel()
	forEachLogical(t, func(t *testing.T, provVersion, _ string, src source) { testSlotAcrossTruncate(t, provVersion, src) })
}

func testSlotAcrossTruncate(t *testing.T, provVersion string, src source) {
	// A server of its own: no other test's transactions in its running-transactions records.
	p := newPairOn(t, pgtest.New(t, pgtest.Options{Version: provVersion}), pgtest.Shared(t, ""),
		`CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY)`)
	p.src = src
	ctx := context.Background()
	prov := connect(t, p.prov)
	exec1(t, prov, `INSERT INTO t SELECT g, 'before ' || g FROM generate_series(1, 10) g`)
	p.capture(t, "qs", "public.t")

	begin := func() (pgx.Tx, string) {
		tx, err := connect(t, p.prov).Begin(ctx)
		require.NoError(t, err)
		var xid string
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_catalog.txid_current()::text`).Scan(&xid))
		return tx, xid
	}
	// waitedOn waits until a backend waits for the transaction xid to end.
	waitedOn := func(xid string) {
		pgtest.Eventually(t, time.Minute, "the slot waits for transaction "+xid, func() bool {
			var n int
			require.NoError(t, prov.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_locks
				WHERE locktype = 'transactionid' AND NOT granted AND transactionid::text = $1`, xid).Scan(&n))
			return n > 0
		})
	}

	skiffBinary(t) // built here, not in the goroutine
	a, axid := begin()
	var wg sync.WaitGroup
	var out string
	var subErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, subErr = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qs", "--consumer", "c1")
	}()
	waitedOn(axid) // the slot's builder started: a is older than it

	c, cxid := begin() // younger than the builder's start, older than the TRUNCATE
	exec1(t, prov, `BEGIN; TRUNCATE t; INSERT INTO t SELECT g, 'truncated ' || g FROM generate_series(1, 5) g; COMMIT`)
	require.NoError(t, a.Commit(ctx))
	waitedOn(cxid) // the snapshot is full, its xmin c's

	exec1(t, prov, `INSERT INTO other VALUES (1)`) // a change decoded now builds the snapshot the slot keeps
	require.NoError(t, c.Commit(ctx))
	wg.Wait()
	require.NoError(t, subErr, out)

	exec1(t, prov, `INSERT INTO t VALUES (100, 'after the slot'); UPDATE t SET v = 'updated' WHERE id = 2`)
	wctx, cancel := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	defer func() { cancel(); wwg.Wait() }()
	p.runWorker(t, wctx, &wwg, "qs")
	p.caughtUp(t, time.Minute, "qs")
	p.compare(t, "public.t")
}
