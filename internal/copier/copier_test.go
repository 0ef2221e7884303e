package copier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// auditDDL makes the provider table and a trigger that logs every change with its txid: a
// stand-in for the queue, so that the copy and the catch-up filter are tested on their own.
const auditDDL = `
CREATE TABLE "Big Table" (id int PRIMARY KEY, v int NOT NULL, "Pad" text, f float8);
CREATE TABLE audit (seq bigserial PRIMARY KEY, txid bigint NOT NULL DEFAULT txid_current(), op "char" NOT NULL, id int NOT NULL, v int, pad text, f float8);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		INSERT INTO audit (op, id) VALUES ('D', OLD.id);
		RETURN OLD;
	END IF;
	INSERT INTO audit (op, id, v, pad, f) VALUES (substr(TG_OP, 1, 1), NEW.id, NEW.v, NEW."Pad", NEW.f);
	RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON "Big Table" FOR EACH ROW EXECUTE PROCEDURE audit();
`

func copyRows(t *testing.T) int {
	if s := os.Getenv("SKIFF_COPY_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return n
	}
	if testing.Short() {
		return 20_000
	}
	return 200_000
}

func configs(t *testing.T, p, tg string) (*pgx.ConnConfig, *pgx.ConnConfig) {
	pc, err := pg.ParseConfig(p, "copier-test")
	require.NoError(t, err)
	tc, err := pg.ParseConfig(tg, "copier-test")
	require.NoError(t, err)
	return pc, tc
}

// TestCopyUnderWrites copies a large table while writers update, delete and insert rows,
// then replays the changes the copy's snapshot does not see (the catch-up filter) and checks
// that provider and target are equal.
func TestCopyUnderWrites(t *testing.T) {
	t.Parallel()
	copyUnderWrites(t, "", 0)
}

// TestSplitCopyUnderWrites is TestCopyUnderWrites with the table split into key ranges
// (Config.SplitRows) copied by two jobs at once under the copy's exported snapshot, on the
// default version and on 10; a provider before 9.2 (SKIFF_PG_VERSION=8.4) copies it in one
// stream.
func TestSplitCopyUnderWrites(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "10"} {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			copyUnderWrites(t, v, int64(copyRows(t)/8))
		})
	}
}

// copyUnderWrites copies "Big Table" on servers of version (provider and target) while writers
// change it, split into ranges of about split rows (0: one stream), and checks the result.
func copyUnderWrites(t *testing.T, version string, split int64) {
	n := copyRows(t)
	p := pgtest.Shared(t, version).NewDB(t)
	tg := pgtest.Shared(t, version).NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pconn := pgtest.Connect(t, p)
	pgtest.PLpgSQL(t, pconn)
	_, err := pconn.Exec(ctx, auditDDL)
	require.NoError(t, err)
	_, err = pconn.Exec(ctx, fmt.Sprintf(`ALTER TABLE "Big Table" DISABLE TRIGGER audit;
		INSERT INTO "Big Table" SELECT g, g, repeat('x', 50) || g, g / 7.0 FROM generate_series(1, %d) g;
		ALTER TABLE "Big Table" ENABLE TRIGGER audit; ANALYZE "Big Table"`, n))
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tg)
	_, err = tconn.Exec(ctx, `CREATE TABLE "Big Table" (id int PRIMARY KEY, v int NOT NULL, "Pad" text, f float8);
		INSERT INTO "Big Table" VALUES (-1, -1, 'stale row, truncated by the copy', NULL)`)
	require.NoError(t, err)

	// Writers: transactions of a few updates, deletes and inserts, until the copy is done.
	var stop atomic.Bool
	var writes atomic.Int64
	var wg sync.WaitGroup
	werr := make(chan error, 3)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := pgtest.Connect(t, p)
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; !stop.Load() || i < 20; i++ {
				id := 1 + r.IntN(n)
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `UPDATE "Big Table" SET v = v + 1, f = f * 1.1 WHERE id = $1`, id); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `DELETE FROM "Big Table" WHERE id = $1`, 1+r.IntN(n)); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `INSERT INTO "Big Table" VALUES ($1, 0, 'new', 0.1)`, n+1+w*1_000_000+i)
					return err
				})
				if err != nil {
					werr <- err
					return
				}
				writes.Add(1)
			}
		}()
	}

	pc, tc := configs(t, p, tg)
	var snapped, copied atomic.Int64
	var display bytes.Buffer
	res, err := copier.Copy(ctx, copier.Config{
		Provider: pc, Target: tc, Parallel: 2, Display: &display, CopyPoint: trigger.CopyPoint, SplitRows: split,
		Hooks: copier.Hooks{
			Point: func(ctx context.Context, _ *pgx.Conn, _ copier.Table, _ string) error {
				snapped.Add(1)
				return nil
			},
			Copied: func(ctx context.Context, tx pgx.Tx, _ copier.Table, _ string, rows, _ int64) error {
				copied.Add(rows)
				return nil
			},
		},
	}, []copier.Table{{Source: change.Table{Schema: "public", Name: "Big Table"}, Dest: change.Table{Schema: "public", Name: "Big Table"}}})
	require.NoError(t, err)
	stop.Store(true)
	wg.Wait()
	close(werr)
	require.NoError(t, <-werr)
	require.EqualValues(t, 1, snapped.Load())
	require.Equal(t, res[0].Rows, copied.Load())
	require.Contains(t, display.String(), "done")
	t.Logf("copied %d rows (%d bytes) in %s: %.0f rows/s, %.1f MB/s; %d writer transactions meanwhile",
		res[0].Rows, res[0].Bytes, res[0].Elapsed, float64(res[0].Rows)/res[0].Elapsed.Seconds(),
		float64(res[0].Bytes)/res[0].Elapsed.Seconds()/1e6, writes.Load())
	require.Greater(t, writes.Load(), int64(20))
	switch {
	case split == 0:
		require.Zero(t, res[0].Ranges)
	case pg.ServerVersion(pconn) < 90200:
		require.Zero(t, res[0].Ranges, "no exported snapshots before 9.2: one stream")
	default:
		// About n/split ranges (the estimate), two of them copied at once.
		require.GreaterOrEqual(t, res[0].Ranges, 4, "split into ranges")
		require.Equal(t, pg.ServerVersion(pconn) >= 140000, res[0].PageRanges, "ranges of pages from 14, of the key before")
		require.Equal(t, 2, res[0].Parallel, "ranges copied in parallel connections")
		require.Contains(t, display.String(), fmt.Sprintf("ranges %d/%d", res[0].Ranges, res[0].Ranges))
	}

	// Catch-up: replay the audit log in order, skipping what the copy's snapshot sees (the
	// worker's rule for a catching-up table).
	snap, err := change.ParseSnapshot(res[0].Point)
	require.NoError(t, err)
	rows, err := pconn.Query(ctx, `SELECT seq, txid, op, id, v, pad, f FROM audit ORDER BY seq`) // f in binary: exact
	require.NoError(t, err)
	type ev struct {
		seq, txid int64
		op        string
		id        int
		v         *int
		pad       *string
		f         *float64
	}
	var evs []ev
	for rows.Next() {
		var e ev
		require.NoError(t, rows.Scan(&e.seq, &e.txid, &e.op, &e.id, &e.v, &e.pad, &e.f))
		evs = append(evs, e)
	}
	require.NoError(t, rows.Err())
	tx, err := tconn.Begin(ctx)
	require.NoError(t, err)
	skipped, applied := 0, 0
	for _, e := range evs {
		if snap.Visible(e.txid) {
			skipped++
			continue
		}
		applied++
		switch e.op {
		case "I":
			_, err = tx.Exec(ctx, `INSERT INTO "Big Table" VALUES ($1, $2, $3, $4)`, e.id, e.v, e.pad, e.f)
		case "U":
			_, err = tx.Exec(ctx, `UPDATE "Big Table" SET v = $2, "Pad" = $3, f = $4 WHERE id = $1`, e.id, e.v, e.pad, e.f)
		case "D":
			_, err = tx.Exec(ctx, `DELETE FROM "Big Table" WHERE id = $1`, e.id)
		}
		require.NoError(t, err, "event %d", e.seq)
	}
	require.NoError(t, tx.Commit(ctx))
	t.Logf("catch-up: %d events skipped (in the copy), %d applied", skipped, applied)
	require.Positive(t, applied, "writers should have committed after the snapshot")

	cres, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc,
		Pairs: []compare.Pair{{Source: change.Table{Schema: "public", Name: "Big Table"}, Dest: change.Table{Schema: "public", Name: "Big Table"}}}})
	require.NoError(t, err)
	require.NoError(t, cres[0].Err)
	require.True(t, cres[0].Equal, "%+v", cres[0])
}

// TestCopyRollsBack: a copy that fails (here in the completion hook, as after a crash) leaves
// the destination as it was, and a second run copies it whole.
func TestCopyRollsBack(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE SCHEMA "S p"; CREATE TABLE "S p"."A b" ("K" int PRIMARY KEY, "v v" text, only_here int);
			CREATE TABLE two (k int PRIMARY KEY)`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, p).Exec(ctx, `ALTER TABLE "S p"."A b" DROP COLUMN only_here;
		INSERT INTO "S p"."A b" SELECT g, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN '' ELSE 'tab	nl
 ✓' END FROM generate_series(1, 1000) g;
		INSERT INTO two SELECT generate_series(1, 10)`)
	require.NoError(t, err)
	_, err = pgtest.Connect(t, tg).Exec(ctx, `INSERT INTO "S p"."A b" VALUES (0, 'old', 1)`)
	require.NoError(t, err)
	pc, tc := configs(t, p, tg)
	ab := copier.Table{Source: change.Table{Schema: "S p", Name: "A b"}, Dest: change.Table{Schema: "S p", Name: "A b"}}
	two := copier.Table{Source: change.Table{Schema: "public", Name: "two"}, Dest: change.Table{Schema: "public", Name: "two"}}
	boom := errors.New("boom")
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, CopyPoint: trigger.CopyPoint, Hooks: copier.Hooks{
		Copied: func(ctx context.Context, tx pgx.Tx, tb copier.Table, _ string, _, _ int64) error {
			if tb == ab {
				return boom
			}
			return nil
		}}}, []copier.Table{ab, two})
	require.ErrorIs(t, err, boom)
	require.ErrorIs(t, res[0].Err, boom)
	require.NoError(t, res[1].Err)
	var cnt int
	require.NoError(t, pgtest.Connect(t, tg).QueryRow(ctx, `SELECT count(*) FROM "S p"."A b" WHERE "K" = 0`).Scan(&cnt))
	require.Equal(t, 1, cnt, "the failed copy must leave the old rows")

	res, err = copier.Copy(ctx, copier.Config{Provider: pc, Target: tc}, []copier.Table{ab})
	require.NoError(t, err)
	require.EqualValues(t, 1000, res[0].Rows)
	cres, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: []compare.Pair{{Source: ab.Source, Dest: ab.Dest}, {Source: two.Source, Dest: two.Dest}}})
	require.NoError(t, err)
	for _, r := range cres {
		require.NoError(t, r.Err)
		require.True(t, r.Equal, fmt.Sprintf("%+v", r))
	}
}

// TestCopyAsReplica: the copy runs with session_replication_role = replica (the test role is a
// superuser), so a foreign key to a table not copied yet and a user trigger on the target do
// not get in the way.
func TestCopyAsReplica(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE child (id int PRIMARY KEY, parent int);
		INSERT INTO child SELECT g, g FROM generate_series(1, 100) g`)
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tg)
	pgtest.PLpgSQL(t, tconn)
	_, err = tconn.Exec(ctx, `CREATE TABLE parent (id int PRIMARY KEY);
		CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent);
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'user trigger fired'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON child FOR EACH ROW EXECUTE PROCEDURE refuse()`)
	require.NoError(t, err)
	pc, tc := configs(t, p, tg)
	child := change.Table{Schema: "public", Name: "child"}
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc}, []copier.Table{{Source: child, Dest: child}})
	require.NoError(t, err)
	require.EqualValues(t, 100, res[0].Rows)
}

// TestCopyErrors: a value the target refuses and a missing destination fail the table with a
// message naming the side and the statement, and leave the destination as it was; the copy of
// a large table does not hang when the target gives up early.
func TestCopyErrors(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t VALUES (0, 'not a number'); -- first in the heap: the target fails at once
		INSERT INTO t SELECT g, g::text FROM generate_series(1, 200000) g;
		CREATE TABLE gone (id int)`)
	require.NoError(t, err)
	_, err = pgtest.Connect(t, tg).Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (-1, -1)`)
	require.NoError(t, err)
	pc, tc := configs(t, p, tg)
	tt := change.Table{Schema: "public", Name: "t"}
	gone := change.Table{Schema: "public", Name: "gone"}
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc}, []copier.Table{{Source: tt, Dest: tt}, {Source: gone, Dest: gone}})
	require.Error(t, err)
	require.ErrorContains(t, res[0].Err, `target: COPY "public"."t" ("id", "v") FROM STDIN`)
	require.ErrorContains(t, res[0].Err, "invalid input syntax for") // "for integer" before 9.x
	require.ErrorContains(t, res[0].Err, `"not a number"`)
	require.ErrorContains(t, res[1].Err, `table "public"."gone" does not exist`)
	var n int
	require.NoError(t, pgtest.Connect(t, tg).QueryRow(ctx, `SELECT count(*) FROM t WHERE id = -1`).Scan(&n))
	require.Equal(t, 1, n)
}

// TestCopyInheritanceParent: an inheritance parent whose capture covers its children is copied
// with their rows (once each, in the parent's columns); one captured alone (Captured.Only) is
// copied without them, filtered or not; a partitioned table is
// copied whole.
func TestCopyInheritanceParent(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t, "")
	p := srv.NewDB(t)
	tg := srv.NewDB(t)
	ctx := context.Background()
	// The partitioned table m needs PARTITION BY (10+); before, the inheritance cases run alone.
	partitioned := srv.Install.Num >= 100000
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE h (id int PRIMARY KEY, v text);
		CREATE TABLE h_a (extra int) INHERITS (h);
		INSERT INTO h VALUES (1, 'parent'), (2, 'parent'); INSERT INTO h_a VALUES (10, 'child', 7), (11, 'child', 8)`)
	require.NoError(t, err)
	if partitioned {
		_, err = pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE m (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
			CREATE TABLE m1 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
			INSERT INTO m VALUES (1, '2024-01-02'), (2, '2024-01-03')`)
		require.NoError(t, err)
	} else {
		t.Logf("PostgreSQL %s has no PARTITION BY (10+): the partitioned table's copy is not tested", srv.Install.Major)
	}
	_, err = pgtest.Connect(t, tg).Exec(ctx, `CREATE TABLE whole (id int PRIMARY KEY, v text);
		CREATE TABLE alone (id int PRIMARY KEY, v text); CREATE TABLE filtered (id int PRIMARY KEY, v text);
		CREATE TABLE m (id int, d date, PRIMARY KEY (id, d))`)
	require.NoError(t, err)
	pc, tc := configs(t, p, tg)
	tb := func(n string) change.Table { return change.Table{Schema: "public", Name: n} }
	cfg := copier.Config{Provider: pc, Target: tc,
		Capture: func(_ context.Context, _ *pgx.Conn, t copier.Table) (copier.Captured, error) {
			switch t.Dest {
			case tb("alone"):
				return copier.Captured{Only: true}, nil
			case tb("filtered"):
				return copier.Captured{Only: true, Where: "id > 1"}, nil
			}
			return copier.Captured{}, nil
		},
	}
	tables := []copier.Table{{Source: tb("h"), Dest: tb("whole")}, {Source: tb("h"), Dest: tb("alone")}, {Source: tb("h"), Dest: tb("filtered")}}
	want := []int64{4, 2, 1}
	if partitioned {
		tables, want = append(tables, copier.Table{Source: tb("m"), Dest: tb("m")}), append(want, 2)
	}
	res, err := copier.Copy(ctx, cfg, tables)
	require.NoError(t, err)
	got := make([]int64, len(res))
	for i, r := range res {
		got[i] = r.Rows
	}
	require.EqualValues(t, want, got)
	rows, err := pgtest.Connect(t, tg).Query(ctx, `SELECT 'whole ' || id FROM whole UNION ALL SELECT 'alone ' || id FROM alone
		UNION ALL SELECT 'filtered ' || id FROM filtered ORDER BY 1`)
	require.NoError(t, err)
	copied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"alone 1", "alone 2", "filtered 2", "whole 1", "whole 10", "whole 11", "whole 2"}, copied)
}

// TestSplitFallsBack: a table whose primary key is not one integer column is copied in one
// stream however large, and the copy says why — before PostgreSQL 14, or when it is read with
// its inheritance children; from 14 a plain table is split into ranges of its pages whatever
// its key, and compares equal.
func TestSplitFallsBack(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE tk (k text PRIMARY KEY, v int);
			CREATE TABLE parent (k text PRIMARY KEY, v int); CREATE TABLE child (PRIMARY KEY (k)) INHERITS (parent)`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, p).Exec(ctx, `INSERT INTO tk SELECT 'k' || g, g FROM generate_series(1, 1000) g;
		INSERT INTO parent SELECT 'p' || g, g FROM generate_series(1, 500) g;
		INSERT INTO child SELECT 'c' || g, g FROM generate_series(1, 500) g; ANALYZE tk; ANALYZE parent; ANALYZE child`)
	require.NoError(t, err)
	pc, tc := configs(t, p, tg)
	version := pg.ServerVersion(pgtest.Connect(t, p))
	copyOne := func(name string) (copier.Result, string) {
		t.Helper()
		var logs bytes.Buffer
		tb := copier.Table{Source: change.Table{Schema: "public", Name: name}, Dest: change.Table{Schema: "public", Name: name}}
		res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, SplitRows: 100, Log: slog.New(slog.NewTextHandler(&logs, nil))}, []copier.Table{tb})
		require.NoError(t, err)
		require.EqualValues(t, 1000, res[0].Rows)
		return res[0], logs.String()
	}

	res, logs := copyOne("tk")
	switch {
	case version >= 140000:
		require.GreaterOrEqual(t, res.Ranges, 2, logs)
		require.True(t, res.PageRanges)
		require.Contains(t, logs, `msg="copy split into page ranges"`)
		rows, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Rows: true,
			Pairs: []compare.Pair{{Source: change.Table{Schema: "public", Name: "tk"}, Dest: change.Table{Schema: "public", Name: "tk"}}}})
		require.NoError(t, err)
		require.True(t, rows[0].Equal, "%+v", rows[0])
	case version < 90200:
		// Before 9.2 no snapshot can be exported: that reason comes before the key's.
		require.Zero(t, res.Ranges)
		require.Contains(t, logs, `cannot export snapshots (9.2+)`)
		return
	default:
		require.Zero(t, res.Ranges)
		require.Contains(t, logs, `msg="copy not split: one stream"`)
		require.Contains(t, logs, `reason="its primary key is not one integer column (any key splits into page ranges from PostgreSQL 14)"`)
	}

	// Read with its child: ctids are each table's own, so no page ranges either.
	res, logs = copyOne("parent")
	require.Zero(t, res.Ranges)
	require.Contains(t, logs, `msg="copy not split: one stream"`)
	require.Contains(t, logs, `reason="its primary key is not one integer column`)
}
