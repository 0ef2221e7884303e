package queue

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestLongTransactionReadByItself: a transaction running across the batch's start tick whose
// events span many ids is read by itself and comes whole at the place of its last event; the
// batch holds the same events as the one sorted read, and every row's changes keep their order.
func TestLongTransactionReadByItself(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupQueue(t, v, "long", "sorted")
			c := p.conn(t)
			exec(t, c, `INSERT INTO t VALUES (50, 'before')`)
			_, err := ForceTick(ctx, c, "q")
			require.NoError(t, err)

			lc := p.conn(t)
			ltx, err := lc.Begin(ctx)
			require.NoError(t, err)
			lexec := func(sql string) {
				_, err := ltx.Exec(ctx, sql)
				require.NoError(t, err, sql)
			}
			lexec(`INSERT INTO t SELECT g, 'L' FROM generate_series(1000, 1299) g`)
			// L runs across two ticks: a snapshot's xmax is the latest completed txid + 1, so
			// only the second one (after the first tick's own transaction) lists L as running.
			for range 2 {
				_, err = ForceTick(ctx, c, "q")
				require.NoError(t, err)
			}
			exec(t, c, `UPDATE t SET v = 'S1' WHERE id = 50`) // commits before L writes row 50
			lexec(`UPDATE t SET v = v || '+1' WHERE id BETWEEN 1000 AND 1299`)
			exec(t, c, `INSERT INTO t VALUES (60, 'S3')`) // commits while L runs
			lexec(`UPDATE t SET v = 'L' WHERE id = 50`)
			lexec(`DELETE FROM t WHERE id BETWEEN 1000 AND 1009`)
			lexec(`INSERT INTO t SELECT g, 'again' FROM generate_series(1000, 1004) g`)
			require.NoError(t, ltx.Commit(ctx))
			exec(t, c, `UPDATE t SET v = 'S2' WHERE id = 50`) // after L's commit
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)

			longSrc, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "long", MaxEvents: -1, ChunkSize: 7, LongTxEvents: 100})
			require.NoError(t, err)
			sortedSrc, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "sorted", MaxEvents: -1, LongTxEvents: -1})
			require.NoError(t, err)
			for range 3 { // the batches before L's start tick
				readBatch(t, longSrc)
				readBatch(t, sortedSrc)
			}
			_, got := readBatch(t, longSrc)
			_, sorted := readBatch(t, sortedSrc)
			require.Len(t, sorted, 300+300+10+5+1+3)

			// Expected: the sorted events with L's moved before the first other event after
			// its last one.
			var ltxid int64
			for _, e := range sorted {
				if e.Values[0].Text == "1000" {
					ltxid = e.TxID
				}
			}
			var lEvents, others []change.Event
			for _, e := range sorted {
				if e.TxID == ltxid {
					lEvents = append(lEvents, e)
				} else {
					others = append(others, e)
				}
			}
			last := lEvents[len(lEvents)-1].ID
			var want []change.Event
			placed := false
			for _, e := range others {
				if !placed && e.ID > last {
					want, placed = append(want, lEvents...), true
				}
				want = append(want, e)
			}
			if !placed {
				want = append(want, lEvents...)
			}
			require.Equal(t, idsOf(want), idsOf(got))
			require.NotEqual(t, idsOf(sorted), idsOf(got), "L's events were not read by themselves")
			for i := range got {
				require.Equal(t, want[i].Values, got[i].Values)
				require.Equal(t, want[i].Op, got[i].Op)
			}
			// Row 50: S1, then L, then S2.
			var row50 []string
			for _, e := range got {
				if e.Values[0].Text == "50" {
					row50 = append(row50, e.Values[1].Text)
				}
			}
			require.Equal(t, []string{"S1", "L", "S2"}, row50)
		})
	}
}

func idsOf(evs []change.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// TestLongTransactionReadNeedsNoSort: a long transaction's events are read along the event
// table's index, without a Sort node, even once the table has statistics saying the
// transaction is all it holds; and the batch's other events are read without visiting its
// rows.
func TestLongTransactionReadNeedsNoSort(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := setupQueue(t, v, "c1")
			c := p.conn(t)
			lc := p.conn(t)
			ltx, err := lc.Begin(ctx)
			require.NoError(t, err)
			_, err = ltx.Exec(ctx, `INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g`)
			require.NoError(t, err)
			for range 2 {
				_, err = ForceTick(ctx, c, "q")
				require.NoError(t, err)
			}
			_, err = ltx.Exec(ctx, `UPDATE t SET v = 'y'`)
			require.NoError(t, err)
			require.NoError(t, ltx.Commit(ctx))
			exec(t, c, `INSERT INTO t VALUES (-1, 'after')`)
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)
			exec(t, c, `ANALYZE skiff.event_1_0`)

			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1", MaxEvents: -1})
			require.NoError(t, err)
			readBatch(t, src)
			readBatch(t, src)
			b, err := src.NextBatch(ctx)
			require.NoError(t, err)
			long, err := src.longTxs(ctx, b)
			require.NoError(t, err)
			require.Len(t, long, 1)
			require.Len(t, long[0].Tables, 1)

			tx, err := c.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, `SET LOCAL enable_sort = off`)
			require.NoError(t, err)
			plan := explain(t, tx, longTxQuery(long[0], long[0].Tables[0]))
			require.NotContains(t, plan, "Sort", plan)
			require.Contains(t, plan, "Index Scan", plan)

			rest, err := BatchEventSQLExcept(ctx, c, b.ID, []int64{long[0].TxID})
			require.NoError(t, err)
			require.NotContains(t, rest, "ev_txid >= "+strconv.FormatInt(long[0].TxID, 10)+" ")
			var n int
			require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM (`+rest+`) r`).Scan(&n))
			require.Equal(t, 1, n)

			var evs []change.Event
			require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
				evs = append(evs, chunk...)
				return nil
			}))
			require.Len(t, evs, 40001)
			for i := 1; i < len(evs); i++ {
				require.Less(t, evs[i-1].ID, evs[i].ID)
			}
		})
	}
}

func explain(t *testing.T, db pg.DB, sql string) string {
	t.Helper()
	rows, err := db.Query(context.Background(), `EXPLAIN `+sql)
	require.NoError(t, err)
	var lines []string
	for rows.Next() {
		var l string
		require.NoError(t, rows.Scan(&l))
		lines = append(lines, l)
	}
	require.NoError(t, rows.Err())
	return strings.Join(lines, "\n")
}

// TestTicksWithoutCommitsMerge: the ticks cut while only a long transaction writes (its ids
// move, nothing commits) are merged into one empty batch, up to the last tick before a
// commit; the long transaction is still running at the next batch's start, so it is read by
// itself; a commit between two ticks ends the merge. Before provider migration 11 every one of
// those ticks was a batch of its own (L's ids exceed MaxEvents). The ticks are cut by
// force_tick, and by skiff.ticker() as the daemon cuts them (L writes a row before each, so
// that one is due): its queue-row lock took a subtransaction, a second transaction id per
// tick, which ended the merge at once before provider migration 13 (9.5+: SKIP LOCKED, no
// subtransaction) and migration 14 (before 9.5: the tick records that id).
func TestTicksWithoutCommitsMerge(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		for _, daemon := range []bool{false, true} {
			name := "pg" + v + "/force_tick"
			if daemon {
				name = "pg" + v + "/ticker"
			}
			t.Run(name, func(t *testing.T) { ticksWithoutCommitsMerge(t, v, daemon) })
		}
	}
}

func ticksWithoutCommitsMerge(t *testing.T, v string, daemon bool) {
	t.Parallel()
	ctx := context.Background()
	// A server of its own, autovacuum off: txids are the cluster's, and a commit in
	// any database (another test's, an ANALYZE) rightly ends the merge.
	url := pgtest.New(t, pgtest.Options{Version: v, Settings: map[string]string{"autovacuum": "off"}}).NewDB(t)
	migratetest.Install(t, url, migrate.Provider)
	p := prepareQueue(t, &provider{url: url}, "c")
	c := p.conn(t)
	force := func() int64 {
		id, err := ForceTick(ctx, c, "q")
		require.NoError(t, err)
		return id
	}
	if daemon {
		require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxLag, "0"))
	}
	start := force()
	lc := p.conn(t)
	ltx, err := lc.Begin(ctx)
	require.NoError(t, err)
	extra := 0
	tick := force
	if daemon {
		tick = func() int64 {
			// L writes on: the queue has pending events, a tick is due.
			_, err := ltx.Exec(ctx, `INSERT INTO t VALUES ($1, 'L')`, 2000+extra)
			require.NoError(t, err)
			extra++
			id, ok, err := Tick(ctx, c, "q")
			require.NoError(t, err)
			require.True(t, ok, "a tick is due")
			return id
		}
	}
	_, err = ltx.Exec(ctx, `INSERT INTO t SELECT g, 'L' FROM generate_series(1000, 1299) g`)
	require.NoError(t, err)
	var quiet []int64
	for range 4 {
		quiet = append(quiet, tick())
	}
	exec(t, c, `INSERT INTO t VALUES (5, 'short')`) // a commit between two ticks
	afterShort := []int64{tick(), tick()}
	_, err = ltx.Exec(ctx, `UPDATE t SET v = 'L2' WHERE id BETWEEN 1000 AND 1299`)
	require.NoError(t, err)
	require.NoError(t, ltx.Commit(ctx))
	end := force()

	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c", MaxEvents: 10, LongTxEvents: 100})
	require.NoError(t, err)
	b, _ := readBatch(t, src) // up to start: the set-up's commits came after the first tick
	require.Equal(t, start, b.End.Tick)
	b, evs := readBatch(t, src)
	require.Equal(t, quiet[len(quiet)-1], b.End.Tick, "the ticks without a commit are one batch")
	require.Empty(t, evs)

	b, evs = readBatch(t, src)
	require.Equal(t, afterShort[len(afterShort)-1], b.End.Tick)
	require.Equal(t, []string{"5"}, ids(evs))

	b, err = src.NextBatch(ctx)
	require.NoError(t, err)
	require.Equal(t, end, b.End.Tick)
	long, err := BatchLongTxs(ctx, p.conn(t), b.ID)
	require.NoError(t, err)
	require.Len(t, long, 1, "L runs at the batch's start tick: it is read by itself")
	var n int
	require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
		n += len(chunk)
		return nil
	}))
	require.Equal(t, 600+extra, n)
	require.NoError(t, src.Finish(ctx, b))
}
