package queue

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// provider is a fresh database with the provider schema installed.
type provider struct {
	url string
}

func newProvider(t testing.TB, version string) *provider {
	t.Helper()
	return &provider{url: migratetest.NewDB(t, version, migrate.Provider)}
}

// conn opens a connection with skiff's session settings, closed when the test ends.
func (p *provider) conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pg.Connect(ctx, p.url, "skiff-test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func exec(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	_, err := c.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
}

// capturedT is a fresh provider (the default version) whose table t (id int PRIMARY KEY,
// v text) queue q captures, with consumer c registered and a Source reading for it.
func capturedT(t testing.TB) (*pgx.Conn, *Source) {
	t.Helper()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	return c, src
}

// readBatch reads one whole batch through the source and finishes it.
func readBatch(t testing.TB, src *Source) (change.Batch, []change.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := src.NextBatch(ctx)
	require.NoError(t, err)
	var evs []change.Event
	require.NoError(t, src.Events(ctx, b, func(chunk []change.Event) error {
		evs = append(evs, chunk...)
		return nil
	}))
	require.NoError(t, src.Finish(ctx, b))
	return b, evs
}

func values(ev change.Event) map[string]change.Value {
	m := map[string]change.Value{}
	for i, c := range ev.Columns {
		m[c] = ev.Values[i]
	}
	return m
}
