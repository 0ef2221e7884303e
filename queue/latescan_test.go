package queue

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestLateEventProbeReadsNoEventTable: the ticker's probe for late events
// (skiff.tick_has_late_events, run by every poll after a tick that took events while other
// transactions commit, e.g. a worker's) reads only the index entries of the txids it looks
// for, whatever the event tables' statistics. Event tables are emptied by TRUNCATE and usually
// have none; on a table of 1 M events the planner took a sequential scan for the probe's
// EXISTS (and, with sequential scans off, a scan of the whole index with the OR as a filter):
// every event read at every poll, 8 s of a provider core during a 20 s apply (the bench's slow
// apply runs; a run whose event table autovacuum had analyzed during the backlog was fast).
func TestLateEventProbeReadsNoEventTable(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := setupQueue(t, v, "c1")
			c := p.conn(t)
			if pg.ServerVersion(c) < 90100 {
				t.Skip("pg_stat_xact_user_tables arrived in 9.1")
			}
			require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxLag, "0"))
			require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerIdlePeriod, "1 hour"))
			require.NoError(t, SetQueueConfig(ctx, c, "q", SettingTickerMaxEvents, "1000000000"))
			// No autovacuum: the point is a table without statistics, then one with.
			var tables []string
			rows, err := c.Query(ctx, `SELECT 'skiff.' || quote_ident(relname) FROM pg_catalog.pg_class
				WHERE relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'skiff') AND relname ~ '^event_[0-9]+_[0-9]+$' AND relkind = 'r' ORDER BY relname`)
			require.NoError(t, err)
			tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			require.Len(t, tables, 3)
			for _, tbl := range tables {
				exec(t, c, `ALTER TABLE `+tbl+` SET (autovacuum_enabled = false)`)
			}
			// A backlog of 1 M events in event table 0 (the epoch's): one captured row, and
			// rows written straight into the table in the same transaction (the trigger would
			// take a minute; the probe only looks at ev_txid).
			tx, err := c.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO public.t VALUES (1, 'captured')`)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `INSERT INTO `+tables[0]+` (ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data)
				SELECT -g, now(), txid_current(), 'I', 0, 'x' FROM generate_series(1, 1000000) g`)
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
			_, ok, err := Tick(ctx, c, "q")
			require.NoError(t, err)
			require.True(t, ok, "the backlog is pending")

			probe := func(what string) {
				t.Helper()
				// Other transactions commit after the tick (as a worker's do): the probe runs.
				exec(t, c, `SELECT txid_current()`)
				exec(t, c, `SELECT txid_current()`)
				tx, err := c.Begin(ctx)
				require.NoError(t, err)
				defer func() { _ = tx.Rollback(ctx) }()
				var tick *int64
				require.NoError(t, tx.QueryRow(ctx, `SELECT skiff.ticker('q')`).Scan(&tick))
				require.Nil(t, tick, "%s: no event is late, no tick is due", what)
				var seq, fetched, idx int64
				require.NoError(t, tx.QueryRow(ctx, `SELECT coalesce(sum(seq_tup_read), 0)::bigint,
						coalesce(sum(idx_tup_fetch), 0)::bigint, coalesce(sum(idx_scan), 0)::bigint
					FROM pg_catalog.pg_stat_xact_user_tables WHERE schemaname = 'skiff' AND relname ~ '^event_[0-9]+_[0-9]+$'`).Scan(&seq, &fetched, &idx))
				require.Zero(t, seq, "%s: the probe read event rows by a sequential scan", what)
				require.Less(t, fetched, int64(1000), "%s: the probe read event rows through the index (none matches)", what)
				require.NotZero(t, idx, "%s: the probe ran, by the index", what)
			}
			probe("no statistics")
			for _, tbl := range tables {
				exec(t, c, `ANALYZE `+tbl)
			}
			probe("analyzed")
		})
	}
}
