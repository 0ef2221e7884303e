package tests

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// repairDDL: awkward names, a composite key, and values that must round-trip as literals
// (NULL and ”, bytea, arrays with quotes, backslashes and NULLs, timestamptz, floats).
const repairDDL = `
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Odd ""T""" ("Id" int PRIMARY KEY, "na me" text, b bytea, arr text[], ts timestamptz, f float8, n numeric);
INSERT INTO "My Schema"."Odd ""T""" SELECT g, 'v' || g, decode('00ff27', 'hex'), ARRAY['a', NULL, 'q"uo''te\'],
	'2020-01-02 03:04:05.123456+02', 0.1 + g, g / 3.0 FROM generate_series(1, 50) g;
CREATE TABLE pairs (k1 int, k2 text, v text, PRIMARY KEY (k1, k2));
INSERT INTO pairs SELECT g % 5, 'k ' || g, NULL FROM generate_series(1, 20) g;
`

const oddTable = `"My Schema"."Odd ""T"""`

// oddRows is oddTable for the row-by-row comparison: floats by their binary form (their text
// differs between 8.4 and 15).
const oddRows = `(SELECT "Id", "na me", b, arr, ts, float8send(f) AS f, n FROM ` + oddTable + `)`

// subscriptionRow is the target's record of the subscription's position.
func subscriptionRow(t testing.TB, c *pgx.Conn) string {
	var s string
	require.NoError(t, c.QueryRow(context.Background(), `SELECT ROW(tick, last_batch_id, batches_applied, events_applied)::text
		FROM skiff.subscription WHERE queue = 'q'`).Scan(&s))
	return s
}

// TestRepair: rows changed, deleted and added by hand on the target are listed by the dry
// run (the SQL checked, nothing changed), fixed by --apply in one transaction with the
// worker's position untouched; compare is equal afterwards, and replication goes on.
func TestRepair(t *testing.T) {
	t.Parallel()
	for _, vp := range repairPairs() {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			testRepair(t, vp[0], vp[1])
		})
	}
}

// repairPairs: 15 -> 15, and the oldest installed provider (8.4 with SKIFF_PG_BINDIRS) -> 15.
func repairPairs() [][2]string {
	out := [][2]string{{"15", "15"}}
	if majors := pgtest.Majors(); len(majors) > 0 && majors[len(majors)-1] != "15" { // newest first
		out = append(out, [2]string{majors[len(majors)-1], "15"})
	}
	return out
}

func testRepair(t *testing.T, provVersion, tgtVersion string) {
	p := newPair(t, provVersion, tgtVersion, repairDDL)
	p.capture(t, "q", oddTable, "public.pairs")
	p.subscribe(t, "q")
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, ctx, &wg, "q")
	var xid int64
	require.NoError(t, pgx.BeginFunc(context.Background(), prov, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `UPDATE `+oddTable+` SET "na me" = NULL WHERE "Id" = 5; UPDATE pairs SET v = 'p' WHERE k2 = 'k 3'`); err != nil {
			return err
		}
		return tx.QueryRow(context.Background(), `SELECT txid_current()`).Scan(&xid)
	}))
	tickPast(t, p, prov, tgt, xid)
	cancel()
	wg.Wait()

	exec1(t, tgt, `UPDATE `+oddTable+` SET "na me" = '', arr = '{}', f = 0 WHERE "Id" = 3;
		UPDATE `+oddTable+` SET "na me" = '' WHERE "Id" = 5;
		DELETE FROM `+oddTable+` WHERE "Id" = 6;
		INSERT INTO `+oddTable+` VALUES (1000, 'extra', NULL, NULL, NULL, NULL, NULL);
		UPDATE pairs SET v = 'x' WHERE k1 = 1 AND k2 = 'k 1';
		DELETE FROM pairs WHERE k2 = 'k 2'`)
	before := subscriptionRow(t, tgt)
	dumpT := dumpTable(t, tgt, oddTable)

	args := []string{"repair", "--provider", p.prov, "--target", p.tgt, "--queue", "q"}
	out, err := skiff(t, args...)
	require.Error(t, err, out) // exit 1: rows differ
	bytea := `E'\\x00ff27'::bytea`
	if pg.ServerVersion(prov) < 90000 {
		bytea = `E'\\000\\377'''::bytea` // escape format only before 9.0
	}
	for _, want := range []string{
		"dry run: nothing changed",
		"BEGIN;\nSET LOCAL session_replication_role = replica;\n",
		`-- "My Schema"."Odd ""T""": 4 rows to fix`,
		`DELETE FROM "My Schema"."Odd ""T""" WHERE ("Id" = '1000'::integer);`,
		`UPDATE "My Schema"."Odd ""T""" SET "na me" = 'v3'::text, "b" = ` + bytea + `, "arr" = E'{a,NULL,"q\\"uo''te\\\\"}'::text[], "ts" = '2020-01-02 01:04:05.123456+00'::timestamp with time zone, "f" = '3.1`,
		`WHERE ("Id" = '3'::integer);`,
		`UPDATE "My Schema"."Odd ""T""" SET "na me" = NULL, `,
		`WHERE ("Id" = '5'::integer);`,
		`INSERT INTO "My Schema"."Odd ""T""" ("Id", "na me", "b", "arr", "ts", "f", "n") VALUES ('6'::integer, 'v6'::text, ` + bytea + `,`,
		`-- "public"."pairs": 2 rows to fix`,
		`UPDATE "public"."pairs" SET "v" = NULL WHERE ("k1" = '1'::integer AND "k2" = 'k 1'::text);`,
		`INSERT INTO "public"."pairs" ("k1", "k2", "v") VALUES ('2'::integer, 'k 2'::text, NULL);`,
		"COMMIT;",
	} {
		require.Contains(t, out, want)
	}
	require.Equal(t, dumpT, dumpTable(t, tgt, oddTable), "a dry run changes nothing")

	out, err = skiff(t, append(args, "--apply")...)
	require.NoError(t, err, out)
	require.Contains(t, out, "applied")
	require.Equal(t, before, subscriptionRow(t, tgt), "the worker's position is untouched")
	p.compare(t, oddRows, "public.pairs")
	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)
	out, err = skiff(t, append(args, "--apply")...)
	require.NoError(t, err, out)
	require.Contains(t, out, `-- "My Schema"."Odd ""T""": equal`)

	// Replication goes on from where it was.
	ctx, cancel = context.WithCancel(context.Background())
	defer func() { cancel(); wg.Wait() }()
	ticker(t, ctx, &wg, p.prov, 50*time.Millisecond, "q")
	p.runWorker(t, ctx, &wg, "q")
	exec1(t, prov, `UPDATE `+oddTable+` SET "na me" = 'after' WHERE "Id" IN (3, 6);
		DELETE FROM `+oddTable+` WHERE "Id" = 7; INSERT INTO pairs VALUES (2, 'k 2b', 'new')`)
	p.caughtUp(t, time.Minute, "q")
	p.compare(t, oddRows, "public.pairs")
}

// tickPast waits until the worker has applied a tick that no transaction as old as xid was
// open at: repair counts a provider row as applied only when its writer is older than every
// transaction open at the worker's tick (a subtransaction's xid is not in a snapshot's list),
// and the ticker's or the worker's own provider transaction may be open at the first forced
// tick after xid.
func tickPast(t testing.TB, p *pair, prov, tgt *pgx.Conn, xid int64) {
	t.Helper()
	ctx := context.Background()
	pgtest.Eventually(t, time.Minute, "the worker's tick is past every transaction as old as the update", func() bool {
		p.caughtUp(t, time.Minute, "q")
		var tick int64
		require.NoError(t, tgt.QueryRow(ctx, `SELECT tick FROM skiff.subscription WHERE queue = 'q'`).Scan(&tick))
		snap, ok, err := queue.TickSnapshot(ctx, prov, "q", tick)
		require.NoError(t, err)
		require.True(t, ok, "tick %d", tick)
		xmin, err := strconv.ParseInt(strings.SplitN(snap, ":", 2)[0], 10, 64)
		require.NoError(t, err, snap)
		return xmin > xid
	})
}

// TestRepairRefusesTableNotInSync: a table still copying is refused, naming it and its state.
func TestRepairRefusesTableNotInSync(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", repairDDL)
	p.capture(t, "q", "public.pairs")
	p.subscribe(t, "q")
	exec1(t, connect(t, p.tgt), `UPDATE skiff.table_state SET state = 'copying'`)
	out, err := skiff(t, "repair", "--provider", p.prov, "--target", p.tgt, "--queue", "q", "--apply")
	require.Error(t, err, out)
	require.Contains(t, out, "repair works on tables in sync only")
	require.Contains(t, out, `pairs\" is copying`)
}

// TestRepairRace: rows written on the provider while repair runs. A row updated on the
// provider and applied by the worker between the first pass and the fix is not written with
// the older value; a row the provider wrote after the worker's position (its events not
// applied yet) is left to replication — inserting it would make the worker's INSERT fail.
func TestRepairRace(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", repairDDL)
	p.capture(t, "q", oddTable)
	p.subscribe(t, "q")
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	p.runWorker(t, ctx, &wg, "q") // no ticker: batches only where the test ticks
	p.caughtUp(t, time.Minute, "q")

	// Row 8 differs on the target; row 60 is new on the provider, not yet ticked.
	exec1(t, tgt, `UPDATE `+oddTable+` SET "na me" = 'hand' WHERE "Id" = 8`)
	exec1(t, prov, `INSERT INTO `+oddTable+` ("Id", "na me") VALUES (60, 'new')`)
	pcfg, err := pg.ParseConfig(p.prov, "test")
	require.NoError(t, err)
	tcfg, err := pg.ParseConfig(p.tgt, "test")
	require.NoError(t, err)
	odd := change.Table{Schema: "My Schema", Name: `Odd "T"`}
	rep, err := compare.Repair(ctx, compare.RepairConfig{
		Provider: pcfg, Target: tcfg, Pairs: []compare.Pair{{Source: odd, Dest: odd}},
		Subscription: target.Key{Queue: "q", Consumer: "c1"}, Apply: true,
		BeforeFix: func(ctx context.Context) error {
			// Row 8 changes on the provider and reaches the target before the fix.
			exec1(t, prov, `UPDATE `+oddTable+` SET "na me" = 'newer' WHERE "Id" = 8`)
			p.caughtUp(t, time.Minute, "q")
			return nil
		},
	})
	require.NoError(t, err)
	require.True(t, rep.Applied)
	r := rep.Results[0]
	require.NoError(t, r.Err)
	for _, f := range r.Fixes {
		require.NotContains(t, f.SQL, `'v8'`, "the older value of row 8")
	}
	var v string
	require.NoError(t, tgt.QueryRow(ctx, `SELECT "na me" FROM `+oddTable+` WHERE "Id" = 8`).Scan(&v))
	require.Equal(t, "newer", v)

	// Row 60 was applied by the caughtUp above; now one more row the worker has not seen.
	exec1(t, prov, `INSERT INTO `+oddTable+` ("Id", "na me") VALUES (61, 'newest')`)
	rep, err = compare.Repair(ctx, compare.RepairConfig{
		Provider: pcfg, Target: tcfg, Pairs: []compare.Pair{{Source: odd, Dest: odd}},
		Subscription: target.Key{Queue: "q", Consumer: "c1"}, Apply: true,
	})
	require.NoError(t, err)
	r = rep.Results[0]
	require.NoError(t, r.Err)
	require.Empty(t, r.Fixes)
	require.Len(t, r.Pending, 1)
	require.Equal(t, "(61)", r.Pending[0].Key)
	require.True(t, strings.Contains(r.Pending[0].Kind, "missing on target"))

	p.caughtUp(t, time.Minute, "q")
	p.compare(t, oddRows)
	out, err := skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "q")
	require.NoError(t, err, out)
}
