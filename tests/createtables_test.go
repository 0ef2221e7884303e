package tests

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// createProviderDDL: a table whose names need quoting, with an enum, a domain, an array, a
// serial key and an index; a table a columns handler reshapes; a table the target has.
const createProviderDDL = `
CREATE SCHEMA "App Data";
CREATE TYPE "App Data"."Status" AS ENUM ('new', 'it''s done');
CREATE DOMAIN "App Data".positive AS numeric(10,2) CONSTRAINT "is positive" CHECK (VALUE > 0);
CREATE TABLE "App Data"."Odd ""Order"" Table" ("Id" serial PRIMARY KEY, "Customer Name" text NOT NULL,
	status "App Data"."Status" NOT NULL DEFAULT 'new', amount "App Data".positive, tags text[], created timestamptz DEFAULT now());
CREATE INDEX "by name" ON "App Data"."Odd ""Order"" Table" ("Customer Name");
CREATE TABLE audit (id int PRIMARY KEY, secret text, v text, n int);
CREATE INDEX audit_v ON audit (v);
CREATE INDEX audit_n ON audit (n);
CREATE TABLE exists_already (id int PRIMARY KEY, v text);
INSERT INTO "App Data"."Odd ""Order"" Table" ("Customer Name", amount, tags) SELECT 'name ' || g, g, ARRAY['a', 'b c'] FROM generate_series(1, 500) g;
INSERT INTO audit SELECT g, 'pw' || g, 'v' || g, g FROM generate_series(1, 500) g;
INSERT INTO exists_already SELECT g, 'v' || g FROM generate_series(1, 50) g;
`

const oddOrders = `"App Data"."Odd ""Order"" Table"`

// TestSubscribeCreateTables: skiff subscribe --create-tables on a target that has none of the
// tables but one: it creates the schema, the enum, the domain, the serial's sequence, the
// table with quoted names, and a table renamed into another schema in the shape the columns
// handler gives it (an excluded column left out, a renamed one renamed; the index over the
// renamed column left out with a warning); the table the target has is left alone. Then the
// copy under writes, the worker, skiff compare, a row-by-row comparison, and the indexes made
// after the copy.
func TestSubscribeCreateTables(t *testing.T) {
	t.Parallel()
	forEachPair(t, testSubscribeCreateTables)
}

func testSubscribeCreateTables(t *testing.T, provVersion, tgtVersion string) {
	p := newPair(t, provVersion, tgtVersion, `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, createProviderDDL)
	exec1(t, tgt, `CREATE TABLE exists_already (id int PRIMARY KEY, v text, extra int DEFAULT 3)`)
	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "qc", oddOrders, "public.audit", "public.exists_already")
	require.NoError(t, err, out)

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "qc")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	stmtWriter(t, wctx, &wwg, p.prov, 1, &txs, func(rng *rand.Rand) (string, []any) {
		switch r := rng.IntN(10); {
		case r < 3:
			return `INSERT INTO ` + oddOrders + ` ("Customer Name", amount, status) VALUES ($1, 1 + $2, 'it''s done')`, []any{randText(rng), rng.IntN(100)}
		case r < 5:
			return `UPDATE ` + oddOrders + ` SET tags = tags || $2::text WHERE "Id" = $1`, []any{1 + rng.IntN(500), randText(rng)}
		case r < 6:
			return `DELETE FROM ` + oddOrders + ` WHERE "Id" = $1`, []any{1 + rng.IntN(500)}
		case r < 8:
			return `UPDATE audit SET v = $2, secret = 'new', n = n + 1 WHERE id = $1`, []any{1 + rng.IntN(500), randText(rng)}
		default:
			return `UPDATE exists_already SET v = $2 WHERE id = $1`, []any{1 + rng.IntN(50), randText(rng)}
		}
	})

	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qc", "--consumer", "c1", "--create-tables",
		"--table", oddOrders, "--table", "public.audit:archive.audit", "--table", "exists_already",
		"--handler", "public.audit=columns", "--handler-config", `public.audit={"exclude":["secret"],"rename":{"v":"value"}}`)
	require.NoError(t, err, out)
	for _, want := range []string{`created schema "App Data"`, `created schema "archive"`, `created type "App Data"."Status"`,
		`created type "App Data"."positive"`, `created sequence "App Data"."Odd ""Order"" Table_Id_seq"`,
		`created table "App Data"."Odd ""Order"" Table"`, `created table "archive"."audit"`,
		`index \"audit_v\" is not created: its handler renames or leaves out column \"v\"`} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, `created table "public"."exists_already"`)

	w := p.startWorkerProc(t, "qc")
	defer func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		_ = w.cmd.Wait()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", w.out.String())
		}
	}()
	p.inSync(t, 2*time.Minute, "qc")
	pgtest.Eventually(t, time.Minute, "writers make changes", func() bool { return txs.Load() > 50 })
	wstop()
	wwg.Wait()
	p.caughtUp(t, 2*time.Minute, "qc")

	var code int
	pgtest.Eventually(t, time.Minute, "skiff compare exits 0 (sequences move every 2 s)", func() bool {
		code, out = compareExit(t, p, "qc")
		return code == 0
	})
	require.Contains(t, out, `sequence "App Data"."Odd ""Order"" Table_Id_seq"`)
	p.compare(t, oddOrders)
	requireSameRows(t, prov, tgt, `SELECT id, v, n FROM audit`, `SELECT id, value, n FROM archive.audit`)
	requireSameRows(t, prov, tgt, `SELECT id, v FROM exists_already`, `SELECT id, v FROM exists_already`)

	rows, err := tgt.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
		WHERE i.indrelid IN ('"App Data"."Odd ""Order"" Table"'::regclass, 'archive.audit'::regclass, 'exists_already'::regclass) ORDER BY 1`)
	require.NoError(t, err)
	indexes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"Odd \"Order\" Table_pkey", "audit_n", "audit_pkey", "by name", "exists_already_pkey"}, indexes)
	var extra int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM exists_already WHERE extra = 3`).Scan(&extra))
	require.Equal(t, 50, extra, "the table the target had is left as it was")
	_, err = tgt.Exec(ctx, `INSERT INTO `+oddOrders+` ("Customer Name", amount) VALUES ('after', -1)`)
	require.ErrorContains(t, err, "is positive", "the domain keeps its CHECK on the target")
	exec1(t, tgt, `INSERT INTO `+oddOrders+` ("Customer Name", amount) VALUES ('after', 1)`)
}

// TestSubscribeCreateTablesRefuses: a column of a type the target lacks that skiff does not
// create (a composite) makes subscribe --create-tables fail naming the table, the column and
// the type, before anything is created or registered.
func TestSubscribeCreateTablesRefuses(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `SELECT 1`)
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	exec1(t, prov, `CREATE TYPE pair AS (a int, b int); CREATE TYPE mood AS ENUM ('ok');
		CREATE TABLE fine (id int PRIMARY KEY, m mood); CREATE TABLE "Pairs" (id int PRIMARY KEY, "the pair" pair)`)
	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "qr", "fine", `"Pairs"`)
	require.NoError(t, err, out)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "qr", "--create-tables")
	require.Error(t, err, out)
	require.Contains(t, out, `table \"public\".\"Pairs\": column \"the pair\" has type public.pair (a composite type of the provider) that the target lacks`) // JSON log
	var n int
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE relname IN ('fine', 'Pairs')`).Scan(&n))
	require.Zero(t, n, "nothing created")
	require.NoError(t, tgt.QueryRow(context.Background(), `SELECT count(*) FROM pg_type WHERE typname = 'mood'`).Scan(&n))
	require.Zero(t, n, "nothing created")
	require.NoError(t, prov.QueryRow(context.Background(), `SELECT count(*) FROM skiff.get_consumer_info()`).Scan(&n))
	require.Zero(t, n, "no consumer registered")
}
