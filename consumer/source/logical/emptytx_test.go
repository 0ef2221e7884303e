package logical

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestBatchCutAfterEmptyTransaction: MaxWait passes while a transaction with nothing for the
// queue is being received (pgoutput before 15 sends BEGIN and COMMIT of every transaction;
// test_decoding those that write skiff's own tables); the batch filled before it is cut at
// its commit. It once waited for the next transaction with changes for the queue: on a
// server where only other tables were written, the rows already received were not applied
// and the slot was not confirmed, however long that lasted.
//
// B, 500,000 rows in a table the queue does not replicate, is written before A (one row of
// the queue's table) commits and commits just after it: the server decodes B's BEGIN right
// after A's COMMIT, then B's changes from its spill files, which takes much longer than
// MaxWait, then B's COMMIT. Nothing is written afterwards.
func TestBatchCutAfterEmptyTransaction(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "a"}
		p.exec(t, `CREATE TABLE a (id int PRIMARY KEY, v text)`)
		other := "public.other"
		if plugin == TestDecoding {
			// test_decoding decodes every table; the source drops only skiff's own.
			p.exec(t, `CREATE SCHEMA skiff`)
			other = "skiff.other"
		}
		p.exec(t, `CREATE TABLE `+other+` (id int PRIMARY KEY, pad text)`)
		p.publish(t, tbl)
		p.createSlot(t)

		s := p.source(t, func(c *Config) { c.MaxWait = 50 * time.Millisecond })
		require.NoError(t, s.Resume(ctx, change.Position{}))

		bconn := pgtest.Connect(t, p.url)
		btx, err := bconn.Begin(ctx)
		require.NoError(t, err)
		_, err = btx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s SELECT g, 'pad' FROM generate_series(1, 500000) g`, other))
		require.NoError(t, err)
		p.exec(t, `INSERT INTO a VALUES (1, 'one')`)
		aEnd := p.walEnd(t) // A's commit record ends here; B's commit comes after
		require.NoError(t, btx.Commit(ctx))

		// Nothing more is written: the batch must come by MaxWait, not by a later write.
		waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		b, err := s.NextBatch(waitCtx)
		require.NoError(t, err, "the batch holding A is cut although only B came after it")
		var evs []change.Event
		require.NoError(t, s.Events(ctx, b, func(e []change.Event) error {
			evs = append(evs, e...)
			return nil
		}))
		require.Len(t, evs, 1)
		require.Equal(t, tbl, evs[0].Table)
		finish(t, s, b)
		// Whether B came inside this batch depends on the timing (and on pgoutput 15+, which
		// sends no empty transaction): logged, so that a run shows what it exercised.
		t.Logf("%s: batch end %s, A's commit ends at %s: B in the batch: %v",
			plugin, LSN(b.End.LSN), aEnd, LSN(b.End.LSN) > aEnd)
	})
}
