package compare_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// awkward is a table with names and values that trip naive text handling.
const awkward = `
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order Lines" (
	"Id" int PRIMARY KEY,
	"Note Text" text,
	f8 float8,
	f4 real,
	b bytea,
	ts timestamptz,
	iv interval,
	n numeric(20,6),
	arr int[]
);
INSERT INTO "My Schema"."Order Lines" VALUES
	(1, NULL, 0.1, 0.1, decode('00ff', 'hex'), '2024-01-02 03:04:05.123456+02', '1 day 02:03:04', 1.5, '{1,2,NULL}'),
	(2, '', 1e300, 3.4e38, '', '1999-12-31 23:59:59+00', '-1 mons', -0.000001, '{}'),
	(3, 'ünïcødé ✓ "quoted", (parens)', 'NaN', '-Infinity', NULL, NULL, NULL, NULL, NULL),
	(4, 'line
break', 2.0/3.0, 1.0/3.0, decode('5c', 'hex'), 'infinity', '00:00:00.000001', 123456789.123456, '{-1}');
CREATE TABLE plain (k text PRIMARY KEY, v int);
INSERT INTO plain SELECT 'key ' || g, g FROM generate_series(1, 500) g;
`

var (
	orderLines = change.Table{Schema: "My Schema", Name: "Order Lines"}
	plain      = change.Table{Schema: "public", Name: "plain"}
)

func setup(t *testing.T, providerVersion, targetVersion string) (string, string) {
	t.Helper()
	p := pgtest.Shared(t, providerVersion).NewDB(t)
	tg := pgtest.Shared(t, targetVersion).NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, awkward)
		require.NoError(t, err)
	}
	return p, tg
}

func run(t *testing.T, p, tg string, rows bool, pairs ...compare.Pair) []compare.Result {
	t.Helper()
	pc, err := pg.ParseConfig(p, "test")
	require.NoError(t, err)
	tc, err := pg.ParseConfig(tg, "test")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	chunk := int64(2)
	if len(pairs) == 1 && os.Getenv("SKIFF_COMPARE_BENCH") != "" {
		chunk = 0 // the default
	}
	res, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: pairs, Rows: rows, ChunkKeys: chunk})
	require.NoError(t, err)
	return res
}

func pair(t change.Table) compare.Pair { return compare.Pair{Source: t, Dest: t} }

func TestEqualAndChanged(t *testing.T) {
	t.Parallel()
	p, tg := setup(t, "", "")
	res := run(t, p, tg, false, pair(orderLines), pair(plain))
	for _, r := range res {
		require.NoError(t, r.Err, r.Pair.String())
		require.True(t, r.Equal, "%s: %+v", r.Pair, r)
	}
	require.EqualValues(t, 4, res[0].Provider.Rows)
	require.EqualValues(t, 500, res[1].Provider.Rows)

	// NULL → '' on the target: same count, different rows.
	_, err := pgtest.Connect(t, tg).Exec(context.Background(), `UPDATE "My Schema"."Order Lines" SET "Note Text" = '' WHERE "Id" = 1`)
	require.NoError(t, err)
	res = run(t, p, tg, true, pair(orderLines), pair(plain))
	require.False(t, res[0].Equal)
	require.True(t, res[1].Equal)
	require.Equal(t, []compare.RowDiff{{Key: "(1)", Kind: "different", Values: []string{"1"}}}, res[0].Diffs)
}

func TestRowDiffKinds(t *testing.T) {
	t.Parallel()
	p, tg := setup(t, "", "")
	ctx := context.Background()
	_, err := pgtest.Connect(t, tg).Exec(ctx, `
		DELETE FROM plain WHERE k = 'key 7';
		INSERT INTO plain VALUES ('key 77b', 1), ('a b "c"', 2);
		UPDATE plain SET v = NULL WHERE k = 'key 300';
		UPDATE "My Schema"."Order Lines" SET f8 = f8 * (1 + 1e-15) WHERE "Id" = 4;`)
	require.NoError(t, err)
	res := run(t, p, tg, true, pair(plain), pair(orderLines))
	require.False(t, res[0].Equal)
	require.ElementsMatch(t, []compare.RowDiff{
		{Key: "(\"key 7\")", Kind: "missing on target", Values: []string{"key 7"}},
		{Key: "(\"key 77b\")", Kind: "missing on provider", Values: []string{"key 77b"}},
		{Key: `("a b ""c""")`, Kind: "missing on provider", Values: []string{`a b "c"`}},
		{Key: "(\"key 300\")", Kind: "different", Values: []string{"key 300"}},
	}, res[0].Diffs)
	// A float that differs in its last bit is seen.
	require.False(t, res[1].Equal)
	require.Equal(t, []compare.RowDiff{{Key: "(4)", Kind: "different", Values: []string{"4"}}}, res[1].Diffs)
}

// TestAcrossVersions compares a PostgreSQL 10 provider with a 15 target: their float text forms
// differ (shortest-exact digits came in 12), the checksums must not.
func TestAcrossVersions(t *testing.T) {
	t.Parallel()
	p, tg := setup(t, "10", "15")
	res := run(t, p, tg, true, pair(orderLines), pair(plain))
	for _, r := range res {
		require.NoError(t, r.Err)
		require.True(t, r.Equal, "%s: %+v", r.Pair, r)
	}
}

func TestRenamedAndMissing(t *testing.T) {
	t.Parallel()
	p, tg := setup(t, "", "")
	ctx := context.Background()
	_, err := pgtest.Connect(t, tg).Exec(ctx, `ALTER TABLE plain RENAME TO "Plain Renamed"; ALTER TABLE "Plain Renamed" ADD COLUMN extra int`)
	require.NoError(t, err)
	res := run(t, p, tg, false,
		compare.Pair{Source: plain, Dest: change.Table{Schema: "public", Name: "Plain Renamed"}},
		pair(change.Table{Schema: "public", Name: "nope"}))
	require.NoError(t, res[0].Err)
	require.True(t, res[0].Equal)
	require.Equal(t, []string{"extra"}, res[0].Skipped)
	require.ErrorIs(t, res[1].Err, compare.ErrNoTable)
}

// TestSparseKeys: keys at the ends of bigint take at most 1000 chunks, without overflow.
func TestSparseKeys(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE sparse (id bigint PRIMARY KEY, v text);
			INSERT INTO sparse VALUES (-9223372036854775808, 'min'), (0, 'zero'), (9223372036854775807, 'max')`)
		require.NoError(t, err)
	}
	sparse := change.Table{Schema: "public", Name: "sparse"}
	res := run(t, p, tg, false, pair(sparse))
	require.NoError(t, res[0].Err)
	require.True(t, res[0].Equal)
	require.EqualValues(t, 3, res[0].Target.Rows)
	_, err := pgtest.Connect(t, tg).Exec(ctx, `UPDATE sparse SET v = 'MAX' WHERE id = 9223372036854775807`)
	require.NoError(t, err)
	res = run(t, p, tg, true, pair(sparse))
	require.False(t, res[0].Equal)
	require.Equal(t, []compare.RowDiff{{Key: "(9223372036854775807)", Kind: "different", Values: []string{"9223372036854775807"}}}, res[0].Diffs)
}
