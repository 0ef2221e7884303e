package copier_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// handlerSrc is a provider table with values whose text trips a naive filter (a boolean's
// cast to text is 'true', its output 'f'/'t'; a timestamptz's text follows TimeZone).
const handlerSrc = `
CREATE TABLE src (id int PRIMARY KEY, secret text, v text, flag boolean, ts timestamptz, f float8, b bytea, tags text[]);
INSERT INTO src SELECT g, 'pw' || g,
	CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN '' ELSE 'tab	nl
back\slash ✓' || g END,
	CASE WHEN g % 5 = 0 THEN NULL ELSE g % 3 = 0 END,
	'2024-01-01 00:00:00+00'::timestamptz + (g % 4) * interval '1 hour',
	g / 7.0, decode(lpad(to_hex(g), 8, '0'), 'hex'), ARRAY['a' || g, NULL]
FROM generate_series(1, 5000) g;
`

const handlerDest = `(id int PRIMARY KEY, value text, ok boolean, ts timestamptz, f float8, b bytea, tags text[], extra int DEFAULT 7)`

// testRegistry holds the handlers of the tests: "sqlchain" (columns then filter, with an SQL
// form) and "gochain", the same chain wrapped in a Func (no SQL form: rows go through Go).
func testRegistry(t *testing.T) *handlers.Registry {
	reg := handlers.NewRegistry()
	chain := func() handlers.Chain {
		return handlers.Chain{
			&handlers.Columns{Exclude: []string{"secret"}, Rename: map[string]string{"v": "value", "flag": "ok"}},
			handlers.Filter{Column: "ok", In: []string{"t"}},
		}
	}
	require.NoError(t, reg.Register("sqlchain", func(change.Table, json.RawMessage) (handlers.Handler, error) {
		return chain(), nil
	}))
	require.NoError(t, reg.Register("gochain", func(change.Table, json.RawMessage) (handlers.Handler, error) {
		return handlers.Func(chain().Handle), nil
	}))
	return reg
}

// TestCopyThroughHandlers copies one provider table through handlers three ways: a chain with
// an SQL form (set-based), the same chain without one (rows through Go), and the built-in
// filter on a timestamptz column while the provider's default TimeZone is not UTC. The first
// two destinations end up identical; each holds exactly the rows the handlers keep, with the
// renamed columns filled and the excluded one left out; compare through the same handlers says
// equal.
func TestCopyThroughHandlers(t *testing.T) {
	t.Parallel()
	pairs := [][2]string{{"", ""}}
	if m := pgtest.Majors(); len(m) > 1 { // newest first
		pairs = [][2]string{{m[len(m)-1], m[0]}, {m[0], m[len(m)-1]}}
	}
	for _, vp := range pairs {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			testCopyThroughHandlers(t, vp[0], vp[1])
		})
	}
}

func testCopyThroughHandlers(t *testing.T, provVersion, tgtVersion string) {
	p := pgtest.Shared(t, provVersion).NewDB(t)
	tg := pgtest.Shared(t, tgtVersion).NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pconn := pgtest.Connect(t, p)
	_, err := pconn.Exec(ctx, handlerSrc)
	require.NoError(t, err)
	var db string
	require.NoError(t, pconn.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	_, err = pconn.Exec(ctx, `ALTER DATABASE `+change.QuoteIdent(db)+` SET TimeZone = 'Asia/Tokyo'`)
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tg)
	_, err = tconn.Exec(ctx, `CREATE SCHEMA arch; CREATE TABLE arch.sql_dest `+handlerDest+`; CREATE TABLE arch.go_dest `+handlerDest+`;
		CREATE TABLE ts_dest (id int PRIMARY KEY, secret text, v text, flag boolean, ts timestamptz, f float8, b bytea, tags text[]);
		INSERT INTO arch.go_dest (id) VALUES (-1)`)
	require.NoError(t, err)

	src := change.Table{Schema: "public", Name: "src"}
	tables := []copier.Table{
		{Source: src, Dest: change.Table{Schema: "arch", Name: "sql_dest"}, Handler: "sqlchain"},
		{Source: src, Dest: change.Table{Schema: "arch", Name: "go_dest"}, Handler: "gochain"},
		{Source: src, Dest: change.Table{Schema: "public", Name: "ts_dest"}, Handler: "filter", Config: `{"column": "ts", "in": ["2024-01-01 01:00:00+00"]}`},
	}
	pc, tc := configs(t, p, tg)
	reg := testRegistry(t)
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, Parallel: 3, Registry: reg}, tables)
	require.NoError(t, err)

	var want, wantTS int64
	require.NoError(t, pconn.QueryRow(ctx, `SELECT sum(CASE WHEN flag THEN 1 ELSE 0 END), sum(CASE WHEN ts = '2024-01-01 01:00:00+00' THEN 1 ELSE 0 END) FROM src`).Scan(&want, &wantTS))
	require.Positive(t, want)
	require.Equal(t, want, res[0].Rows)
	require.Equal(t, want, res[1].Rows)
	require.Equal(t, wantTS, res[2].Rows)
	var n, filled, extra int64
	require.NoError(t, tconn.QueryRow(ctx, `SELECT count(*), count(value), sum(CASE WHEN extra = 7 THEN 1 ELSE 0 END) FROM arch.sql_dest WHERE ok`).Scan(&n, &filled, &extra))
	require.Equal(t, want, n, "only the rows the filter keeps")
	require.Equal(t, n, extra, "a column the handlers do not write keeps its default")
	require.Positive(t, filled, "the renamed column is filled")
	var diff int64
	require.NoError(t, tconn.QueryRow(ctx, `SELECT count(*) FROM ((SELECT * FROM arch.sql_dest EXCEPT SELECT * FROM arch.go_dest)
		UNION ALL (SELECT * FROM arch.go_dest EXCEPT SELECT * FROM arch.sql_dest)) d`).Scan(&diff))
	require.Zero(t, diff, "set-based and through Go, the copies are the same")

	pairs := make([]compare.Pair, len(tables))
	for i, tb := range tables {
		h, err := reg.ForRoute(change.Route{Source: tb.Source, Dest: tb.Dest, Handler: tb.Handler, Config: tb.Config})
		require.NoError(t, err)
		pairs[i] = compare.Pair{Source: tb.Source, Dest: tb.Dest, Handler: h}
	}
	cres, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: pairs, ChunkKeys: 1000})
	require.NoError(t, err)
	for i, r := range cres {
		require.NoError(t, r.Err, r.Pair.String())
		require.True(t, r.Equal, "%+v", r)
		if i < 2 {
			require.Equal(t, []string{"extra"}, r.Skipped, "%+v", r)
			require.Equal(t, []string{"id", "value", "ok", "ts", "f", "b", "tags"}, r.Columns)
		} else {
			require.Empty(t, r.Skipped)
		}
	}
}
