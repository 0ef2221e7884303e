package logical

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The Source is a consumer.Source (asserted here: the package itself imports only the types).
var _ consumer.Source = (*Source)(nil)

// slotCounter makes slot names unique on the shared servers (slots belong to the cluster).
var slotCounter atomic.Int64

// versions are the majors the tests run on: 10, 15 and 18, and the servers before 10 that
// are installed (9.4–9.6, given with SKIFF_PG_BINDIRS; test_decoding only).
func versions() []string {
	out := []string{"10", "15", "18"}
	for _, v := range pgtest.Majors() {
		if v == "9.4" || v == "9.5" || v == "9.6" {
			out = append(out, v)
		}
	}
	return out
}

// plugins are the output plugins a version has.
func plugins(v string) []string {
	if v == "9.4" || v == "9.5" || v == "9.6" {
		return []string{TestDecoding}
	}
	return []string{PGOutput, TestDecoding}
}

// matrix runs fn for each version and plugin, in parallel.
func matrix(t *testing.T, vs []string, fn func(t *testing.T, v, plugin string)) {
	for _, v := range vs {
		for _, p := range plugins(v) {
			t.Run("pg"+v+"/"+p, func(t *testing.T) {
				t.Parallel()
				fn(t, v, p)
			})
		}
	}
}

// provider is a fresh database with a slot and (pgoutput) a publication.
type provider struct {
	srv    *pgtest.Server
	url    string
	conn   *pgx.Conn
	plugin string
	slot   string
	pub    string
	ver    int
}

func newProvider(t *testing.T, v, plugin string) *provider {
	t.Helper()
	srv := pgtest.Shared(t, v)
	url := srv.NewDB(t)
	p := &provider{srv: srv, url: url, conn: pgtest.Connect(t, url), plugin: plugin,
		slot: fmt.Sprintf("skiff_t%d_%d", os.Getpid(), slotCounter.Add(1)), pub: "Pub \"q\""}
	p.ver = pg.ServerVersion(p.conn)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			_ = DropSlot(ctx, c, p.slot)
			_ = c.Close(ctx)
		}
	})
	return p
}

func (p *provider) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err := p.conn.Exec(ctx, sql, args...)
	require.NoError(t, err, sql)
}

// publish creates the publication of tables (pgoutput only).
func (p *provider) publish(t *testing.T, tables ...change.Table) {
	t.Helper()
	if p.plugin != PGOutput {
		return
	}
	// Made here as queue.AddTable makes a logical queue's (queue/logical.go owns it).
	sql := "CREATE PUBLICATION " + change.QuoteIdent(p.pub)
	for i, tb := range tables {
		if i == 0 {
			sql += " FOR TABLE "
		} else {
			sql += ", "
		}
		sql += "ONLY " + tb.String()
	}
	_, err := p.conn.Exec(context.Background(), sql)
	require.NoError(t, err, sql)
}

// killWalsender terminates the walsender that streams the slot and waits until the slot is
// released.
func (p *provider) killWalsender(t *testing.T) {
	t.Helper()
	p.terminateWalsender(t)()
}

// terminateWalsender signals the walsender that streams the slot to terminate and returns a
// function that waits until the slot is released. A walsender whose client has stopped reading
// a full socket cannot send its last message and exit until the client reads again: such a
// test reads first, then waits.
func (p *provider) terminateWalsender(t *testing.T) (waitGone func()) {
	t.Helper()
	ctx := context.Background()
	var pid int
	require.NoError(t, p.conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, p.slot).Scan(&pid))
	p.exec(t, `SELECT pg_terminate_backend($1)`, pid)
	return func() {
		t.Helper()
		pgtest.Eventually(t, 30*time.Second, "the walsender is gone", func() bool {
			var active bool
			require.NoError(t, p.conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, p.slot).Scan(&active))
			return !active
		})
	}
}

// socketConn is the provider's database over its Unix socket. A stream read over it has at
// most the socket's fixed buffer (about 200 kB) sent ahead of what the source has read, where
// TCP's buffers grow to megabytes: a test that needs the server to still hold part of a
// transaction when the walsender dies reads the stream over the socket.
func (p *provider) socketConn(t *testing.T) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.url)
	require.NoError(t, err)
	return fmt.Sprintf("host='%s' port=%d user=postgres dbname='%s' sslmode=disable", p.srv.Dir, p.srv.Port, cfg.Database)
}

// createSlot creates the slot, closes its snapshot and returns its consistent point.
func (p *provider) createSlot(t *testing.T) LSN {
	t.Helper()
	ctx := context.Background()
	sl, err := CreateSlot(ctx, p.url, "", p.slot, p.plugin, false)
	require.NoError(t, err)
	require.NoError(t, sl.Close(ctx))
	return sl.ConsistentPoint
}

func (p *provider) source(t *testing.T, mod func(*Config)) *Source {
	t.Helper()
	cfg := Config{Conn: p.url, Slot: p.slot, Plugin: p.plugin, Publication: p.pub, Queue: "q",
		MaxWait: 50 * time.Millisecond, StatusInterval: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// next waits for the next batch and returns it with a copy of its events (read twice, to
// show that a batch can be replayed, and checked equal).
func next(t *testing.T, s *Source) (change.Batch, []change.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := s.NextBatch(ctx)
	require.NoError(t, err)
	read := func() []change.Event {
		var out []change.Event
		require.NoError(t, s.Events(ctx, b, func(evs []change.Event) error {
			for _, ev := range evs {
				ev.Values = slices.Clone(ev.Values)
				ev.OldKey = slices.Clone(ev.OldKey)
				out = append(out, ev)
			}
			return nil
		}))
		return out
	}
	evs := read()
	again, err := s.NextBatch(ctx)
	require.NoError(t, err)
	require.Equal(t, b, again, "an unfinished batch is handed out again")
	require.Equal(t, evs, read(), "events read twice")
	return b, evs
}

// finish finishes b.
func finish(t *testing.T, s *Source, b change.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, s.Finish(ctx, b))
}

// collect reads and finishes batches until want events were seen (failing on more).
func collect(t *testing.T, s *Source, want int) ([]change.Batch, []change.Event) {
	t.Helper()
	var bs []change.Batch
	var all []change.Event
	for len(all) < want {
		b, evs := next(t, s)
		require.NotEmpty(t, evs)
		bs = append(bs, b)
		all = append(all, evs...)
		finish(t, s, b)
	}
	require.Len(t, all, want)
	return bs, all
}

// rows replays events on an in-memory table keyed by key column k and returns its rows as
// "k=…|col=…" text sorted; the provider's rows (providerRows) must come out the same.
type memTable map[string]map[string]change.Value

func replay(t *testing.T, tbl change.Table, evs []change.Event, m memTable) {
	t.Helper()
	for _, ev := range evs {
		if ev.Table != tbl {
			continue
		}
		require.NoError(t, ev.Err)
		key := func(vals []change.Value) string {
			var b strings.Builder
			for _, v := range vals {
				fmt.Fprintf(&b, "%v:%q,", v.Valid, v.Text)
			}
			return b.String()
		}
		switch ev.Op {
		case change.Truncate:
			clear(m)
		case change.Insert:
			row := map[string]change.Value{}
			for i, c := range ev.Columns {
				row[c] = ev.Values[i]
			}
			k := key(ev.KeyValues())
			if _, ok := m[k]; ok {
				require.Fail(t, "insert of a row that exists", "%v", ev)
			}
			m[k] = row
		case change.Update:
			k := key(ev.KeyValues())
			row, ok := m[k]
			if !ok {
				require.Fail(t, "update of a missing row", "%v", ev)
			}
			delete(m, k)
			for i, c := range ev.Columns {
				row[c] = ev.Values[i]
			}
			nk := make([]change.Value, len(ev.Key))
			for i, c := range ev.Key {
				nk[i] = row[c]
			}
			m[key(nk)] = row
		case change.Delete:
			k := key(ev.KeyValues())
			if _, ok := m[k]; !ok {
				require.Fail(t, "delete of a missing row", "%v", ev)
			}
			delete(m, k)
		}
	}
}

// dump returns the rows as sorted text lines of the named columns.
func (m memTable) dump(cols []string) []string {
	var out []string
	for _, row := range m {
		var b strings.Builder
		for _, c := range cols {
			fmt.Fprintf(&b, "%s=%s|", c, show(row[c]))
		}
		out = append(out, b.String())
	}
	slices.Sort(out)
	return out
}

// providerRows returns the table's rows in the same text form (values as text, on a
// connection with the replication connection's settings).
func (p *provider) providerRows(t *testing.T, tbl change.Table, cols []string) []string {
	t.Helper()
	ctx := context.Background()
	_, err := p.conn.Exec(ctx, "SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET bytea_output = 'hex'")
	require.NoError(t, err)
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = change.QuoteIdent(c)
	}
	// In text format: each value as its type's output function writes it, as the plugins do.
	rows, err := p.conn.Query(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+tbl.String(), pgx.QueryResultFormats{pgx.TextFormatCode})
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		vals := make([]*string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		var b strings.Builder
		for i, c := range cols {
			v := change.Null
			if vals[i] != nil {
				v = change.Text(*vals[i])
			}
			fmt.Fprintf(&b, "%s=%s|", c, show(v))
		}
		out = append(out, b.String())
	}
	require.NoError(t, rows.Err())
	slices.Sort(out)
	return out
}

// show writes a value for a comparison: long values by length and digest.
func show(v change.Value) string {
	if !v.Valid {
		return "NULL"
	}
	if len(v.Text) > 64 {
		return fmt.Sprintf("len %d sha %x", len(v.Text), sha256.Sum256([]byte(v.Text)))
	}
	return strconv.Quote(v.Text)
}

// walEnd returns the server's current WAL write position (pg_current_xlog_location before 10).
func (p *provider) walEnd(t *testing.T) LSN {
	t.Helper()
	q := `SELECT pg_catalog.pg_current_wal_lsn()::text`
	if p.ver < 100000 {
		q = `SELECT pg_catalog.pg_current_xlog_location()::text`
	}
	var s string
	require.NoError(t, p.conn.QueryRow(context.Background(), q).Scan(&s))
	lsn, err := ParseLSN(s)
	require.NoError(t, err)
	return lsn
}
