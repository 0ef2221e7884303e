package tests

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// Names that need quoting: a 63-byte table name (the longest PostgreSQL keeps) and a 63-byte
// column name with two-byte characters.
var (
	awkLongTable  = "Long Table_" + strings.Repeat("N", 52)
	awkLongColumn = "Colonne_été_" + strings.Repeat("z", 49)
)

// awkTables are the captured tables, quoted as a user types them, with the text status shows.
var awkTables = []string{
	`"CamelSchema"."Order Items"`,
	`"sp ace.a""b"."a""b.c"`,
	`public."select"`,
	`public."données 表"`,
	`public."` + awkLongTable + `"`,
	`public."user"`,
}

// awkQueue is the queue's name: quotes, a space and a format verb.
const awkQueue = `q "awk's" %s`

// awkWhere is the --where of public."select": quoted column names, a keyword among them.
const awkWhere = `"order" % 2 = 0 OR "user" = 'keep'`

// awkWheres are the --where filters of the awkward test: the second names columns with a
// quote, a dot and unicode, and a string literal that looks like a column.
var awkWheres = map[string]string{
	`public."select"`:        awkWhere,
	`"sp ace.a""b"."a""b.c"`: `"a""b" IS DISTINCT FROM '"a""b"' AND ("a.b" IS NULL OR "données" <> 'NULL' OR "表" = '表')`,
}

// awkwardDDL is the awkward schema for a pair whose older server is minVersion: the json and
// jsonb columns are domains over them, or over text where a side lacks the type (json 9.2,
// jsonb 9.4), so that both sides hold the same type.
func awkwardDDL(minVersion int) string {
	js, jb := "json", "jsonb"
	if minVersion < 90200 {
		js = "text"
	}
	if minVersion < 90400 {
		jb = "text"
	}
	return `
CREATE SCHEMA "CamelSchema";
CREATE DOMAIN "CamelSchema".js AS ` + js + `;
CREATE DOMAIN "CamelSchema".jb AS ` + jb + `;
CREATE SCHEMA "sp ace.a""b";
CREATE TYPE "CamelSchema"."Mood" AS ENUM ('happy', 'sad ''q''', 'with,comma', '"dq" \');
CREATE DOMAIN "CamelSchema".posint AS integer CHECK (VALUE > 0);
CREATE TYPE "CamelSchema".pair AS (a text, "B c" integer);
CREATE DOMAIN "CamelSchema"."Price" AS float8 CHECK (VALUE IS DISTINCT FROM -1);
CREATE TABLE "CamelSchema"."Order Items" (
	"Order Id" bigint, "ts key" timestamptz, "txt key" text,
	"a""b" text, "a.b" text, "données" text, "表" text, "select" text, "user" integer,
	"order" float8, f4 real, num numeric, ts timestamptz, tsn timestamp, d date, iv interval,
	arr text[], nest integer[], js "CamelSchema".js, jb "CamelSchema".jb, dom "CamelSchema".posint, mood "CamelSchema"."Mood",
	comp "CamelSchema".pair, "by" bytea, big text, f8arr float8[], f4arr real[], price "CamelSchema"."Price",
	PRIMARY KEY ("txt key", "Order Id", "ts key"));
CREATE TABLE "sp ace.a""b"."a""b.c" ("Id" uuid PRIMARY KEY, "a""b" text, "a.b" text, "données" text,
	"表" text, "select" text, "user" text, "order" text);
CREATE TABLE public."select" ("order" integer PRIMARY KEY, "user" text, "from" float4);
CREATE TABLE public."données 表" ("clé" text PRIMARY KEY, "值" text, "Aa" text DEFAULT 'upper', aa text DEFAULT 'lower',
	"new
line	and tab" text DEFAULT E'\n');
CREATE TABLE public."` + awkLongTable + `" (id integer PRIMARY KEY, "` + awkLongColumn + `" text);
CREATE TABLE public."user" (k text, at timestamptz, v text, PRIMARY KEY (k, at));
`
}

func sp(s string) *string { return &s }

// awkTexts are text values that break naive encodings.
var awkTexts = []*string{
	sp(""), sp("NULL"), sp(`\N`), nil, sp(`\`), sp(`back\slash\\`), sp("tab\there"), sp("cr\rlf\r\n"),
	sp("'quote'"), sp(`"dq"`), sp("comma,(paren)"), sp(`(1,"x")`), sp("{a,b}"), sp("😀 emoji 𝄞"),
	sp("e\u0301 combining a\u0308"), sp("données 表"), sp(" leading"), sp("trailing "), sp(`\.`),
	sp("\\x00"), sp("()"), sp(`""`),
}

var (
	awkTsKeys = []string{"2000-01-01 12:34:56.789012+05:30", "4713-01-01 00:00:00+00 BC",
		"294276-12-31 23:59:59.999999+00", "infinity", "-infinity", "1999-12-31 23:59:59.999999-08"}
	awkFloat8 = []*string{sp("1e308"), sp("5e-324"), sp("-0"), sp("Infinity"), sp("-Infinity"), sp("NaN"),
		sp("0.1"), sp("1.7976931348623157e308"), sp("2.2250738585072014e-308"), nil}
	awkFloat4 = []*string{sp("3.4028235e38"), sp("1e-45"), sp("-0"), sp("NaN"), sp("Infinity"), sp("-Infinity"),
		sp("0.1"), sp("1.17549435e-38"), sp("16777217"), nil}
	awkNumeric = []*string{sp("NaN"), sp(strings.Repeat("9", 1000)),
		sp("-" + strings.Repeat("1", 500) + "." + strings.Repeat("3", 500)),
		sp("0." + strings.Repeat("0", 998) + "1"), sp("0"), sp("-0.0000"), nil}
	awkTimestamp = []*string{sp("294276-12-31 23:59:59.999999"), sp("4713-01-01 00:00:00 BC"), sp("infinity"),
		sp("-infinity"), sp("2024-02-29 00:00:00.000001"), nil}
	awkDate     = []*string{sp("4713-01-01 BC"), sp("5874897-12-31"), sp("infinity"), sp("-infinity"), sp("2000-02-29"), nil}
	awkInterval = []*string{sp("1 year 2 mons 3 days 04:05:06.789012"), sp("-1 mons +1 days -00:00:00.000001"),
		sp("178000000 years"), sp("00:00:00"), sp("-2147483648 days"), sp("1 mon -30 days"), nil}
	awkArrays = []*string{sp(`{NULL,"NULL","","q\"uote","{br}ace","com,ma","back\\slash"," sp ","😀"}`), sp(`{}`),
		sp(`{{a,b},{NULL,"}"}}`), nil, sp("{\"\\\\N\",\"a\tb\",\"cr\rlf\n\"}")}
	awkNested      = []*string{sp("{{1,2},{3,NULL}}"), sp("{{{1}},{{2}}}"), sp("{}"), sp("[0:1]={7,8}"), nil}
	awkJSON        = []*string{sp(`{"k" : [1, 2.50, "x\ny"], "k": 2}`), sp(`["\u0000", "\ud83d\ude00", "é"]`), sp(`null`), nil, sp(`  "s p"  `)}
	awkJSONB       = []*string{sp(`{"é": "😀", "n": 1.0e10, "nested": {"a": [null, true, "\"q\""]}}`), sp(`[]`), sp(`"NULL"`), sp(`null`), nil}
	awkDom         = []*string{sp("1"), sp("2147483647"), nil}
	awkMood        = []*string{sp("happy"), sp("sad 'q'"), sp("with,comma"), sp(`"dq" \`), nil}
	awkComp        = [][2]*string{{sp(`a,b "c" (d)`), sp("5")}, {sp(""), nil}, {nil, nil}, {sp("null-comp"), nil}, {sp(`\`), sp("-1")}}
	awkFloatArrays = []*string{sp("{0.1,NULL,-0,1e38,1e-45,Infinity,-Infinity,NaN,0.3333333333333333}"), sp("{{0.1,0.2},{NULL,3.14159265358979}}"), sp("{}"), nil}
	awkBytea       = []*string{sp("00ff5c0a0d22272c28"), sp(""), sp("5c78"), nil, sp(strings.Repeat("00fe", 500))}
)

func pick[T any](list []T, i int) T { return list[((i%len(list))+len(list))%len(list)] }

const awkInsertItem = `INSERT INTO "CamelSchema"."Order Items" ("Order Id", "ts key", "txt key", "a""b", "a.b", "données",
	"表", "select", "user", "order", f4, num, ts, tsn, d, iv, arr, nest, js, jb, dom, mood, comp, "by", big, f8arr, f4arr, price)
VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6, $7, $8, $9::text::int, $10::text::float8, $11::text::real,
	$12::text::numeric, $13::text::timestamptz, $14::text::timestamp, $15::text::date, $16::text::interval,
	$17::text::text[], $18::text::int[], $19::text::"CamelSchema".js, $20::text::"CamelSchema".jb, $21::text::"CamelSchema".posint,
	$22::text::"CamelSchema"."Mood",
	CASE WHEN $23::text = 'null-comp' THEN NULL ELSE ROW($23::text, $24::text::int)::"CamelSchema".pair END,
	decode($25::text, 'hex'), $26::text, $27::text::float8[], $28::text::real[], $29::text::"CamelSchema"."Price")`

// awkItemArgs are the values of Order Items row number id, variant v.
func awkItemArgs(id int64, v int, key string, big *string) []any {
	comp := pick(awkComp, v)
	return []any{id, pick(awkTsKeys, v), key, pick(awkTexts, v+1), pick(awkTexts, v+2), pick(awkTexts, v+3),
		pick(awkTexts, v+4), pick(awkTexts, v+5), strconv.Itoa(v - 3), pick(awkFloat8, v), pick(awkFloat4, v+1),
		pick(awkNumeric, v), pick(awkTsKeys, v+2), pick(awkTimestamp, v), pick(awkDate, v), pick(awkInterval, v),
		pick(awkArrays, v), pick(awkNested, v), pick(awkJSON, v), pick(awkJSONB, v), pick(awkDom, v), pick(awkMood, v),
		comp[0], comp[1], pick(awkBytea, v), big, pick(awkFloatArrays, v), pick(awkFloatArrays, v+1), pick(awkFloat8, v+3)}
}

func awkKeyText(v int) string {
	if t := pick(awkTexts, v); t != nil {
		return *t
	}
	return "was NULL"
}

func awkUUID(rng *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// awkExecer is what the awkward writes go through: a connection or a transaction.
type awkExecer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// awkNoDenormals writes through db with the float values below the normal range replaced by
// the smallest normal ones, for a pair with a server that refuses them on input (8.4 does).
type awkNoDenormals struct {
	db awkExecer
	r  *strings.Replacer
}

func (d awkNoDenormals) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	out := make([]any, len(args))
	for i, a := range args {
		if s, ok := a.(*string); ok && s != nil {
			r := d.r.Replace(*s)
			a = &r
		}
		out[i] = a
	}
	return d.db.Exec(ctx, sql, out...)
}

// awkDB returns db, or db with denormals replaced when minVersion is below 10 (8.4 refuses
// them; 10 and later take them).
func awkDB(db awkExecer, minVersion int) awkExecer {
	if minVersion < 100000 {
		return awkNoDenormals{db, strings.NewReplacer("5e-324", "2.2250738585072014e-308", "1e-45", "1.17549435e-38")}
	}
	return db
}

// awkSeed fills the provider before the subscription: rows the initial copy carries.
func awkSeed(t *testing.T, conn *pgx.Conn, minVersion int) {
	ctx := context.Background()
	c := awkDB(conn, minVersion)
	rng := rand.New(rand.NewPCG(42, 1))
	for v := range 60 {
		var big *string
		if v == 7 {
			big = sp(strings.Repeat("ten MB row é😀\t\\ ", 10<<20/21))
		}
		_, err := c.Exec(ctx, awkInsertItem, awkItemArgs(int64(v+1), v, awkKeyText(v), big)...)
		require.NoError(t, err, "item %d", v)
		_, err = c.Exec(ctx, `INSERT INTO "sp ace.a""b"."a""b.c" VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8)`,
			awkUUID(rng), pick(awkTexts, v), pick(awkTexts, v+3), pick(awkTexts, v+5), pick(awkTexts, v+7),
			pick(awkTexts, v+9), pick(awkTexts, v+11), pick(awkTexts, v+13))
		require.NoError(t, err)
		_, err = c.Exec(ctx, `INSERT INTO public."select" VALUES ($1, $2, $3::text::real)`, v, pick(awkTexts, v), pick(awkFloat4, v))
		require.NoError(t, err)
		_, err = c.Exec(ctx, `INSERT INTO public."données 表" VALUES ($1, $2)`, awkKeyText(v)+strconv.Itoa(v), pick(awkTexts, v+1))
		require.NoError(t, err)
		_, err = c.Exec(ctx, `INSERT INTO public."`+awkLongTable+`" VALUES ($1, $2)`, v, pick(awkTexts, v+2))
		require.NoError(t, err)
		_, err = c.Exec(ctx, `INSERT INTO public."user" VALUES ($1, $2::text::timestamptz, $3)`, awkKeyText(v), pick(awkTsKeys, v/len(awkTexts)), pick(awkTexts, v+4))
		require.NoError(t, err)
	}
}

// awkWriter runs random transactions over every awkward table until ctx ends.
func awkWriter(t *testing.T, ctx context.Context, wg *sync.WaitGroup, url string, minVersion int, seed uint64, txs *atomic.Int64) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 9))
		next := int64(seed) * 1_000_000
		for ctx.Err() == nil {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				for range 1 + rng.IntN(5) {
					next++
					if err := awkWriteOne(ctx, awkDB(tx, minVersion), rng, next); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				var pgErr *pgconn.PgError
				if ctx.Err() != nil || errors.Is(err, context.Canceled) {
					return
				}
				if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "23505") {
					continue
				}
				t.Errorf("awkward writer: %v", err)
				return
			}
			txs.Add(1)
		}
	}()
}

func awkWriteOne(ctx context.Context, tx awkExecer, rng *rand.Rand, id int64) error {
	const items = `"CamelSchema"."Order Items"`
	// Rows 1..10 of Order Items stay put: the end of the test changes one by hand.
	const someItem = `(SELECT "txt key", "Order Id", "ts key" FROM "CamelSchema"."Order Items" WHERE "Order Id" > 10 ORDER BY random() LIMIT 1)`
	v := rng.IntN(1000)
	var err error
	switch r := rng.IntN(100); {
	case r < 20:
		var big *string
		if rng.IntN(30) == 0 {
			big = sp(strings.Repeat("big é😀\r\n\\", (1<<20+rng.IntN(1<<20))/14))
		}
		_, err = tx.Exec(ctx, awkInsertItem, awkItemArgs(id, v, awkKeyText(v)+fmt.Sprint(id), big)...)
	case r < 30:
		_, err = tx.Exec(ctx, `UPDATE `+items+` SET "a""b" = $1, "order" = $2::text::float8, f4 = $3::text::real,
			iv = $4::text::interval, arr = CASE WHEN array_ndims(arr) > 1 THEN arr ELSE arr || $5::text END, jb = $6::text::"CamelSchema".jb, comp = ROW($1, 7)
			WHERE ("txt key", "Order Id", "ts key") = `+someItem,
			pick(awkTexts, v), pick(awkFloat8, v), pick(awkFloat4, v), pick(awkInterval, v), pick(awkTexts, v+1), pick(awkJSONB, v))
	case r < 40: // change the composite key
		_, err = tx.Exec(ctx, `UPDATE `+items+` SET "txt key" = "txt key" || coalesce($1, 'n'), "ts key" = $2::text::timestamptz
			WHERE ("txt key", "Order Id", "ts key") = `+someItem, pick(awkTexts, v+5), pick(awkTsKeys, v))
	case r < 45:
		_, err = tx.Exec(ctx, `DELETE FROM `+items+` WHERE ("txt key", "Order Id", "ts key") = `+someItem)
	case r < 50: // inserted and deleted in one transaction
		if _, err = tx.Exec(ctx, awkInsertItem, awkItemArgs(id, v, "short-lived", nil)...); err == nil {
			if _, err = tx.Exec(ctx, `UPDATE `+items+` SET "select" = 'x' WHERE "Order Id" = $1`, id); err == nil {
				_, err = tx.Exec(ctx, `DELETE FROM `+items+` WHERE "Order Id" = $1`, id)
			}
		}
	case r < 58:
		_, err = tx.Exec(ctx, `INSERT INTO "sp ace.a""b"."a""b.c" VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8)`,
			awkUUID(rng), pick(awkTexts, v), pick(awkTexts, v+3), pick(awkTexts, v+5), pick(awkTexts, v+7),
			pick(awkTexts, v+9), pick(awkTexts, v+11), pick(awkTexts, v+13))
	case r < 63: // a new uuid key
		_, err = tx.Exec(ctx, `UPDATE "sp ace.a""b"."a""b.c" SET "Id" = $1::text::uuid, "表" = $2
			WHERE "Id" = (SELECT "Id" FROM "sp ace.a""b"."a""b.c" ORDER BY random() LIMIT 1)`, awkUUID(rng), pick(awkTexts, v))
	case r < 66:
		_, err = tx.Exec(ctx, `DELETE FROM "sp ace.a""b"."a""b.c" WHERE "Id" = (SELECT "Id" FROM "sp ace.a""b"."a""b.c" ORDER BY random() LIMIT 1)`)
	case r < 72:
		_, err = tx.Exec(ctx, `INSERT INTO public."select" VALUES ($1, $2, $3::text::real)`, id, pick(awkTexts, v), pick(awkFloat4, v))
	case r < 78: // moves rows into and out of the --where filter
		_, err = tx.Exec(ctx, `UPDATE public."select" SET "order" = "order" + $1, "user" = CASE WHEN $2 THEN 'keep' ELSE "user" END
			WHERE "order" = (SELECT "order" FROM public."select" ORDER BY random() LIMIT 1)`, 1+rng.IntN(3), rng.IntN(3) == 0)
	case r < 80:
		_, err = tx.Exec(ctx, `DELETE FROM public."select" WHERE "order" = (SELECT "order" FROM public."select" ORDER BY random() LIMIT 1)`)
	case r < 85:
		_, err = tx.Exec(ctx, `INSERT INTO public."données 表" VALUES ($1, $2)`, awkKeyText(v)+fmt.Sprint(id), pick(awkTexts, v))
	case r < 88:
		_, err = tx.Exec(ctx, `UPDATE public."données 表" SET "clé" = "clé" || '表', "值" = $1
			WHERE "clé" = (SELECT "clé" FROM public."données 表" ORDER BY random() LIMIT 1)`, pick(awkTexts, v))
	case r < 92:
		_, err = tx.Exec(ctx, `INSERT INTO public."`+awkLongTable+`" VALUES ($1, $2)`, id, pick(awkTexts, v))
	case r < 94:
		_, err = tx.Exec(ctx, `UPDATE public."`+awkLongTable+`" SET "`+awkLongColumn+`" = $1
			WHERE id = (SELECT id FROM public."`+awkLongTable+`" ORDER BY random() LIMIT 1)`, pick(awkTexts, v))
	case r < 99:
		_, err = tx.Exec(ctx, `INSERT INTO public."user" VALUES ($1, $2::text::timestamptz, $3)`, awkKeyText(v)+fmt.Sprint(id), pick(awkTsKeys, v), pick(awkTexts, v))
	default:
		if rng.IntN(3) == 0 {
			_, err = tx.Exec(ctx, `TRUNCATE public."user"`)
		}
	}
	return err
}

// awkDump reads a table's rows as text under fixed session settings (floats as their binary
// send form in hex: their text differs between versions), sorted by the key's text bytes
// (independent of collations).
func awkDump(t *testing.T, c *pgx.Conn, table, where string) (cols []string, rows [][]*string) {
	t.Helper()
	ctx := context.Background()
	if pg.ServerVersion(c) >= 90000 { // bytea in the one format every version has
		exec1(t, c, `SET extra_float_digits = 3; SET bytea_output = 'escape'`)
	} else { // 2 is 8.4's maximum
		exec1(t, c, `SET extra_float_digits = 2`)
	}
	exec1(t, c, `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'`)
	r, err := c.Query(ctx, `SELECT a.attname, format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL),
		coalesce(a.attnum = ANY (i.indkey::int2[]), false)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
		WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, table)
	require.NoError(t, err)
	var exprs []string
	var keyIdx []int
	for r.Next() {
		var name, typ string
		var key bool
		require.NoError(t, r.Scan(&name, &typ, &key))
		id := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
		switch typ {
		case "double precision":
			id = "encode(float8send(" + id + "), 'hex')"
		case "real":
			id = "encode(float4send(" + id + "), 'hex')"
		case "double precision[]", "real[]":
			send := "float8send"
			if typ == "real[]" {
				send = "float4send"
			}
			id = "array_dims(" + id + ") || (SELECT array_agg(encode(" + send + "(x), 'hex'))::text FROM unnest(" + id + ") x)"
		default:
			id += "::text"
		}
		if key {
			keyIdx = append(keyIdx, len(cols))
		}
		cols = append(cols, name)
		exprs = append(exprs, id)
	}
	require.NoError(t, r.Err())
	require.NotEmpty(t, keyIdx, table)
	q := `SELECT ` + strings.Join(exprs, ", ") + ` FROM ` + table
	if where != "" {
		q += ` WHERE ` + where
	}
	r, err = c.Query(ctx, q)
	require.NoError(t, err)
	for r.Next() {
		row := make([]*string, len(cols))
		dest := make([]any, len(cols))
		for i := range row {
			dest[i] = &row[i]
		}
		require.NoError(t, r.Scan(dest...))
		rows = append(rows, row)
	}
	require.NoError(t, r.Err())
	keyOf := func(row []*string) string {
		var b strings.Builder
		for _, i := range keyIdx {
			b.WriteString(*row[i])
			b.WriteByte(0)
		}
		return b.String()
	}
	sort.Slice(rows, func(i, j int) bool { return keyOf(rows[i]) < keyOf(rows[j]) })
	return cols, rows
}

func awkCompare(t *testing.T, prov, tgt *pgx.Conn, table, where string) {
	t.Helper()
	cols, a := awkDump(t, prov, table, where)
	_, b := awkDump(t, tgt, table, "")
	show := func(p *string) string {
		if p == nil {
			return "NULL"
		}
		return fmt.Sprintf("%.200q", *p)
	}
	showRow := func(r []*string) string {
		parts := make([]string, len(r))
		for i, p := range r {
			parts[i] = show(p)
		}
		return strings.Join(parts, ", ")
	}
	for i := 0; i < min(len(a), len(b)); i++ {
		for j := range cols {
			if (a[i][j] == nil) != (b[i][j] == nil) || (a[i][j] != nil && *a[i][j] != *b[i][j]) {
				t.Errorf("table %s row %d column %q differs:\nprovider: %s\ntarget:   %s\nprovider row: %.500s", table, i, cols[j], show(a[i][j]), show(b[i][j]), showRow(a[i]))
				return
			}
		}
	}
	require.Equal(t, len(a), len(b), "table %s: rows on provider and target", table)
	t.Logf("table %s: %d rows equal", table, len(a))
}

type procOut struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (p *procOut) Write(b []byte) (int, error) { p.mu.Lock(); defer p.mu.Unlock(); return p.b.Write(b) }
func (p *procOut) String() string              { p.mu.Lock(); defer p.mu.Unlock(); return p.b.String() }

// startProc runs the skiff binary in the background until the test ends (SIGTERM, then wait).
func startProc(t *testing.T, args ...string) *procOut {
	t.Helper()
	cmd := exec.Command(skiffBinary(t), append([]string{"--log-format", "json"}, args...)...)
	out := &procOut{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("skiff %s output:\n%.20000s", args[0], out.String())
		}
	})
	return out
}

// TestAwkwardNamesAndValues replicates tables whose names need quoting and whose values
// break naive encodings, through the built binary (init, table add with --where, subscribe
// with the initial copy, ticker, worker) under concurrent writers, then compares the sides with
// skiff compare and row by row, and checks that compare notices a row changed by hand.
func TestAwkwardNamesAndValues(t *testing.T) {
	t.Parallel()
	forEachSource(t, testAwkward)
}

func testAwkward(t *testing.T, provVersion, tgtVersion string, src source) {
	require.Len(t, awkLongTable, 63)
	require.Len(t, awkLongColumn, 63)
	p := &pair{prov: pgtest.Shared(t, provVersion).NewDB(t), tgt: pgtest.Shared(t, tgtVersion).NewDB(t), src: src}
	for _, a := range [][]string{{"init", "provider", "--db", p.prov}, {"init", "target", "--db", p.tgt}} {
		out, err := skiff(t, a...)
		require.NoError(t, err, out)
	}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	minVersion := min(pg.ServerVersion(prov), pg.ServerVersion(tgt))
	exec1(t, prov, awkwardDDL(minVersion))
	exec1(t, tgt, awkwardDDL(minVersion))
	awkSeed(t, prov, minVersion)

	// --where is the trigger source's (a capture trigger's filter): a logical queue captures
	// those tables whole.
	wheres := awkWheres
	if src.logical() {
		wheres = nil
	}
	var plain []string
	for _, tb := range awkTables {
		if wheres[tb] == "" {
			plain = append(plain, tb)
		}
	}
	out, err := skiff(t, append(append([]string{"table", "add", "--db", p.prov, "--queue", awkQueue}, src.addArgs()...), plain...)...)
	require.NoError(t, err, out)
	for tb, where := range wheres {
		out, err = skiff(t, "table", "add", "--db", p.prov, "--queue", awkQueue, "--where", where, tb)
		require.NoError(t, err, out)
	}

	startProc(t, "ticker", "--db", p.prov, "--poll", "50ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	for i := range 3 {
		awkWriter(t, ctx, &wwg, p.prov, minVersion, uint64(i+1), &txs)
	}
	defer func() { cancel(); wwg.Wait() }()

	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", awkQueue, "--consumer", "c1")
	require.NoError(t, err, out)
	startProc(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", awkQueue, "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")

	// The copy under three writers can take minutes when the whole suite loads the machine
	// (missed 3 minutes once into an 8.4 target): a deadline, not a measure.
	pgtest.Eventually(t, 5*time.Minute, "every table in sync", func() bool { return allInSync(t, tgt) })
	dur := 10 * time.Second
	if s, err := time.ParseDuration(os.Getenv("SKIFF_AWKWARD_DURATION")); err == nil {
		dur = s
	}
	start := time.Now()
	pgtest.Eventually(t, dur+time.Minute, "writers run for a while", func() bool {
		return t.Failed() || time.Since(start) > dur && txs.Load() > 100
	})
	require.False(t, t.Failed())
	cancel()
	wwg.Wait()
	t.Logf("%d writer transactions", txs.Load())
	p.caughtUp(t, 2*time.Minute, awkQueue)

	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", awkQueue)
	if err != nil {
		t.Errorf("skiff compare: %v\n%s", err, out) // and the rows that differ, below
	}
	for _, tb := range awkTables {
		awkCompare(t, prov, tgt, tb, wheres[tb])
	}
	require.False(t, t.Failed())

	// status names the tables quoted as SQL would.
	out, err = skiff(t, "status", "--provider", p.prov, "--target", p.tgt)
	require.NoError(t, err, out)
	js, err := exec.Command(skiffBinary(t), "status", "--provider", p.prov, "--target", p.tgt, "--json").Output()
	require.NoError(t, err)
	var rep struct {
		Queues []struct {
			Consumers []struct {
				Subscription struct {
					Tables []struct {
						Source string `json:"source"`
						Dest   string `json:"dest"`
					} `json:"tables"`
				} `json:"subscription"`
			} `json:"consumers"`
		} `json:"queues"`
	}
	require.NoError(t, json.Unmarshal(js, &rep), string(js))
	require.Len(t, rep.Queues, 1, string(js))
	require.Len(t, rep.Queues[0].Consumers, 1, string(js))
	var names []string
	for _, tb := range rep.Queues[0].Consumers[0].Subscription.Tables {
		var same bool
		require.NoError(t, prov.QueryRow(context.Background(), `SELECT $1::text::regclass = $2::text::regclass`, tb.Source, tb.Dest).Scan(&same), tb.Source)
		require.True(t, same, tb.Source)
		names = append(names, tb.Source)
		require.Contains(t, out, tb.Source)
	}
	var want []string
	for _, tb := range awkTables {
		var q string
		require.NoError(t, prov.QueryRow(context.Background(), `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::regclass`, tb).Scan(&q))
		want = append(want, q)
	}
	require.ElementsMatch(t, want, names, string(js))

	// A row changed by hand on the target: compare exits 1 naming the table and, with --rows,
	// the key.
	exec1(t, tgt, `UPDATE "CamelSchema"."Order Items" SET "a""b" = 'changed by hand' WHERE "Order Id" = 4`)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", awkQueue, "--rows")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, out)
	require.Equal(t, 1, ee.ExitCode(), out)
	require.Contains(t, out, `"CamelSchema"."Order Items"`)
	var key string
	exec1(t, tgt, `SET TimeZone = 'UTC'`)
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT ROW("txt key", "Order Id", "ts key")::text
		FROM "CamelSchema"."Order Items" WHERE "Order Id" = 4`).Scan(&key))
	require.Contains(t, out, key)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "key ") {
			require.Contains(t, line, key, out)
		}
	}
}

// TestInitialCopyHonoursWhere: the initial copy of a table captured with --where holds only
// the rows the filter keeps (the capture trigger queues no others: a row the copy held
// against the filter would never be updated or deleted, and a row moving into the filter
// would collide with it).
func TestInitialCopyHonoursWhere(t *testing.T) {
	t.Parallel()
	p := &pair{prov: pgtest.Shared(t, "").NewDB(t), tgt: pgtest.Shared(t, "").NewDB(t)}
	for _, a := range [][]string{{"init", "provider", "--db", p.prov}, {"init", "target", "--db", p.tgt}} {
		out, err := skiff(t, a...)
		require.NoError(t, err, out)
	}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	const ddl = `CREATE TABLE public."select" ("order" integer PRIMARY KEY, "user" text, "from" float4);
		CREATE TABLE public."50% off" ("%s" text PRIMARY KEY, "%d" integer);`
	exec1(t, prov, ddl)
	exec1(t, tgt, ddl)
	exec1(t, prov, `INSERT INTO public."select" SELECT g, CASE WHEN g % 5 = 0 THEN 'keep' END FROM generate_series(1, 100) g;
		INSERT INTO public."50% off" SELECT '%' || g, g FROM generate_series(1, 10) g`)
	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "qw", "--where", awkWhere, `public."select"`)
	require.NoError(t, err, out)
	out, err = skiff(t, "table", "add", "--db", p.prov, "--queue", "qw", `public."50% off"`)
	require.NoError(t, err, out)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qw", "--consumer", "c1")
	require.NoError(t, err, out)
	awkCompare(t, prov, tgt, `public."select"`, awkWhere)
	awkCompare(t, prov, tgt, `public."50% off"`, "")

	// compare applies the filter to the provider's rows, and copes with % in names.
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qw")
	require.NoError(t, err, out)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qw", "--rows")
	require.NoError(t, err, out)
	exec1(t, tgt, `UPDATE public."select" SET "from" = 1 WHERE "order" = 10; UPDATE public."50% off" SET "%d" = 0 WHERE "%s" = '%3'`)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qw", "--rows")
	require.Error(t, err, out)
	require.Contains(t, out, "key (10): different")
	require.Contains(t, out, "key (%3): different")

	// A resync is copied by the worker's table manager: with the filter too.
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "qw", "--consumer", "c1", `public."select"`)
	require.NoError(t, err, out)
	startProc(t, "ticker", "--db", p.prov, "--poll", "50ms")
	startProc(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "qw", "--consumer", "c1")
	pgtest.Eventually(t, time.Minute, "the resync is copied", func() bool { return strings.HasPrefix(tableStates(t, tgt)["select"], "catching-up") })
	p.inSync(t, time.Minute, "qw")
	awkCompare(t, prov, tgt, `public."select"`, awkWhere)
}

// TestQuotedNamesOnTheCommandLine: table names given quoted, with a comma, a colon and a dot
// inside, are taken whole by table add, subscribe --table (also as TABLE:DEST) and compare
// --table.
func TestQuotedNamesOnTheCommandLine(t *testing.T) {
	t.Parallel()
	p := &pair{prov: pgtest.Shared(t, "").NewDB(t), tgt: pgtest.Shared(t, "").NewDB(t)}
	for _, a := range [][]string{{"init", "provider", "--db", p.prov}, {"init", "target", "--db", p.tgt}} {
		out, err := skiff(t, a...)
		require.NoError(t, err, out)
	}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	const ddl = `CREATE SCHEMA "Camel.Schema"; CREATE TABLE "Camel.Schema"."a,b" (id int PRIMARY KEY, v text);
		CREATE TABLE public."x:y" (id int PRIMARY KEY, v text);`
	exec1(t, prov, ddl)
	exec1(t, tgt, ddl+`CREATE SCHEMA "Other"; CREATE TABLE "Other"."c.d" (id int PRIMARY KEY, v text);`)
	exec1(t, prov, `INSERT INTO "Camel.Schema"."a,b" VALUES (1, 'one'); INSERT INTO public."x:y" VALUES (2, 'two')`)
	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "qn", `"Camel.Schema"."a,b"`, `public."x:y"`)
	require.NoError(t, err, out)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qn", "--consumer", "c1",
		"--table", `"Camel.Schema"."a,b":"Other"."c.d"`, "--table", `public."x:y"`)
	require.NoError(t, err, out)
	require.Contains(t, out, `"Camel.Schema"."a,b" -> "Other"."c.d"`)
	require.Contains(t, out, `"public"."x:y" -> "public"."x:y"`)
	var n int
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT count(*) FROM "Other"."c.d"`).Scan(&n))
	require.Equal(t, 1, n)
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "qn", "--table", `"Camel.Schema"."a,b"`)
	require.NoError(t, err, out)
	require.Contains(t, out, `"Camel.Schema"."a,b" → "Other"."c.d"`)
	_ = prov
}

// TestAwkwardKeyChurn: a small space of awkward composite keys (so that one batch holds many
// changes of one key), key changes of several rows in one statement, deletes, re-inserts and
// TRUNCATE, from two writers; both sides end equal row by row.
func TestAwkwardKeyChurn(t *testing.T) {
	t.Parallel()
	forEachSource(t, testAwkwardKeyChurn)
}

func testAwkwardKeyChurn(t *testing.T, provVersion, tgtVersion string, src source) {
	const ddl = `CREATE TABLE "Churn ""K""" (k text, n integer, v text,
		CONSTRAINT "churn pk" PRIMARY KEY (k, n));`
	p := newPair(t, provVersion, tgtVersion, ddl)
	p.src = src
	truncate := true // replicated by every source (logical before 11: the marker trigger)
	p.capture(t, "qk", `public."Churn ""K"""`)
	p.subscribe(t, "qk")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 30*time.Millisecond, "qk")
	p.runWorker(t, ctx, &wg, "qk")

	keys := []string{"", "NULL", `\N`, `\`, "a\tb", "cr\r\n", `"`, "'", ",", "()", "{}", "😀", "e\u0301", "é", " ", "x"}
	wctx, wstop := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	var txs atomic.Int64
	writers := 2
	if n, err := strconv.Atoi(os.Getenv("SKIFF_CHURN_WRITERS")); err == nil {
		writers = n
	}
	for w := range writers {
		c := connect(t, p.prov)
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for wctx.Err() == nil {
				if truncate && rng.IntN(150) == 0 { // its own transaction: no deferred checks pending
					if _, err := c.Exec(wctx, `TRUNCATE "Churn ""K"""`); err != nil && wctx.Err() == nil {
						t.Errorf("truncate: %v", err)
					}
					continue
				}
				err := pgx.BeginFunc(wctx, c, func(tx pgx.Tx) error {
					for range 1 + rng.IntN(6) {
						k1, k2 := keys[rng.IntN(len(keys))], keys[rng.IntN(len(keys))]
						n1, n2 := rng.IntN(3), rng.IntN(3)
						var err error
						switch r := rng.IntN(100); {
						case r < 35:
							_, err = tx.Exec(wctx, `INSERT INTO "Churn ""K""" VALUES ($1, $2, $3)`, k1, n1, keys[rng.IntN(len(keys))])
						case r < 55:
							_, err = tx.Exec(wctx, `UPDATE "Churn ""K""" SET k = $3, n = $4 WHERE k = $1 AND n = $2`, k1, n1, k2, n2)
						case r < 70: // move every row of one k to another (fails when one exists)
							_, err = tx.Exec(wctx, `UPDATE "Churn ""K""" SET k = $2, v = v || '+' WHERE k = $1`, k1, k2)
						default:
							_, err = tx.Exec(wctx, `DELETE FROM "Churn ""K""" WHERE k = $1`, k1)
						}
						if err != nil {
							return err
						}
					}
					return nil
				})
				var pgErr *pgconn.PgError
				switch {
				case err == nil:
					txs.Add(1)
				case wctx.Err() != nil:
					return
				case errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "40P01"):
				default:
					t.Errorf("writer: %v", err)
					return
				}
			}
		}()
	}
	start := time.Now()
	pgtest.Eventually(t, time.Minute, "writers run for a while", func() bool {
		return t.Failed() || time.Since(start) > 8*time.Second && txs.Load() > 500
	})
	wstop()
	wwg.Wait()
	t.Logf("%d writer transactions", txs.Load())
	p.caughtUp(t, time.Minute, "qk")
	awkCompare(t, connect(t, p.prov), connect(t, p.tgt), `public."Churn ""K"""`, "")
}

// TestDeferredKeyRefused: with a DEFERRABLE primary key, one statement can swap two keys
// (U a→b, U b→a through a transient duplicate), which no replay by key reproduces: the
// target would silently lose a row. skiff table add refuses such a table, naming it and the
// way out, and captures nothing.
func TestDeferredKeyRefused(t *testing.T) {
	t.Parallel()
	if pgtest.Shared(t, "").Install.Num < 90000 {
		t.Skip("deferrable unique constraints are 9.0+")
	}
	p := newPair(t, "", "", `CREATE TABLE swap (k text, v text, CONSTRAINT swap_pk PRIMARY KEY (k) DEFERRABLE INITIALLY DEFERRED);`)
	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "qs", "public.swap")
	require.Error(t, err)
	require.Contains(t, out, "swap") // the log line is JSON: the quoted name is escaped
	require.Contains(t, out, "DEFERRABLE")
	require.Contains(t, out, "--key")
	prov := connect(t, p.prov)
	var triggers int
	require.NoError(t, prov.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.swap'::regclass AND tgname LIKE '%skiff%'`).Scan(&triggers))
	require.Zero(t, triggers, "a refused table gets no capture trigger")
}
