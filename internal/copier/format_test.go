package copier_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCopyFormat: a table whose columns have the same built-in types on both sides is copied
// in COPY's binary format, values that text escapes or rounds included (NULLs, special floats,
// tabs and newlines, NUL bytes, arrays with NULLs, infinite timestamps); a table with a column
// whose type differs (int4 → int8: text converts it, binary fails), an array of an enum (its
// binary form names the element type's OID, which differs between databases) or a domain is
// copied in text. Provider and target are compared row by row; on the default version, from
// the oldest installed version to the newest, and from the oldest to the default (8.4 or 9.0
// with SKIFF_PG_BINDIRS: 9.0 takes the option list, but not a keyword as the format). The
// copy, in one stream into tables it truncated, freezes the rows (COPY FREEZE).
func TestCopyFormat(t *testing.T) {
	t.Parallel()
	pairs := [][2]string{{"", ""}}
	if majors := pgtest.Majors(); len(majors) > 1 {
		num := func(v string) float64 {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, "major %q", v)
			return f
		}
		oldest, newest := majors[0], majors[0]
		for _, v := range majors {
			if num(v) < num(oldest) {
				oldest = v
			}
			if num(v) > num(newest) {
				newest = v
			}
		}
		pairs = append(pairs, [2]string{oldest, newest})
		if oldest != pgtest.DefaultVersion() {
			pairs = append(pairs, [2]string{oldest, ""})
		}
	}
	for _, vs := range pairs {
		t.Run("pg"+vs[0]+"to"+vs[1], func(t *testing.T) {
			t.Parallel()
			testCopyFormat(t, vs[0], vs[1])
		})
	}
}

func testCopyFormat(t *testing.T, provVersion, tgtVersion string) {
	p := pgtest.Shared(t, provVersion).NewDB(t)
	tg := pgtest.Shared(t, tgtVersion).NewDB(t)
	ctx := context.Background()
	pconn, tconn := pgtest.Connect(t, p), pgtest.Connect(t, tg)
	jsonCols, jsonVals := "", ""
	if pg.ServerVersion(pconn) >= 90400 && pg.ServerVersion(tconn) >= 90400 {
		jsonCols = `, js json, jb jsonb`
		jsonVals = `, CASE WHEN g % 5 <> 0 THEN ('{"a": [1, "x\ty"], "n": ' || g || '}')::json END,
			CASE WHEN g % 5 <> 0 THEN ('{"b": {"c": null}, "n": ' || g || '}')::jsonb END`
	}
	all := `CREATE TABLE alltypes (id int8 PRIMARY KEY, b bool, by bytea, c "char", n name, i2 int2, i4 int4, tx text,
		o oid, f4 float4, f8 float8, m money, ip inet, cd cidr, mac macaddr, bp char(5), vc varchar(10), d date,
		tm time, ts timestamp, tstz timestamptz, iv interval, ttz timetz, bt bit(4), vb varbit, num numeric(12,3),
		nu numeric, u uuid, ai int4[], at text[], af float8[], ats timestamptz[]` + jsonCols + `);
		CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE DOMAIN posint AS int CHECK (VALUE > 0);
		CREATE TABLE enumarr (id int PRIMARY KEY, moods mood[], v text);
		CREATE TABLE dom (id int PRIMARY KEY, p posint, v text);`
	for _, c := range []*pgx.Conn{pconn, tconn} {
		_, err := c.Exec(ctx, all)
		require.NoError(t, err)
	}
	_, err := pconn.Exec(ctx, `CREATE TABLE mismatch (id int PRIMARY KEY, n int4, v text)`)
	require.NoError(t, err)
	_, err = tconn.Exec(ctx, `CREATE TYPE unused AS ENUM ('x'); -- the target's enum OIDs differ from the provider's
		CREATE TABLE mismatch (id int PRIMARY KEY, n int8, v text)`)
	require.NoError(t, err)
	_, err = pconn.Exec(ctx, `INSERT INTO alltypes SELECT g, g % 2 = 0, decode('00ff5c0a' || lpad(to_hex(g), 8, '0'), 'hex'),
		chr(65 + g % 26)::"char", 'name' || g, (g % 30000)::int2, g * 7, E'tab\there\nnl \\ ✓ ' || g,
		g::oid, (g / 3.0)::float4, CASE g % 4 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN 1.0 / 3 ELSE -g / 7.0 END,
		(g * 1.25)::text::money, ('10.0.' || (g % 256) || '.1')::inet, '192.168.0.0/16', '08:00:2b:01:02:03',
		'ab', 'v' || (g % 1000), date '2000-01-01' + g, time '12:34:56.789' + g * interval '1 s',
		CASE WHEN g % 10 = 0 THEN 'infinity'::timestamp ELSE timestamp '2001-02-03 04:05:06.123456' + g * interval '1 min' END,
		timestamptz '2001-02-03 04:05:06.5+02' - g * interval '1 h', g * interval '1 day 1.5 s', '12:00:00+05:30',
		B'1010', B'110011', g / 8.0, CASE WHEN g % 9 = 0 THEN 'NaN'::numeric ELSE g ^ 3 / 7.0 END,
		md5(g::text)::uuid, ARRAY[g, NULL, -g], ARRAY['a b', NULL, E'q"\\'], ARRAY[[g / 3.0, 1], [2, 'NaN']]::float8[],
		ARRAY[timestamptz '2020-01-01 00:00+00', NULL]`+jsonVals+`
		FROM generate_series(1, 2000) g;
		INSERT INTO alltypes (id) VALUES (0);
		INSERT INTO enumarr SELECT g, CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY['sad', NULL, 'happy']::mood[] END, 'e' || g FROM generate_series(1, 500) g;
		INSERT INTO dom SELECT g, g, 'd' || g FROM generate_series(1, 500) g;
		INSERT INTO mismatch SELECT g, g * 1000, 'm' || g FROM generate_series(1, 500) g`)
	require.NoError(t, err)

	pc, tc := configs(t, p, tg)
	var tables []copier.Table
	for _, n := range []string{"alltypes", "enumarr", "dom", "mismatch"} {
		tb := change.Table{Schema: "public", Name: n}
		tables = append(tables, copier.Table{Source: tb, Dest: tb})
	}
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, CopyPoint: trigger.CopyPoint}, tables)
	require.NoError(t, err)
	for i, want := range []struct {
		binary bool
		rows   int64
	}{{true, 2001}, {false, 500}, {false, 500}, {false, 500}} {
		require.Equal(t, want.binary, res[i].Binary, "binary format of %s", res[i].Table)
		require.Equal(t, want.rows, res[i].Rows, "rows of %s", res[i].Table)
	}

	// Copied in one stream into tables truncated in the copy's transaction: frozen as written
	// (COPY FREEZE), which sets their pages all-visible from 14 on (ANALYZE reads the
	// visibility map into relallvisible; no page of unfrozen new rows is all-visible).
	if pg.ServerVersion(tconn) >= 140000 {
		for _, tb := range tables {
			_, err := tconn.Exec(ctx, "ANALYZE "+tb.Dest.String())
			require.NoError(t, err)
			var pages, visible int
			require.NoError(t, tconn.QueryRow(ctx, `SELECT relpages, relallvisible FROM pg_class WHERE oid = $1::regclass`,
				tb.Dest.String()).Scan(&pages, &visible))
			require.Positive(t, pages)
			// Most: a page a batch of rows left part full, filled by the next, is not (18).
			require.Greater(t, visible, pages/2, "pages of %s all-visible (rows frozen by the copy)", tb.Dest)
		}
	}

	pairs := make([]compare.Pair, len(tables))
	for i, tb := range tables {
		pairs[i] = compare.Pair{Source: tb.Source, Dest: tb.Dest}
	}
	cres, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: pairs})
	require.NoError(t, err)
	for _, r := range cres {
		require.NoError(t, r.Err)
		require.True(t, r.Equal, "%+v", r)
	}
	// And row by row, as text (floats as their bits: versions print them differently).
	for _, tb := range tables {
		q := fmt.Sprintf(`SELECT t::text FROM %s t ORDER BY id`, tb.Source)
		if tb.Source.Name == "alltypes" {
			js := ""
			if jsonCols != "" {
				js = ", js, jb"
			}
			// bytea in hex: 8.4 prints it in escape format only.
			q = `SELECT row(id, b, encode(by, 'hex'), c, n, i2, i4, tx, o, encode(float4send(f4), 'hex'), encode(float8send(f8), 'hex'),
				m, ip, cd, mac, bp, vc, d, tm, ts, tstz, iv, ttz, bt, vb, num, nu, u, ai, at,
				(SELECT array_agg(encode(float8send(x), 'hex')) FROM unnest(af) x), ats` + js + `)::text
				FROM alltypes t ORDER BY id`
		}
		require.Equal(t, rowsText(t, pconn, q), rowsText(t, tconn, q), "rows of %s", tb.Source)
	}
}

// rowsText returns the rows of query as text, with date-times in UTC.
func rowsText(t *testing.T, conn *pgx.Conn, query string) []string {
	ctx := context.Background()
	_, err := conn.Exec(ctx, `SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'`)
	require.NoError(t, err)
	rows, err := conn.Query(ctx, query)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, out)
	return out
}
