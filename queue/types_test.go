package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// typeColumn is a column of the round-trip table and the values the rows give it (SQL
// literals, "NULL" included), row by row.
type typeColumn struct {
	name, typ string
	minVer    int // server_version_num the type needs
	vals      []string
}

func typeColumns() []typeColumn {
	const rows = 3 // every column gets exactly this many values; row 4 is all NULL, row 5 is 10 MB
	_ = rows
	return []typeColumn{
		{"i2", "int2", 0, []string{"-32768", "32767", "0"}},
		{"i4", "int4", 0, []string{"-2147483648", "2147483647", "0"}},
		{"i8", "int8", 0, []string{"-9223372036854775808", "9223372036854775807", "0"}},
		{"num", "numeric", 0, []string{"'NaN'", "'123456789012345678901234567890.123456789012345678901234567890123'", "'-0.000000000000000000000000000001'"}},
		{"f4", "float4", 0, []string{"'3.4028235e38'", "'-0'", "'NaN'"}},
		{"f8", "float8", 0, []string{"'1.7976931348623157e308'", "'-Infinity'", "'4.9e-324'"}},
		{"f8b", "float8", 0, []string{"'0.1'", "'-0'", "'Infinity'"}},
		{"t", "text", 0, []string{`E'unicode \u00e9 \u2713 \U0001F600 "quotes" ''single'' \\back\\slash\nnew,line (paren) {brace}'`, "''", `' '`}},
		{"vc", "varchar(20)", 0, []string{`'a,b'`, `'"'`, `'\'`}},
		{"ch", "char(3)", 0, []string{`'a'`, `'abc'`, `''`}},
		{"b", "bytea", 0, []string{`'\x00ff5c22'::bytea`, `''::bytea`, `'\x5c5c00'::bytea`}},
		{"bo", "bool", 0, []string{"true", "false", "NULL"}},
		{"d", "date", 0, []string{"'2024-02-29'", "'infinity'", "'0044-03-15 BC'"}},
		{"tm", "time", 0, []string{"'23:59:59.999999'", "'00:00'", "'12:34:56'"}},
		{"ttz", "timetz", 0, []string{"'12:00+05:30'", "'00:00:00-11'", "'23:59:59.5+00'"}},
		{"ts", "timestamp", 0, []string{"'2024-01-01 00:00:00.123456'", "'-infinity'", "'1999-12-31 23:59:59'"}},
		{"tstz", "timestamptz", 0, []string{"'2024-06-01 12:34:56.789+02'", "'infinity'", "'1900-01-01 00:00:00+00'"}},
		{"iv", "interval", 0, []string{"'1 year 2 mons 3 days 04:05:06.789'", "'-1 days +02:00'", "'0'"}},
		{"u", "uuid", 0, []string{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'", "NULL"}},
		{"ip", "inet", 0, []string{"'192.168.1.1/24'", "'::1'", "'2001:db8::1/64'"}},
		{"cid", "cidr", 0, []string{"'10.0.0.0/8'", "'2001:db8::/32'", "NULL"}},
		{"mac", "macaddr", 0, []string{"'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'", "NULL"}},
		{"m", "money", 0, []string{"'12.34'", "'-92233720368547758.08'", "'0'"}},
		{"bt", "bit(5)", 0, []string{"B'10101'", "B'00000'", "NULL"}},
		{"vb", "varbit", 0, []string{"B'1'", "B''", "B'1010101010101'"}},
		{"pt", "point", 0, []string{"'(1.5,-2.25)'", "'(0.1,1e300)'", "NULL"}},
		{"arr", "int[]", 0, []string{"'{1,NULL,3}'", "'{}'", "'{{1,2},{3,4}}'"}},
		{"tarr", "text[]", 0, []string{`E'{"a b",NULL,"",",","\\\\","\\"","NULL"}'`, `'{}'`, `'{{a,b},{c,d}}'`}},
		{"farr", "float8[]", 0, []string{"'{0.1,NaN,-Infinity}'", "'{-0}'", "NULL"}},
		{"tsarr", "timestamptz[]", 0, []string{"'{2024-01-01 10:00+01,NULL}'", "'{}'", "NULL"}},
		{"comp", "rt_comp", 0, []string{"ROW(1, 'x y', NULL, '2024-01-01 00:00+00', '1 day')", "ROW(NULL, '', 0.5, NULL, NULL)", "NULL"}},
		{"dom", "rt_dom", 0, []string{"'2024-03-01 12:00+03'", "NULL", "'epoch'"}},
		{"j", "json", 90200, []string{`'{"a": [1, 2.50, "x\"y"], "b": null}'`, `'"é"'`, "NULL"}},
		{"jb", "jsonb", 90400, []string{`'{"a": [1, 2.50, "x\"y"], "b": null}'`, `'[]'`, "NULL"}},
		{"rng", "tstzrange", 90200, []string{"'[2024-01-01 00:00+00,2024-02-01 00:00+00)'", "'empty'", "'(,)'"}},
		{"nrng", "numrange", 90200, []string{"'[1.5,2.5]'", "NULL", "'(,3)'"}},
	}
}

// TestTypeRoundTrip writes every built-in type through the capture trigger from a session with
// non-ISO DateStyle, non-default IntervalStyle, extra_float_digits, TimeZone and bytea_output,
// reads the events through Source and checks each value byte-exact against the provider's
// own text of it (SELECT col::text under ISO settings and TimeZone UTC).
func TestTypeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			admin := p.conn(t)
			version := pg.ServerVersion(admin)
			exec(t, admin, `CREATE TYPE rt_comp AS (a int, b text, c float8, d timestamptz, e interval)`)
			exec(t, admin, `CREATE DOMAIN rt_dom AS timestamptz`)

			cols := []typeColumn{}
			for _, c := range typeColumns() {
				if version >= c.minVer {
					if c.name == "b" && version < 90000 { // no hex input before 9.0: the same bytes escaped
						c.vals = []string{`'\000\377\\"'::bytea`, `''::bytea`, `'\\\\\000'::bytea`}
					}
					if c.name == "f8" && version < 90200 { // denormals are refused on input before 9.2
						c.vals = []string{c.vals[0], c.vals[1], "'2.2250738585072014e-308'"}
					}
					cols = append(cols, c)
				}
			}
			if hasXML(ctx, admin) {
				cols = append(cols, typeColumn{"x", "xml", 0, []string{`'<a b="1">t &amp; é</a>'`, `'plain text'`, "NULL"}})
			}
			defs := []string{"id int PRIMARY KEY"}
			for _, c := range cols {
				defs = append(defs, change.QuoteIdent(c.name)+" "+c.typ)
			}
			exec(t, admin, `CREATE TABLE rt (`+strings.Join(defs, ", ")+`)`)
			_, err := AddTable(ctx, admin, "q", TableSpec{Name: "rt"})
			require.NoError(t, err)
			_, err = RegisterConsumer(ctx, admin, "q", "c")
			require.NoError(t, err)

			// The writer: every setting that changes a text form set away from skiff's.
			w := p.conn(t)
			exec(t, w, `SET DateStyle = 'SQL, DMY'`)
			exec(t, w, `SET IntervalStyle = 'sql_standard'`)
			exec(t, w, `SET extra_float_digits = 0`)
			exec(t, w, `SET TimeZone = 'Asia/Kathmandu'`)
			if pg.ServerVersion(w) >= 90000 { // before 9.0 bytea has only the escape format
				exec(t, w, `SET bytea_output = 'escape'`)
			}
			for row := 0; row < 3; row++ {
				names, vals := []string{"id"}, []string{fmt.Sprint(row + 1)}
				for _, c := range cols {
					names = append(names, change.QuoteIdent(c.name))
					vals = append(vals, c.vals[row])
				}
				exec(t, w, `INSERT INTO rt (`+strings.Join(names, ", ")+`) VALUES (`+strings.Join(vals, ", ")+`)`)
			}
			exec(t, w, `INSERT INTO rt (id) VALUES (4)`)
			// The writer's own settings are back after each capture.
			var ds, tz string
			require.NoError(t, w.QueryRow(ctx, `SELECT current_setting('datestyle'), current_setting('timezone')`).Scan(&ds, &tz))
			require.Equal(t, "SQL, DMY", ds)
			require.Equal(t, "Asia/Kathmandu", tz)
			big := strings.Repeat("0123456789\"\\,()é\n", 10<<20/18)
			exec(t, w, `INSERT INTO rt (id, t) VALUES (5, $1)`, big)
			exec(t, w, `UPDATE rt SET i4 = i4 WHERE id = 1`)
			// Writers whose settings already give skiff's text take the fast path: skiff's
			// own session, and a plain connection with the server's defaults.
			exec(t, admin, `UPDATE rt SET i2 = i2 WHERE id = 2`)
			plain := pgtest.Connect(t, p.url)
			_, err = plain.Exec(ctx, `UPDATE rt SET i2 = i2 WHERE id = 3`)
			require.NoError(t, err)
			_, err = ForceTick(ctx, admin, "q")
			require.NoError(t, err)

			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)
			_, evs := readBatch(t, src)
			require.Len(t, evs, 8)

			// The reference: the provider's text of each value, under skiff's settings.
			ref := p.conn(t)
			exec(t, ref, `SET TimeZone = 'UTC'`)
			if pg.ServerVersion(ref) >= 90000 {
				exec(t, ref, `SET bytea_output = 'hex'`)
			}
			for _, ev := range evs {
				got := values(ev)
				id := got["id"].Text
				for _, c := range append([]typeColumn{{name: "id"}}, cols...) {
					// The type's output function text (result format text). It is what
					// col::text gives for most types; not for char(n) (the cast drops the
					// padding), bool (true vs t) and inet (the cast adds /32).
					var want *string
					require.NoError(t, ref.QueryRow(ctx, `SELECT `+change.QuoteIdent(c.name)+` FROM rt WHERE id = $1`,
						pgx.QueryResultFormats{pgx.TextFormatCode}, id).Scan(&want))
					g, ok := got[c.name]
					require.True(t, ok, "column %s missing", c.name)
					if want == nil {
						require.False(t, g.Valid, "row %s column %s: want NULL, got %q", id, c.name, g.Text)
						continue
					}
					require.True(t, g.Valid, "row %s column %s: want %q, got NULL", id, c.name, *want)
					if len(*want) > 1000 {
						require.True(t, *want == g.Text, "row %s column %s: %d bytes differ", id, c.name, len(*want))
						continue
					}
					require.Equal(t, *want, g.Text, "row %s column %s (%s)", id, c.name, c.typ)
				}
			}
			require.Equal(t, len(big), len(values(evs[4])["t"].Text))
			require.Equal(t, change.Update, evs[7].Op)
		})
	}
}

func hasXML(ctx context.Context, c *pgx.Conn) bool {
	tx, err := c.Begin(ctx)
	if err != nil {
		return false
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `SELECT '<a/>'::xml`)
	return err == nil
}
