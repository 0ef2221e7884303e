package status_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/status"
	"github.com/skiffdb/skiff/queue"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func setup(t *testing.T, version string) (pcfg, tcfg *pgx.ConnConfig, prov *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	p := migratetest.NewDB(t, version, migrate.Provider)
	tg := migratetest.NewDB(t, "", migrate.Target)
	var err error
	pcfg, err = pg.ParseConfig(p, "status-test")
	require.NoError(t, err)
	tcfg, err = pg.ParseConfig(tg, "status-test")
	require.NoError(t, err)
	prov, err = pg.ConnectConfig(ctx, pcfg.Copy())
	require.NoError(t, err)
	t.Cleanup(func() { prov.Close(context.Background()) })
	_, err = prov.Exec(ctx, `CREATE TABLE "Odd Table" (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	_, err = queue.AddTable(ctx, prov, "main", queue.TableSpec{Name: `"Odd Table"`})
	require.NoError(t, err)
	_, err = queue.RegisterConsumer(ctx, prov, "main", "c1")
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tg)
	tbl := change.Table{Schema: "public", Name: "Odd Table"}
	_, err = apply.Subscribe(ctx, tconn, apply.Subscription{Queue: "main", Consumer: "c1", Provider: "p"},
		[]change.Route{{Source: tbl, Dest: tbl, State: change.StateCopying}})
	require.NoError(t, err)
	return pcfg, tcfg, prov
}

// TestHealthy: a queue that ticks, a consumer that keeps up; table state from the target.
func TestHealthy(t *testing.T) {
	t.Parallel()
	pcfg, tcfg, prov := setup(t, "")
	ctx := context.Background()
	_, err := queue.ForceTick(ctx, prov, "main")
	require.NoError(t, err)
	r, err := status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Hour, LongTransaction: time.Hour})
	require.NoError(t, err)
	require.Empty(t, r.Problems)
	require.Len(t, r.Queues, 1)
	q := r.Queues[0]
	require.Equal(t, "main", q.Name)
	require.Positive(t, q.LastTick)
	require.Len(t, q.Consumers, 1)
	c := q.Consumers[0]
	require.Equal(t, "c1", c.Name)
	require.NotNil(t, c.Subscription)
	require.Equal(t, []status.Table{{Source: `public."Odd Table"`, Dest: `public."Odd Table"`, State: "copying",
		Since: c.Subscription.Tables[0].Since}}, c.Subscription.Tables)

	// Events the worker set aside while the copy runs are counted.
	tconn, err := pg.ConnectConfig(ctx, tcfg.Copy())
	require.NoError(t, err)
	defer tconn.Close(ctx)
	_, err = tconn.Exec(ctx, `INSERT INTO skiff.copy_backlog (sub_id, source_schema, source_name, event_id, txid, op, dest_schema, dest_name)
		SELECT sub_id, 'public', 'Odd Table', g, 1, 'I', 'public', 'Odd Table' FROM skiff.subscription, generate_series(1, 3) g`)
	require.NoError(t, err)
	r, err = status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Hour, LongTransaction: time.Hour})
	require.NoError(t, err)
	require.Equal(t, int64(3), r.Queues[0].Consumers[0].Subscription.Tables[0].CopyBacklog)

	var text bytes.Buffer
	require.NoError(t, status.Text(&text, r))
	require.Contains(t, text.String(), "3 events waiting for the copy")
	require.Contains(t, text.String(), "queue main")
	require.Contains(t, text.String(), "consumer c1")
	require.Contains(t, text.String(), `public."Odd Table"`)
	js, err := json.Marshal(r)
	require.NoError(t, err)
	for _, field := range []string{`"queues"`, `"lag_seconds"`, `"lag_events"`, `"last_tick"`, `"current_batch"`, `"subscription"`, `"state":"copying"`, `"copy_backlog":3`, `"problems":[]`} {
		require.Contains(t, string(js), field)
	}
}

// TestStalls: no ticker, a worker that never came, a long transaction, an error recorded by
// the worker: each is named.
func TestStalls(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", ""} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			pcfg, tcfg, prov := setup(t, v)
			ctx := context.Background()
			require.NoError(t, queue.SetQueueConfig(ctx, prov, "main", queue.SettingTickerIdlePeriod, "0 seconds"))
			_, err := prov.Exec(ctx, `INSERT INTO "Odd Table" VALUES (1, 'x')`)
			require.NoError(t, err)
			_, err = queue.ForceTick(ctx, prov, "main") // the consumer is now behind
			require.NoError(t, err)
			// A long transaction (with an xid) on the provider.
			long, err := pg.ConnectConfig(ctx, pcfg.Copy())
			require.NoError(t, err)
			defer long.Close(ctx)
			tx, err := long.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, `SELECT txid_current()`)
			require.NoError(t, err)
			tconn := pgtest.Connect(t, tcfg.ConnString())
			_, err = tconn.Exec(ctx, `UPDATE skiff.subscription SET last_error = 'table "Odd Table": boom', last_error_at = now(),
				heartbeat = now() - interval '1 hour', worker = 'host:42'`)
			require.NoError(t, err)

			var r *status.Report
			pgtest.Eventually(t, 10*time.Second, "stalls reported", func() bool {
				r, err = status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Millisecond, LongTransaction: time.Millisecond})
				require.NoError(t, err)
				return r.Queues[0].Stall != "" && r.Queues[0].Consumers[0].Stall != "" && len(r.LongTransactions) > 0
			})
			require.Contains(t, r.Queues[0].Stall, "ticker not running?")
			require.Contains(t, r.Queues[0].Consumers[0].Stall, "boom")
			require.Regexp(t, `worker not seen for 1h0m\d+s \(last heartbeat from host:42\)`, r.Queues[0].Consumers[0].Stall)
			var found bool
			for _, lt := range r.LongTransactions {
				switch {
				case lt.Query == "SELECT txid_current()":
					found = true
					if pg.ServerVersion(long) >= 90400 {
						require.NotEmpty(t, lt.XID) // 9.4+ reports backend_xid
					}
				case pg.ServerVersion(long) < 90200 && lt.Query == "<IDLE> in transaction":
					found = true // before 9.2 an idle backend's last query is not shown
				}
			}
			require.True(t, found, "%+v", r.LongTransactions)
			require.NotEmpty(t, r.Problems)
			var text bytes.Buffer
			require.NoError(t, status.Text(&text, r))
			require.Contains(t, text.String(), "problems:")
			require.Contains(t, text.String(), "holds back event table rotation")
		})
	}
}

func TestNoSchema(t *testing.T) {
	t.Parallel()
	cfg, err := pg.ParseConfig(pgtest.Shared(t, "").NewDB(t), "status-test")
	require.NoError(t, err)
	_, err = status.Collect(context.Background(), status.Config{Provider: cfg})
	require.ErrorContains(t, err, "run skiff init provider")
}

// TestWorkerInBackoffIsAlive: a worker waiting to retry a failed batch asks the provider for
// nothing, but keeps its heartbeat on the target: status reports the failure, not a worker
// that is not running.
func TestWorkerInBackoffIsAlive(t *testing.T) {
	t.Parallel()
	pcfg, tcfg, prov := setup(t, "")
	ctx := context.Background()
	_, err := prov.Exec(ctx, `INSERT INTO "Odd Table" VALUES (1, 'x')`)
	require.NoError(t, err)
	_, err = queue.ForceTick(ctx, prov, "main") // the consumer is now behind
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tcfg.ConnString())
	// StallAfter leaves room for a loaded machine between the heartbeat and the report.
	cfg := status.Config{Provider: pcfg, Target: tcfg, StallAfter: 5 * time.Second, LongTransaction: time.Hour}
	var r *status.Report
	pgtest.Eventually(t, time.Minute, "the provider has not seen the consumer for longer than StallAfter", func() bool {
		_, err = tconn.Exec(ctx, `UPDATE skiff.subscription SET last_error = 'table "Odd Table": boom', last_error_at = now(),
			heartbeat = now(), worker = 'host:42'`)
		require.NoError(t, err)
		r, err = status.Collect(ctx, cfg)
		require.NoError(t, err)
		return r.Queues[0].Consumers[0].LastSeenSeconds > 6
	})
	c := r.Queues[0].Consumers[0]
	require.Contains(t, c.Stall, "failing: table \"Odd Table\": boom")
	require.NotContains(t, c.Stall, "not running")
	require.NotContains(t, c.Stall, "not seen")
}

// TestCopyErrorIsAProblem: a table whose copy failed is listed as a problem, with the table
// and the error, in the text and the JSON.
func TestCopyErrorIsAProblem(t *testing.T) {
	t.Parallel()
	pcfg, tcfg, prov := setup(t, "")
	ctx := context.Background()
	_, err := queue.ForceTick(ctx, prov, "main")
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tcfg.ConnString())
	_, err = tconn.Exec(ctx, `UPDATE skiff.table_state SET copy_error = 'target: COPY "public"."Odd Table" ("id", "v") FROM STDIN: invalid input syntax for type integer', copy_error_at = now()`)
	require.NoError(t, err)
	r, err := status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Hour, LongTransaction: time.Hour})
	require.NoError(t, err)
	require.Len(t, r.Problems, 1)
	require.Contains(t, r.Problems[0], `copy of table public."Odd Table" failing`)
	require.Contains(t, r.Problems[0], "invalid input syntax for type integer")
	tb := r.Queues[0].Consumers[0].Subscription.Tables[0]
	require.Equal(t, "copying", tb.State)
	require.Contains(t, tb.CopyError, "invalid input syntax")
	require.NotNil(t, tb.CopyErrorAt)
	js, err := json.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(js), `"copy_error":"target: COPY`)
	require.Contains(t, string(js), `"copy_error_at":`)
	var text bytes.Buffer
	require.NoError(t, status.Text(&text, r))
	require.Contains(t, text.String(), "! copy failed at ")
	require.Contains(t, text.String(), "problems:")
	require.Contains(t, text.String(), "invalid input syntax for type integer")
}

// TestCaptureGapIsAProblem: a captured table whose capture trigger was disabled is named,
// with the operations its queue misses and the fix.
func TestCaptureGapIsAProblem(t *testing.T) {
	t.Parallel()
	pcfg, tcfg, prov := setup(t, "")
	ctx := context.Background()
	_, err := queue.ForceTick(ctx, prov, "main")
	require.NoError(t, err)
	_, err = prov.Exec(ctx, `ALTER TABLE "Odd Table" DISABLE TRIGGER USER`)
	require.NoError(t, err)
	r, err := status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Hour, LongTransaction: time.Hour})
	require.NoError(t, err)
	require.Len(t, r.Problems, 1)
	require.Contains(t, r.Problems[0], `queue main: table "public"."Odd Table": its INSERTs, UPDATEs, DELETEs, TRUNCATEs are not captured`)
	var text bytes.Buffer
	require.NoError(t, status.Text(&text, r))
	require.Contains(t, text.String(), `ENABLE TRIGGER "!skiff_capture_q`)
}

// TestAbandonedConsumer: a consumer not seen for a long time is named as holding back event
// table rotation (once it does), with the command that unregisters it.
func TestAbandonedConsumer(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", ""} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			pcfg, tcfg, prov := setup(t, v)
			ctx := context.Background()
			collect := func() *status.Report {
				t.Helper()
				r, err := status.Collect(ctx, status.Config{Provider: pcfg, Target: tcfg, StallAfter: time.Hour, LongTransaction: time.Hour})
				require.NoError(t, err)
				return r
			}
			_, err := prov.Exec(ctx, `UPDATE skiff.consumer SET sub_active = now() - interval '3 hours'`)
			require.NoError(t, err)
			r := collect()
			c := r.Queues[0].Consumers[0]
			require.False(t, c.HoldsRotation)
			require.Regexp(t, `^not seen for 3h0m\d+s: it will hold back event table rotation`, c.Stall)

			// Rotations go on until the next one would drop events the consumer has not read.
			require.NoError(t, queue.SetQueueConfig(ctx, prov, "main", queue.SettingRotationPeriod, "0 seconds"))
			rotated := 0
			for range 5 {
				ok, err := queue.RotateTables(ctx, prov, "main")
				require.NoError(t, err)
				if ok {
					rotated++
				}
			}
			require.Equal(t, 2, rotated)
			r = collect()
			c = r.Queues[0].Consumers[0]
			require.True(t, c.HoldsRotation)
			require.Regexp(t, `^not seen for 3h0m\d+s: it holds back event table rotation \(events pile up on the provider\)`, c.Stall)
			require.Contains(t, c.Stall, "skiff unsubscribe --provider URL --target URL --queue main --consumer c1")
			require.Contains(t, r.Problems, "queue main, consumer c1: "+c.Stall)
			js, err := json.Marshal(r)
			require.NoError(t, err)
			require.Contains(t, string(js), `"holds_rotation":true`)
		})
	}
}
