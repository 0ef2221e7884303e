package logical

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// writeTx runs statements in one transaction and returns its txid.
func (p *provider) writeTx(t *testing.T, stmts ...string) int64 {
	t.Helper()
	ctx := context.Background()
	tx, err := p.conn.Begin(ctx)
	require.NoError(t, err)
	var txid int64
	require.NoError(t, tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&txid))
	for _, s := range stmts {
		_, err := tx.Exec(ctx, s)
		require.NoError(t, err, s)
	}
	require.NoError(t, tx.Commit(ctx))
	return txid
}

// collectUntil reads and finishes batches until one holds an event of transaction last.
func collectUntil(t *testing.T, s *Source, last int64) ([]change.Batch, []change.Event) {
	t.Helper()
	var bs []change.Batch
	var all []change.Event
	for {
		b, evs := next(t, s)
		bs = append(bs, b)
		all = append(all, evs...)
		finish(t, s, b)
		if evs[len(evs)-1].TxID >= last {
			return bs, all
		}
	}
}

// TestResume: Finish confirms the slot up to the batch's end; a batch read but not finished
// comes again, whole, from a new Source resumed at the last finished position, and nothing
// finished comes twice; the replay equals the provider's table.
func TestResume(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "t"}
		p.exec(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
		p.publish(t, tbl)
		p.createSlot(t)
		write := func(from, n int) int64 {
			var last int64
			for i := from; i < from+n; i++ {
				last = p.writeTx(t, fmt.Sprintf(`INSERT INTO t SELECT g, 0 FROM generate_series(%d, %d) g`, i*10, i*10+9),
					fmt.Sprintf(`UPDATE t SET v = v + 1 WHERE id %% 7 = %d`, i%7),
					fmt.Sprintf(`DELETE FROM t WHERE id = %d`, i*10-3))
			}
			return last
		}
		last := write(1, 30)

		s1 := p.source(t, func(c *Config) { c.MaxEvents = 40 })
		require.NoError(t, s1.Resume(ctx, change.Position{}))
		var applied []change.Event
		var pos change.Position
		var finishing time.Duration
		finished := 0
		for len(applied) < 100 {
			b, evs := next(t, s1)
			require.Equal(t, pos, b.Prev, "batches follow each other")
			require.Greater(t, b.End.LSN, b.Prev.LSN)
			require.False(t, b.EndTime.IsZero())
			started := time.Now()
			finish(t, s1, b)
			finishing += time.Since(started)
			finished++
			pos = b.End
			applied = append(applied, evs...)
			if p.ver < 90600 {
				// The slot shows no confirmed position before 9.6: the source's own (what the
				// table manager reads there, TestSourceConfirmed) is the batch's end.
				require.GreaterOrEqual(t, s1.Confirmed().LSN, b.End.LSN, "Finish confirms the batch's end")
				continue
			}
			// Finish has sent the status update; the server records it as it reads it.
			pgtest.Eventually(t, 10*time.Second, "Finish confirms the slot up to the batch's end", func() bool {
				st, ok, err := ReadSlot(ctx, p.conn, p.slot)
				require.NoError(t, err)
				require.True(t, ok)
				require.LessOrEqual(t, st.ConfirmedFlush, LSN(b.End.LSN), "never beyond what the target holds")
				return st.ConfirmedFlush == LSN(b.End.LSN)
			})
		}
		t.Logf("Finish (status update sent) took %s on average", finishing/time.Duration(finished))
		// A batch read and not finished (the target did not commit it), then a crash.
		_, lostEvs := next(t, s1)
		require.NoError(t, s1.Close(ctx))
		last2 := write(31, 10)
		require.Greater(t, last2, last)

		s2 := p.source(t, nil)
		require.NoError(t, s2.Resume(ctx, pos))
		bs, rest := collectUntil(t, s2, last2)
		require.Equal(t, pos, bs[0].Prev)
		require.Equal(t, lostEvs, rest[:len(lostEvs)], "the unfinished batch comes again")
		seen := map[int64]bool{}
		for _, ev := range applied {
			seen[ev.TxID] = true
		}
		for _, ev := range rest {
			require.False(t, seen[ev.TxID], "transaction %d came twice", ev.TxID)
		}
		m := memTable{}
		replay(t, tbl, append(applied, rest...), m)
		require.Equal(t, p.providerRows(t, tbl, []string{"id", "v"}), m.dump([]string{"id", "v"}))
	})
}

// TestLargeTransaction: a transaction of 200,000 rows comes whole in one batch, kept in a
// spool whose memory stays under its bound (the rest in a file), replayed twice. With
// pgoutput the batch is handed out open, after MaxEvents of its changes: the first Events
// reads the rest of the transaction from the stream.
func TestLargeTransaction(t *testing.T) {
	t.Parallel()
	matrix(t, []string{"15"}, func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "big"}
		p.exec(t, `CREATE TABLE big (id int PRIMARY KEY, pad text, n numeric)`)
		p.publish(t, tbl)
		p.createSlot(t)
		const rows = 200_000
		const bound = 1 << 20
		p.writeTx(t, fmt.Sprintf(`INSERT INTO big SELECT g, repeat('p', g %% 100), g * 1.5 FROM generate_series(1, %d) g`, rows))
		last := p.writeTx(t, `UPDATE big SET pad = 'u' WHERE id % 1000 = 0`)

		s := p.source(t, func(c *Config) { c.MemoryBytes = bound; c.MaxEvents = 1000; c.SpoolDir = t.TempDir() })
		require.NoError(t, s.Resume(ctx, change.Position{}))
		start := time.Now()
		b, err := s.NextBatch(ctx)
		require.NoError(t, err)
		took := time.Since(start)
		if plugin == PGOutput {
			require.True(t, s.open, "the batch is handed out before its transaction's commit")
			require.Less(t, s.held.Len(), rows)
			err := s.Finish(ctx, b)
			require.ErrorContains(t, err, "not received whole")
		} else {
			require.False(t, s.open)
			require.Equal(t, rows, s.held.Len())
		}
		m := memTable{}
		for round := 0; round < 2; round++ {
			n := 0
			require.NoError(t, s.Events(ctx, b, func(evs []change.Event) error {
				n += len(evs)
				if round == 0 {
					replay(t, tbl, evs, m)
				}
				return nil
			}))
			require.Equal(t, rows, n, "one transaction, one batch")
			require.False(t, s.open)
			if round == 0 {
				took = time.Since(start)
			}
		}
		require.True(t, s.held.Spilled(), "the batch went to the spool's file")
		require.LessOrEqual(t, s.held.MemBytes(), bound)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("%s: %d rows received, spooled and handed over in %s (%.0f rows/s); heap in use %d MiB",
			plugin, rows, took, rows/took.Seconds(), ms.HeapInuse>>20)
		finish(t, s, b)
		_, evs := collectUntil(t, s, last)
		replay(t, tbl, evs, m)
		require.Equal(t, p.providerRows(t, tbl, []string{"id", "pad", "n"}), m.dump([]string{"id", "pad", "n"}))
	})
}

// TestIdleSlotAdvances: while tables the slot does not replicate are written (another table
// outside the publication, another database), the slot's confirmed position follows the WAL
// and its retained WAL is released.
func TestIdleSlotAdvances(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "quiet"}
		p.exec(t, `CREATE TABLE quiet (id int PRIMARY KEY)`)
		p.exec(t, `CREATE TABLE busy (id serial PRIMARY KEY, pad text)`)
		p.publish(t, tbl)
		start := p.createSlot(t)
		other := pgtest.Connect(t, p.srv.NewDB(t))
		_, err := other.Exec(ctx, `CREATE TABLE busy (id serial PRIMARY KEY, pad text)`)
		require.NoError(t, err)

		s := p.source(t, func(c *Config) { c.StatusInterval = 200 * time.Millisecond })
		require.NoError(t, s.Resume(ctx, change.Position{}))
		runCtx, stop := context.WithCancel(ctx)
		got := make(chan error, 1)
		go func() {
			b, err := s.NextBatch(runCtx)
			if err == nil {
				err = fmt.Errorf("a batch from an idle slot: %+v", b)
			}
			got <- err
		}()
		for i := 0; i < 100; i++ {
			if plugin == PGOutput {
				p.exec(t, `INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 100)`)
			}
			_, err := other.Exec(ctx, `INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 100)`)
			require.NoError(t, err)
		}
		endLSN := p.walEnd(t)
		require.Greater(t, endLSN-start, LSN(1<<20), "the other tables wrote WAL")
		p.exec(t, `CHECKPOINT`) // logs the running transactions: the slot's restart point can move
		var st SlotState
		// The restart point moves at a confirmation past a decoded running-xacts record (the
		// CHECKPOINT's, or an earlier one of the background writer's): the release may take
		// more than the first confirmation past endLSN.
		pgtest.Eventually(t, time.Minute, "the idle slot's confirmed position follows the WAL and its WAL is released", func() bool {
			var ok bool
			st, ok, err = ReadSlot(ctx, p.conn, p.slot)
			require.NoError(t, err)
			require.True(t, ok)
			// Before 9.6 the slot shows no confirmed position: its restart point says it all.
			confirmed := st.ConfirmedFlush >= endLSN || p.ver < 90600
			return confirmed && st.RestartLSN > start && st.RetainedBytes < int64(endLSN-start)
		})
		t.Logf("%s: WAL written %d bytes; slot confirmed %s, retains %d bytes", plugin, endLSN-start, st.ConfirmedFlush, st.RetainedBytes)
		stop()
		require.ErrorIs(t, <-got, context.Canceled)
	})
}

// TestBusyWorkerKeepsStream: a worker that holds a batch for several wal_sender_timeouts
// (a long apply) keeps its stream: the reader answers the server's keepalives meanwhile.
func TestBusyWorkerKeepsStream(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t, pgtest.Options{Version: "15", Settings: map[string]string{"wal_sender_timeout": "1s"}})
	for _, plugin := range []string{PGOutput, TestDecoding} {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := srv.NewDB(t)
			p := &provider{srv: srv, url: url, conn: pgtest.Connect(t, url), plugin: plugin, slot: "busy_" + plugin[:4], pub: "p"}
			tbl := change.Table{Schema: "public", Name: "t"}
			p.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
			p.publish(t, tbl)
			p.createSlot(t)
			s := p.source(t, func(c *Config) { c.StatusInterval = time.Hour })
			require.NoError(t, s.Resume(ctx, change.Position{}))
			p.exec(t, `INSERT INTO t VALUES (1)`)
			b, _ := next(t, s)
			// The worker is busy applying for 3 s: three times the server's timeout. This
			// wait is the scenario, not a synchronisation.
			<-time.After(3 * time.Second)
			finish(t, s, b)
			last := p.writeTx(t, `INSERT INTO t VALUES (2)`)
			_, evs := collectUntil(t, s, last)
			require.Len(t, evs, 1, "the stream is still up")
		})
	}
}

// TestStreamRestarts: the walsender is terminated, once with a batch pending and once
// between batches; NextBatch starts the stream again from the last finished batch (an error
// at most once, for the worker to retry) and nothing is lost or repeated.
func TestStreamRestarts(t *testing.T) {
	t.Parallel()
	matrix(t, []string{"15"}, func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "t"}
		p.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
		p.publish(t, tbl)
		p.createSlot(t)
		s := p.source(t, func(c *Config) { c.MaxEvents = 1 })
		require.NoError(t, s.Resume(ctx, change.Position{}))
		p.writeTx(t, `INSERT INTO t VALUES (1)`)
		b, all := next(t, s)
		p.killWalsender(t) // with a batch pending: it is kept
		again, err := s.NextBatch(ctx)
		require.NoError(t, err)
		require.Equal(t, b, again)
		finish(t, s, b)
		p.writeTx(t, `INSERT INTO t VALUES (2)`)
		b, evs := next(t, s) // the stream starts again from the first batch's end
		require.Equal(t, change.Text("2"), evs[0].Values[0])
		all = append(all, evs...)
		finish(t, s, b)
		p.killWalsender(t) // between batches
		var last int64
		for i := 3; i <= 5; i++ {
			last = p.writeTx(t, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
		}
		errs := 0
		for {
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			b, err := s.NextBatch(cctx)
			cancel()
			if err != nil {
				errs++
				require.Equal(t, 1, errs, "one error, then the stream is up again: %v", err)
				continue
			}
			var evs []change.Event
			require.NoError(t, s.Events(ctx, b, func(e []change.Event) error { evs = append(evs, e...); return nil }))
			finish(t, s, b)
			all = append(all, evs...)
			if evs[len(evs)-1].TxID == last {
				break
			}
		}
		m := memTable{}
		replay(t, tbl, all, m)
		require.Equal(t, p.providerRows(t, tbl, []string{"id"}), m.dump([]string{"id"}))
	})
}

// TestSourceConfirmed: Confirmed stays before a batch until it is finished, is its End once it
// is, and, while the stream is idle, follows the WAL the server decodes (writes in another
// database), on every version the slot does not show its confirmed position on (9.4, 9.5)
// too: the table manager judges copies by it.
func TestSourceConfirmed(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: "public", Name: "t"}
		p.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
		p.publish(t, tbl)
		start := p.createSlot(t)
		other := pgtest.Connect(t, p.srv.NewDB(t))
		_, err := other.Exec(ctx, `CREATE TABLE busy (id serial PRIMARY KEY, pad text)`)
		require.NoError(t, err)

		s := p.source(t, nil)
		require.NoError(t, s.Resume(ctx, change.Position{}))
		if p.ver >= 90600 {
			require.GreaterOrEqual(t, LSN(s.Confirmed().LSN), start, "the slot's confirmed position at least")
		} // before 9.6 the slot does not show it: the position resumed from (zero here)
		last := p.writeTx(t, `INSERT INTO t VALUES (1)`)
		b, evs := next(t, s)
		require.Equal(t, last, evs[len(evs)-1].TxID)
		require.Less(t, s.Confirmed().LSN, b.End.LSN, "not confirmed before Finish")
		finish(t, s, b)
		// At least the batch's end: WAL of other databases after it (autovacuum, the busy
		// table's creation) may already have been confirmed by the idle stream.
		require.GreaterOrEqual(t, s.Confirmed().LSN, b.End.LSN, "confirmed at Finish")

		// Idle: the other database's WAL moves the confirmed position past where it was.
		_, err = other.Exec(ctx, `INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 1000)`)
		require.NoError(t, err)
		mark := p.walEnd(t)
		_, err = other.Exec(ctx, `INSERT INTO busy (pad) VALUES ('after the mark')`)
		require.NoError(t, err)
		runCtx, stop := context.WithCancel(ctx)
		got := make(chan error, 1)
		go func() {
			b, err := s.NextBatch(runCtx)
			if err == nil {
				err = fmt.Errorf("a batch from an idle slot: %+v", b)
			}
			got <- err
		}()
		pgtest.Eventually(t, time.Minute, "the idle stream confirms past "+mark.String(), func() bool {
			return LSN(s.Confirmed().LSN) >= mark
		})
		stop()
		require.ErrorIs(t, <-got, context.Canceled)
	})
}

// newTableT is a pgoutput provider with table t (id int PRIMARY KEY) published and a slot.
func newTableT(t *testing.T, v string) *provider {
	t.Helper()
	p := newProvider(t, v, PGOutput)
	p.exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	p.publish(t, change.Table{Schema: "public", Name: "t"})
	p.createSlot(t)
	return p
}

// TestSlotStuck: a slot whose stream fails again and again at the same point with the same
// server error (here pgoutput cannot find its publication: it was dropped before the change
// was written) makes NextBatch fail with a plain error StuckAfter-1 times (the worker
// retries those), then with a SlotStuckError that names the slot, the position and the
// server's message, and is a change.ErrPositionLost (the worker stops). From 18, pgoutput
// skips a publication it cannot find with a warning instead of failing.
func TestSlotStuck(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", "15"} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newTableT(t, v)
			s := p.source(t, nil)
			require.NoError(t, s.Resume(ctx, change.Position{}))
			p.writeTx(t, `INSERT INTO t VALUES (1)`)
			b, _ := next(t, s)
			finish(t, s, b)
			p.exec(t, `DROP PUBLICATION `+change.QuoteIdent(p.pub))
			p.writeTx(t, `INSERT INTO t VALUES (2)`)
			for i, tries := 1, 0; i <= StuckAfter; i++ {
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err := s.NextBatch(cctx)
				cancel()
				require.Error(t, err, "try %d", i)
				// The walsender that failed may hold the slot a moment longer: the next start
				// then fails with "replication slot … is active" (55006), which the source
				// neither counts nor lets end the run.
				if transientErr(err) {
					tries++
					require.Less(t, tries, 100, "the slot stays active: %v", err)
					i--
					continue
				}
				require.Contains(t, err.Error(), "does not exist", "try %d: the server's message", i)
				var stuck *SlotStuckError
				if i < StuckAfter {
					require.False(t, errors.As(err, &stuck), "try %d: %v", i, err)
					require.NotErrorIs(t, err, change.ErrPositionLost, "try %d", i)
					continue
				}
				require.ErrorAs(t, err, &stuck)
				require.ErrorIs(t, err, change.ErrPositionLost)
				require.Equal(t, p.slot, stuck.Slot)
				require.Equal(t, LSN(b.End.LSN), stuck.At, "the end of the last batch finished")
				msg := err.Error()
				t.Log(msg)
				for _, want := range []string{"replication slot " + p.slot, b.End.String(), "42704", "skiff unsubscribe", "skiff subscribe"} {
					require.Contains(t, msg, want)
				}
			}
		})
	}
}

// TestTransientServerErrors: the server errors that may pass by themselves never make a slot
// stuck, however often they come, nor interrupt a run of the same error; different errors,
// or the same at different positions, are not "in a row".
func TestTransientServerErrors(t *testing.T) {
	s := &Source{cfg: Config{Slot: "s"}}
	for _, code := range []string{"57P01", "08006", "53200", "55006", "58P01", "40001"} {
		for range 2 * StuckAfter {
			require.NoError(t, s.failed(&pgconn.PgError{Code: code, Message: "m"}, false), code)
		}
	}
	for range 2 * StuckAfter {
		require.NoError(t, s.failed(errors.New("connection reset"), false))
	}
	var err error
	for range StuckAfter {
		err = s.failed(&pgconn.PgError{Code: "XX000", Message: `could not map filenode "base/1/2" to relation OID`}, false)
		// The walsender that failed may hold the slot a moment longer: the next start
		// fails with "replication slot … is active" (55006), which neither counts nor resets.
		require.NoError(t, s.failed(&pgconn.PgError{Code: "55006", Message: "replication slot is active"}, false))
	}
	require.ErrorIs(t, err, change.ErrPositionLost, "an internal error, StuckAfter times at one position")
	s.fails = failRun{}
	for i := range 2 * StuckAfter {
		// Two errors taking turns at one position: neither comes StuckAfter times in a row.
		require.NoError(t, s.failed(&pgconn.PgError{Code: "XX000", Message: "m" + strconv.Itoa(i%2)}, false))
	}
	s.fails = failRun{}
	for i := range StuckAfter {
		// The same error at a new position each time (the stream got further): not stuck.
		s.pos.LSN = uint64(i + 1)
		require.NoError(t, s.failed(&pgconn.PgError{Code: "XX000", Message: "m"}, false))
	}
}

// TestStreamFailureKeepsReceived: what the stream received before the server's error is
// decoded, not dropped with the stream: whole transactions come as a batch, and the failure
// after them. Twice: the error already in the WAL when the stream starts (the reader goroutine
// receives the transaction and the error before NextBatch takes the stream from it), and the
// error arriving while the worker applies a batch. (A stuck slot thus stops at the last change
// it can decode, not at an earlier batch's end.)
func TestStreamFailureKeepsReceived(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", "15"} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newTableT(t, v)
			// A transaction the stream can decode, then one it cannot (the publication is
			// gone when it is written), before the stream starts.
			p.writeTx(t, `INSERT INTO t VALUES (1)`)
			p.exec(t, `DROP PUBLICATION `+change.QuoteIdent(p.pub))
			p.writeTx(t, `INSERT INTO t VALUES (2)`)
			s := p.source(t, nil)
			require.NoError(t, s.Resume(ctx, change.Position{}))
			b, evs := next(t, s)
			require.Len(t, evs, 1)
			require.Equal(t, change.Text("1"), evs[0].Values[0])
			finish(t, s, b)
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			_, err := s.NextBatch(cctx)
			require.ErrorContains(t, err, "does not exist")

			// The same while the worker applies: the reader goroutine holds the stream.
			p = newTableT(t, v)
			q := p.source(t, nil)
			require.NoError(t, q.Resume(ctx, change.Position{}))
			p.writeTx(t, `INSERT INTO t VALUES (11)`)
			b, _ = next(t, q)
			finish(t, q, b)
			p.writeTx(t, `INSERT INTO t VALUES (12)`)
			p.exec(t, `DROP PUBLICATION `+change.QuoteIdent(p.pub))
			p.writeTx(t, `INSERT INTO t VALUES (13)`)
			st := q.st
			pgtest.Eventually(t, time.Minute, "the reader got the server's error", func() bool {
				select {
				case <-st.done:
					return true
				default:
					return false
				}
			})
			require.ErrorContains(t, st.err, "does not exist")
			b, evs = next(t, q)
			require.Len(t, evs, 1)
			require.Equal(t, change.Text("12"), evs[0].Values[0])
			finish(t, q, b)
			_, err = q.NextBatch(cctx)
			require.ErrorContains(t, err, "does not exist")
		})
	}
}

// transientErr says whether err carries a server error of a class the source takes for
// transient (transient).
func transientErr(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && transient(pe.Code)
}
