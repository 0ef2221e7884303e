package tabledef

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

func TestMain(m *testing.M) { pgtest.Main(m) }

// pairs are the provider → target versions the tests run: every installed version to the
// default one and back.
func pairs() [][2]string {
	def := pgtest.DefaultVersion()
	out := [][2]string{{def, def}}
	for _, v := range pgtest.Majors() {
		if v != def {
			out = append(out, [2]string{v, def}, [2]string{def, v})
		}
	}
	return out
}

func exec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	_, err := c.Exec(context.Background(), sql)
	require.NoError(t, err, sql)
}

// awkward is a table with names that need quoting, an enum, a domain over a domain, arrays,
// a serial column, a default calling another sequence, a unique expression index with a
// predicate and a multi-column index with DESC.
const awkward = `
CREATE SCHEMA "My Schema";
CREATE TYPE "My Schema"."Mood ""x""" AS ENUM ('sad', 'o''k', 'happy');
CREATE DOMAIN public.year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);
CREATE DOMAIN public."Later Year" AS public.year DEFAULT 2000 NOT NULL CONSTRAINT "late" CHECK (VALUE > 1999);
CREATE SEQUENCE "My Schema"."Odd Seq" INCREMENT BY 5 START WITH 100;
CREATE TABLE "My Schema"."Odd ""Table"" Name" (
	"Id" serial,
	"sp ace" text NOT NULL DEFAULT 'x y',
	"Mood" "My Schema"."Mood ""x""" DEFAULT 'happy',
	moods "My Schema"."Mood ""x"""[],
	yr public.year,
	later public."Later Year",
	other bigint DEFAULT nextval('"My Schema"."Odd Seq"'),
	created timestamptz DEFAULT now(),
	n numeric(10,2) NOT NULL,
	vc varchar(40),
	CONSTRAINT "Odd PK" PRIMARY KEY ("Id", n)
);
CREATE UNIQUE INDEX "Odd Index" ON "My Schema"."Odd ""Table"" Name" (lower("sp ace")) WHERE n > 0;
CREATE INDEX "vc n" ON "My Schema"."Odd ""Table"" Name" (vc, n DESC);
`

var oddTable = change.Table{Schema: "My Schema", Name: `Odd "Table" Name`}

// describe is what a table looks like to a user: columns (type, NOT NULL, default), primary
// key and indexes, as the catalog of the server holding it prints them.
func describe(t *testing.T, c *pgx.Conn, tbl change.Table) string {
	t.Helper()
	d, err := ReadTable(context.Background(), c, tbl)
	require.NoError(t, err)
	var b strings.Builder
	for _, col := range d.Columns {
		fmt.Fprintf(&b, "%s %s notnull=%v default=%s\n", col.Name, col.Type, col.NotNull, col.Default)
	}
	fmt.Fprintf(&b, "primary key %s %v\n", d.PrimaryKeyName, d.PrimaryKey)
	for _, ix := range d.Indexes {
		fmt.Fprintf(&b, "index %s unique=%v %s %v\n", ix.Name, ix.Unique, ix.Body, ix.Columns)
	}
	return b.String()
}

func identity(t *testing.T, c *pgx.Conn, src change.Table) Spec {
	t.Helper()
	d, err := ReadTable(context.Background(), c, src)
	require.NoError(t, err)
	s := Spec{Source: src, Dest: src}
	for _, col := range d.Columns {
		s.Columns = append(s.Columns, Mapped{Name: col.Name, Source: col.Name})
	}
	return s
}

// TestCreateTable creates a table with awkward names and user types on an empty target, with
// its sequences, enum and domains, then its indexes; the target's catalog then describes the
// table as the provider's does, its sequences continue the provider's, and rows of every
// column go in.
func TestCreateTable(t *testing.T) {
	t.Parallel()
	for _, vp := range pairs() {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			prov := pgtest.Connect(t, pgtest.Shared(t, vp[0]).NewDB(t))
			tgt := pgtest.Connect(t, pgtest.Shared(t, vp[1]).NewDB(t))
			exec(t, prov, awkward)
			seqs := []change.Table{{Schema: "My Schema", Name: `Odd "Table" Name_Id_seq`}, {Schema: "My Schema", Name: "Odd Seq"}}
			plan, err := NewPlan(ctx, prov, tgt, []Spec{identity(t, prov, oddTable)}, seqs)
			require.NoError(t, err)
			require.Empty(t, plan.Warnings)
			require.Equal(t, []string{"My Schema"}, plan.Schemas)
			require.Len(t, plan.Types, 3)
			require.ElementsMatch(t, seqs, plan.Sequences)
			require.NoError(t, plan.Create(ctx, tgt))
			require.NoError(t, plan.CreateIndexes(ctx, tgt))
			require.Equal(t, describe(t, prov, oddTable), describe(t, tgt, oddTable))

			// The sequences are the provider's: same parameters, owned by the same column.
			for _, s := range seqs {
				a, err := ReadSequence(ctx, prov, s)
				require.NoError(t, err)
				b, err := ReadSequence(ctx, tgt, s)
				require.NoError(t, err)
				if pg.ServerVersion(prov) < 100000 || pg.ServerVersion(tgt) < 100000 {
					a.Type, b.Type = "", ""
				}
				require.Equal(t, a, b)
			}
			// Defaults, domains and the enum work on the target.
			const row = `INSERT INTO "My Schema"."Odd ""Table"" Name" ("sp ace", moods, yr, n) VALUES ('a', '{sad,o''k}', 1999, 1)`
			exec(t, prov, row)
			exec(t, tgt, row)
			const cols = `"Id", "sp ace", "Mood", moods, yr, later, other, n`
			var a, b string
			q := `SELECT ROW(` + cols + `)::text FROM "My Schema"."Odd ""Table"" Name"`
			require.NoError(t, prov.QueryRow(ctx, q).Scan(&a))
			require.NoError(t, tgt.QueryRow(ctx, q).Scan(&b))
			require.Equal(t, a, b)
			_, err = tgt.Exec(ctx, `INSERT INTO "My Schema"."Odd ""Table"" Name" ("sp ace", yr, n) VALUES ('b', 1800, 2)`)
			require.ErrorContains(t, err, "year_check", "the domain's CHECK")
			_, err = tgt.Exec(ctx, `INSERT INTO "My Schema"."Odd ""Table"" Name" ("sp ace", n) VALUES ('a', 3)`)
			require.ErrorContains(t, err, "Odd Index", "the unique index")
		})
	}
}

// TestCreateTableShapes: a table in the shape a handler gives it (a column renamed, one left
// out: the index over the renamed column is left out with a warning, the primary key follows
// the rename), an identity column, a default calling a function the target lacks (left out,
// warned), and types the target lacks that are not enums or domains (an error naming table,
// column and type).
func TestCreateTableShapes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prov := pgtest.Connect(t, pgtest.Shared(t, "").NewDB(t))
	tgt := pgtest.Connect(t, pgtest.Shared(t, "").NewDB(t))
	if pg.ServerVersion(prov) < 100000 {
		t.Skip("identity columns need 10")
	}
	exec(t, prov, `CREATE FUNCTION public.pick() RETURNS int LANGUAGE sql AS 'SELECT 7';
		CREATE TABLE audit (id int GENERATED ALWAYS AS IDENTITY (START WITH 10), v text, secret text, p int DEFAULT public.pick(),
			CONSTRAINT audit_pk PRIMARY KEY (id));
		CREATE INDEX audit_v ON audit (v);
		CREATE INDEX audit_p ON audit (p);
		CREATE TYPE pair AS (a int, b int);
		CREATE TABLE pairs (id int PRIMARY KEY, "the pair" pair);
		CREATE TABLE "Ids" ("Id" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)`)
	audit := change.Table{Schema: "public", Name: "audit"}
	dest := change.Table{Schema: "archive", Name: "Audit"}
	spec := Spec{Source: audit, Dest: dest, Columns: []Mapped{{"ident", "id"}, {"value", "v"}, {"p", "p"}}}
	seq := change.Table{Schema: "public", Name: "audit_id_seq"}
	ids := change.Table{Schema: "public", Name: "Ids"}
	idSeq := change.Table{Schema: "public", Name: "Ids_Id_seq"}
	plan, err := NewPlan(ctx, prov, tgt, []Spec{spec, identity(t, prov, ids)}, []change.Table{seq, idSeq})
	require.NoError(t, err)
	require.Equal(t, []string{"archive"}, plan.Schemas)
	require.ElementsMatch(t, []change.Table{seq, idSeq}, plan.Sequences)
	require.Len(t, plan.Warnings, 2, plan.Warnings)
	require.Contains(t, plan.Warnings[0], `column "p" is created without its default public.pick(): the target has no function "public"."pick"`)
	require.Contains(t, plan.Warnings[1], `index "audit_v" is not created: its handler renames or leaves out column "v"`)
	require.NoError(t, plan.Create(ctx, tgt))
	require.NoError(t, plan.CreateIndexes(ctx, tgt))
	// The identity's sequence is in another schema than the table: a plain default draws from it.
	require.Equal(t, `ident integer notnull=true default=nextval('public.audit_id_seq'::regclass)
value text notnull=false default=
p integer notnull=false default=
primary key audit_pk [ident]
index audit_p unique=false USING btree (p) [p]
`, describe(t, tgt, dest))
	var id int
	require.NoError(t, tgt.QueryRow(ctx, `INSERT INTO archive."Audit" (value) VALUES ('x') RETURNING ident`).Scan(&id))
	require.Equal(t, 10, id, "the identity's sequence starts where the provider's did")
	exec(t, tgt, `INSERT INTO archive."Audit" (ident, value) VALUES (1, 'a value the applier writes')`)
	var ident string
	require.NoError(t, tgt.QueryRow(ctx, `SELECT attidentity::text FROM pg_attribute WHERE attrelid = 'public."Ids"'::regclass AND attname = 'Id'`).Scan(&ident))
	require.Equal(t, "d", ident, "an identity column, BY DEFAULT so that the applier may write its values")
	exec(t, tgt, `INSERT INTO "Ids" VALUES (DEFAULT), (5)`)

	pairs := change.Table{Schema: "public", Name: "pairs"}
	_, err = NewPlan(ctx, prov, tgt, []Spec{identity(t, prov, pairs), {Source: audit, Dest: change.Table{Schema: "public", Name: "a2"}, Columns: []Mapped{{"id", "id"}, {"computed", ""}}}}, nil)
	require.ErrorContains(t, err, `table "public"."pairs": column "the pair" has type public.pair (a composite type of the provider) that the target lacks`)
	require.ErrorContains(t, err, `table "public"."a2" (from provider table "public"."audit"): its handler computes column "computed"`)
	var n int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_class WHERE relname IN ('pairs', 'a2')`).Scan(&n))
	require.Zero(t, n)
}
