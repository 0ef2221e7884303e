package skiffcli

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestParseTableSpec(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]tableSpec{
		"t":                                  {Source: change.Table{Name: "t"}},
		"App.T":                              {Source: change.Table{Schema: "app", Name: "t"}},
		`"My S"."a.b"`:                       {Source: change.Table{Schema: "My S", Name: "a.b"}},
		`s."x""y"`:                           {Source: change.Table{Schema: "s", Name: `x"y`}},
		`"a:b":Other.T`:                      {Source: change.Table{Name: "a:b"}, Dest: change.Table{Schema: "other", Name: "t"}, HasDest: true},
		`t:"New Name"`:                       {Source: change.Table{Name: "t"}, Dest: change.Table{Name: "New Name"}, HasDest: true},
		`s.t:"Arch".`:                        {Source: change.Table{Schema: "s", Name: "t"}, Dest: change.Table{Schema: "Arch"}, HasDest: true, DestSchemaOnly: true},
		`"Camel.Schema"."a,b":"Other"."c.d"`: {Source: change.Table{Schema: "Camel.Schema", Name: "a,b"}, Dest: change.Table{Schema: "Other", Name: "c.d"}, HasDest: true},
	} {
		got, err := parseTableSpec(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "public.Small Table", "a:", "a:.", "a:b.c.", "a.b.c"} {
		_, err := parseTableSpec(in)
		require.Error(t, err, in)
	}
}

// TestCompareCommand runs `skiff compare` on equal tables (exit 0), then on a row changed by
// hand on the target (exit 1, the table named; --rows names the key).
func TestCompareCommand(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY, v text);
			INSERT INTO "Mixed Case" SELECT g, 'v' || g FROM generate_series(1, 100) g;
			CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1)`)
		require.NoError(t, err)
	}
	args := []string{"compare", "--provider", p, "--target", tg, "--queue", "q", "--log-format", "json",
		"--table", `public."Mixed Case"`, "--table", "other"}
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(args, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "equal (100 rows)")

	_, err := pgtest.Connect(t, tg).Exec(ctx, `UPDATE "Mixed Case" SET v = 'changed' WHERE "Id" = 42`)
	require.NoError(t, err)
	out.Reset()
	errOut.Reset()
	require.Equal(t, 1, run(args, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), `"public"."Mixed Case"`)
	require.Contains(t, out.String(), "DIFFERENT")
	require.Contains(t, errOut.String(), "tables or sequences differ")

	out.Reset()
	require.Equal(t, 1, run(append(args, "--rows"), &out, &errOut))
	require.Contains(t, out.String(), "key (42): different")
}

// TestCompareQueueTables: without a subscription on the target, compare takes every table the
// queue captures, under its own name.
func TestCompareQueueTables(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE SCHEMA "S 1"; CREATE TABLE "S 1"."T 1" (id int PRIMARY KEY, v text);
			INSERT INTO "S 1"."T 1" VALUES (1, 'a'), (2, NULL); CREATE SEQUENCE "S 1"."Seq 1"`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, p).Exec(ctx, `SELECT setval('"S 1"."Seq 1"', 50)`)
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"init", "provider", "--db", p}, &out, &errOut), errOut.String())
	require.Equal(t, 0, run([]string{"table", "add", "--db", p, "--queue", "q", `"S 1"."T 1"`, `"S 1"."Seq 1"`}, &out, &errOut), errOut.String())
	out.Reset()
	// The target's sequence is behind the provider's: not ready.
	require.Equal(t, 1, run([]string{"compare", "--provider", p, "--target", tg, "--queue", "q"}, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), `"S 1"."T 1"`)
	require.Contains(t, out.String(), "equal (2 rows)")
	require.Contains(t, out.String(), `sequence "S 1"."Seq 1"`)
	require.Contains(t, out.String(), "BEHIND (provider 50, target 1 unused)")

	_, err = pgtest.Connect(t, tg).Exec(ctx, `SELECT setval('"S 1"."Seq 1"', 60)`)
	require.NoError(t, err)
	out.Reset()
	require.Equal(t, 0, run([]string{"compare", "--provider", p, "--target", tg, "--queue", "q"}, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "in order (provider 50, target 60)")
}

// TestCompareOneSubscription: compare looks at one subscription of the queue — the target's
// (or --consumer's) — not at every subscription of it. Queue q captures a, b and c; target A
// subscribes a (its default consumer) and, as consumer c2, c; target B subscribes b. Both
// targets hold all three tables (a schema dump), copied only where subscribed. Each compare
// names only its subscription's tables and sequences and finds them equal, row by row.
func TestCompareOneSubscription(t *testing.T) {
	t.Parallel()
	p, pconn := initProvider(t)
	ta, aconn := initTargetOn(t, "")
	tb, bconn := initTargetOn(t, "")
	ddl := []string{`CREATE TABLE a (id serial PRIMARY KEY, v text)`, `CREATE TABLE b (id serial PRIMARY KEY, v text)`,
		`CREATE TABLE c (id serial PRIMARY KEY, v text)`}
	execAll(t, pconn, ddl...)
	execAll(t, aconn, ddl...)
	execAll(t, bconn, ddl...)
	execAll(t, pconn, `INSERT INTO a (v) SELECT 'a' || g FROM generate_series(1, 30) g`,
		`INSERT INTO b (v) SELECT 'b' || g FROM generate_series(1, 20) g`,
		`INSERT INTO c (v) SELECT 'c' || g FROM generate_series(1, 10) g`)
	code, _, stderr := skiff(t, "table", "add", "--db", p, "--queue", "q", "a", "b", "c")
	require.Zero(t, code, stderr)
	for _, sub := range [][]string{{ta, "--table", "a"}, {tb, "--table", "b"}, {ta, "--table", "c", "--consumer", "c2"}} {
		code, _, stderr = skiff(t, append([]string{"subscribe", "--provider", p, "--queue", "q", "--target"}, sub...)...)
		require.Zero(t, code, stderr)
	}
	// The worker's table manager moves the sequences of the copied tables forward; as it would:
	execAll(t, aconn, `SELECT setval('a_id_seq', 30)`, `SELECT setval('c_id_seq', 10)`)
	execAll(t, bconn, `SELECT setval('b_id_seq', 20)`)

	cmp := func(target string, extra ...string) (int, string) {
		t.Helper()
		code, stdout, stderr := skiff(t, append([]string{"compare", "--provider", p, "--target", target, "--queue", "q",
			"--rows", "--log-format", "json"}, extra...)...)
		return code, stdout + stderr
	}
	only := func(out string, table string, rows int) {
		t.Helper()
		require.Regexp(t, `"public"."`+table+`" +equal \(`+strconv.Itoa(rows)+` rows\)`, out)
		require.Regexp(t, `sequence "public"."`+table+`_id_seq" +in order`, out)
		for _, other := range []string{"a", "b", "c"} {
			if other != table {
				require.NotContains(t, out, `"public"."`+other+`"`, "table %s is another subscription's", other)
				require.NotContains(t, out, other+"_id_seq", "sequence of table %s is another subscription's", other)
			}
		}
	}
	code, out := cmp(ta)
	require.Zero(t, code, out)
	only(out, "a", 30)
	code, out = cmp(ta, "--consumer", "c2")
	require.Zero(t, code, out)
	only(out, "c", 10)
	code, out = cmp(tb)
	require.Zero(t, code, out)
	only(out, "b", 20)

	code, out = cmp(tb, "--consumer", "nobody")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "nobody")
}

// TestCompareInheritanceRowsOnce: each captured table is read once. A table captured on its
// own (without its inheritance children, which came later and are captured on their own) is
// compared with ONLY: its children's rows are not counted again under it. A table captured
// with its children is compared whole, against a target that holds them all in one table.
func TestCompareInheritanceRowsOnce(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"init", "provider", "--db", p}, &out, &errOut), errOut.String())
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE alone (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	require.Equal(t, 0, run([]string{"table", "add", "--db", p, "--queue", "q", "alone"}, &out, &errOut), errOut.String())
	_, err = pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE alone_kid (PRIMARY KEY (id)) INHERITS (alone);
		INSERT INTO alone VALUES (1, 'a'), (2, 'b'); INSERT INTO alone_kid VALUES (10, 'k'), (11, 'k');
		CREATE TABLE whole (id int PRIMARY KEY, v text); CREATE TABLE whole_kid (extra int) INHERITS (whole);
		INSERT INTO whole VALUES (1, 'a'); INSERT INTO whole_kid VALUES (10, 'k', 7)`)
	require.NoError(t, err)
	require.Equal(t, 0, run([]string{"table", "add", "--db", p, "--queue", "q", "alone_kid"}, &out, &errOut), errOut.String())
	require.Equal(t, 0, run([]string{"table", "add", "--db", p, "--queue", "q", "--key-not-unique", "whole"}, &out, &errOut), errOut.String())
	_, err = pgtest.Connect(t, tg).Exec(ctx, `CREATE TABLE alone (id int PRIMARY KEY, v text); CREATE TABLE alone_kid (id int PRIMARY KEY, v text);
		INSERT INTO alone VALUES (1, 'a'), (2, 'b'); INSERT INTO alone_kid VALUES (10, 'k'), (11, 'k');
		CREATE TABLE whole (id int PRIMARY KEY, v text); INSERT INTO whole VALUES (1, 'a'), (10, 'k')`)
	require.NoError(t, err)
	out.Reset()
	require.Equal(t, 0, run([]string{"compare", "--provider", p, "--target", tg, "--queue", "q"}, &out, &errOut), out.String()+errOut.String())
	require.Regexp(t, `"public"."alone"\s+equal \(2 rows\)`, out.String())
	require.Regexp(t, `"public"."alone_kid"\s+equal \(2 rows\)`, out.String())
	require.Regexp(t, `"public"."whole"\s+equal \(2 rows\)`, out.String())
}
