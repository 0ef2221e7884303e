package apply

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testTarget is a fresh target database with the skiff schema, one subscription and the given
// tables, and an Applier holding it.
type testTarget struct {
	url  string
	conn *pgx.Conn
	a    *Applier
	tick int64
	id   int64
}

func newTarget(t testing.TB, version, ddl string) *testTarget {
	t.Helper()
	ctx := context.Background()
	url := migratetest.NewDB(t, version, migrate.Target)
	conn, err := pg.Connect(ctx, url, "skiff-test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, ddl)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider) VALUES ('q', 'c', 'test')`)
	require.NoError(t, err)
	a, err := Open(ctx, conn, Config{Queue: "q", Consumer: "c", MaxPendingRows: 1000})
	require.NoError(t, err)
	return &testTarget{url: url, conn: conn, a: a}
}

// plpgsql makes PL/pgSQL available for a test's own trigger: a new database has it only from
// 9.0 (the target itself needs none).
func (tg *testTarget) plpgsql(t testing.TB) {
	t.Helper()
	if pg.ServerVersion(tg.conn) < 90000 {
		_, err := tg.conn.Exec(context.Background(), `CREATE LANGUAGE plpgsql`)
		require.NoError(t, err)
	}
}

// apply applies events as the next batch, streamed in chunks of 7.
func (tg *testTarget) apply(t testing.TB, evs []change.Event) error {
	t.Helper()
	tg.id++
	b := change.Batch{ID: tg.id, Queue: "q", Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
	err := tg.a.Apply(context.Background(), b, func(emit func([]change.Event) error) error {
		for i := 0; i < len(evs); i += 7 {
			chunk := make([]change.Event, min(7, len(evs)-i))
			copy(chunk, evs[i:])
			if err := emit(chunk); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		tg.tick++
	}
	return err
}

// dump returns the table as text rows ordered by the first column.
func dump(t *testing.T, conn *pgx.Conn, table string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT t::text FROM `+table+` t ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

var (
	cols = []string{"id", "v", "n"}
	key  = []string{"id"}
	tbl  = change.Table{Schema: "public", Name: "t"}
)

func v(s string) change.Value { return change.Text(s) }

func ins(id int64, vals ...change.Value) change.Event {
	return change.Event{ID: id, Op: change.Insert, Table: tbl, Columns: cols, Key: key, Values: vals}
}

func upd(id int64, oldKey []change.Value, vals ...change.Value) change.Event {
	return change.Event{ID: id, Op: change.Update, Table: tbl, Columns: cols, Key: key, Values: vals, OldKey: oldKey}
}

func del(id int64, vals ...change.Value) change.Event {
	return change.Event{ID: id, Op: change.Delete, Table: tbl, Columns: cols, Key: key, Values: vals}
}

const ddl = `CREATE TABLE t (id int PRIMARY KEY, v text, n bigint)`

func TestTrickyValuesRoundTrip(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	tricky := []change.Value{
		v("tab\there"), v("new\nline"), v("cr\rlf\r\n"), v(`back\slash`), v(`\N`), v(`\.`),
		v(""), change.Null, v("ünïcødé ✓ 日本"), v(strings.Repeat("large ", 50000)), v("quote ' \" ,{}()"),
	}
	var evs []change.Event
	for i, tv := range tricky {
		evs = append(evs, ins(int64(i+1), v(strconv.Itoa(i)), tv, change.Null))
	}
	require.NoError(t, tg.apply(t, evs))
	// The same values through the set-based update and the row-by-row paths.
	var updEvs []change.Event
	for i, tv := range tricky {
		updEvs = append(updEvs, upd(int64(100+i), nil, v(strconv.Itoa(i)), tv, v("1")))
	}
	require.NoError(t, tg.apply(t, updEvs))

	rows, err := tg.conn.Query(context.Background(), `SELECT v, n FROM t ORDER BY id`)
	require.NoError(t, err)
	i := 0
	for rows.Next() {
		var s *string
		var n *int64
		require.NoError(t, rows.Scan(&s, &n))
		if tricky[i].Valid {
			require.NotNil(t, s, "row %d", i)
			require.Equal(t, tricky[i].Text, *s, "row %d", i)
		} else {
			require.Nil(t, s, "row %d must stay NULL", i)
		}
		require.Equal(t, int64(1), *n)
		i++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(tricky), i)
}

// TestMergesAgainstModel applies random batches (inserts, updates, key-changing updates,
// deletes, rows inserted and deleted in one batch) and compares the target with a model, set
// based and row by row.
func TestMergesAgainstModel(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		for _, setBased := range []bool{true, false} {
			t.Run(fmt.Sprintf("pg%s/setBased=%v", ver, setBased), func(t *testing.T) {
				t.Parallel()
				tg := newTarget(t, ver, ddl)
				rng := rand.New(rand.NewPCG(1, uint64(len(ver))))
				model := map[int]string{}
				nextKey, evID := 1, int64(0)
				keys := func() []int {
					out := make([]int, 0, len(model))
					for k := range model {
						out = append(out, k)
					}
					sort.Ints(out)
					return out
				}
				for batch := 0; batch < 12; batch++ {
					var evs []change.Event
					for range 200 + rng.IntN(2000) {
						evID++
						ks := keys()
						val := fmt.Sprintf("v%d\t%d", evID, rng.IntN(5))
						row := func(k int) []change.Value {
							return []change.Value{v(strconv.Itoa(k)), v(val), v(strconv.FormatInt(evID, 10))}
						}
						switch op := rng.IntN(10); {
						case op < 4 || len(ks) == 0:
							k := nextKey
							nextKey++
							evs = append(evs, ins(evID, row(k)...))
							model[k] = row(k)[1].Text
						case op < 7:
							k := ks[rng.IntN(len(ks))]
							evs = append(evs, upd(evID, nil, row(k)...))
							model[k] = val
						case op < 8:
							k := ks[rng.IntN(len(ks))]
							nk := nextKey
							nextKey++
							evs = append(evs, upd(evID, []change.Value{v(strconv.Itoa(k))}, row(nk)...))
							delete(model, k)
							model[nk] = val
						default:
							k := ks[rng.IntN(len(ks))]
							evs = append(evs, del(evID, v(strconv.Itoa(k)), v("x"), change.Null))
							delete(model, k)
						}
					}
					if setBased {
						require.NoError(t, tg.apply(t, evs))
					} else {
						tg.id++
						b := change.Batch{ID: tg.id, Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
						require.NoError(t, tg.a.applyOnce(context.Background(), b, func(emit func([]change.Event) error) error { return emit(evs) }, false, false))
						tg.tick++
					}
				}
				var want []string
				for _, k := range keys() {
					want = append(want, fmt.Sprintf("%d|%s", k, model[k]))
				}
				rows, err := tg.conn.Query(context.Background(), `SELECT id::text || $$|$$ || v FROM t ORDER BY id`)
				require.NoError(t, err)
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				require.Equal(t, want, got)
			})
		}
	}
}

func TestKeyChangesAndCancels(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	require.NoError(t, tg.apply(t, []change.Event{
		ins(1, v("1"), v("a"), v("1")),
		ins(2, v("2"), v("b"), v("2")),
	}))
	require.NoError(t, tg.apply(t, []change.Event{
		ins(3, v("3"), v("gone"), v("3")),                       // inserted and deleted in one batch
		del(4, v("3"), v("gone"), v("3")),                       //
		upd(5, []change.Value{v("1")}, v("10"), v("a"), v("1")), // 1 → 10
		upd(6, []change.Value{v("2")}, v("1"), v("b"), v("2")),  // 2 → 1: reuses the freed key
		upd(7, nil, v("10"), v("a2"), v("1")),
		del(8, v("10"), v("a2"), v("1")),
		ins(9, v("10"), v("again"), v("9")), // deleted then inserted: replace
	}))
	require.Equal(t, []string{"(1,b,2)", "(10,again,9)"}, dump(t, tg.conn, "t"))
}

func TestPositionRecordedAndChecked(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	ctx := context.Background()
	require.NoError(t, tg.apply(t, []change.Event{ins(1, v("1"), v("a"), v("1"))}))
	pos, err := tg.a.Position(ctx)
	require.NoError(t, err)
	require.Equal(t, change.Position{Tick: 1}, pos)

	// A batch that does not start where the target stands is refused, and nothing of it stays.
	err = tg.a.Apply(ctx, change.Batch{ID: 99, Prev: change.Position{Tick: 5}, End: change.Position{Tick: 6}},
		func(emit func([]change.Event) error) error {
			return emit([]change.Event{ins(2, v("2"), v("b"), v("2"))})
		})
	var pe *PositionError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, change.ErrPositionLost)
	require.Contains(t, err.Error(), "position lost")
	require.Equal(t, []string{"(1,a,1)"}, dump(t, tg.conn, "t"))

	var batches, events int64
	var lastBatch int64
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT batches_applied, events_applied, last_batch_id FROM skiff.subscription`).Scan(&batches, &events, &lastBatch))
	require.Equal(t, []int64{1, 1, 1}, []int64{batches, events, lastBatch})
	var logged int64
	require.NoError(t, tg.conn.QueryRow(ctx, `SELECT count(*) FROM skiff.batch_log WHERE batch_id = 1 AND end_tick = 1`).Scan(&logged))
	require.Equal(t, int64(1), logged)
}

func TestErrorsNameTableEventAndSQL(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl+`; CREATE TABLE u (id int PRIMARY KEY, d date)`)
	ctx := context.Background()

	missing := change.Event{ID: 41, Op: change.Insert, Table: change.Table{Schema: "public", Name: "nope"}, Columns: cols, Key: key, Values: []change.Value{v("1"), v("a"), v("1")}}
	err := tg.apply(t, []change.Event{ins(40, v("1"), v("a"), v("1")), missing})
	var ae *Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, int64(41), ae.EventID)
	require.Contains(t, err.Error(), `table "public"."nope" does not exist on the target`)

	badCol := change.Event{ID: 42, Op: change.Insert, Table: tbl, Columns: []string{"id", "zzz"}, Key: key, Values: []change.Value{v("1"), v("a")}}
	err = tg.apply(t, []change.Event{badCol})
	require.ErrorAs(t, err, &ae)
	require.Contains(t, err.Error(), `column "zzz" of table "public"."t" does not exist on the target`)

	// A value the column's type refuses: the row-by-row replay names the event and its SQL.
	uCols := []string{"id", "d"}
	ut := change.Table{Schema: "public", Name: "u"}
	var evs []change.Event
	for i := 1; i <= 50; i++ {
		d := "2024-01-02"
		if i == 37 {
			d = "not a date"
		}
		evs = append(evs, change.Event{ID: int64(100 + i), Op: change.Insert, Table: ut, Columns: uCols, Key: key, Values: []change.Value{v(strconv.Itoa(i)), v(d)}})
	}
	err = tg.apply(t, evs)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, int64(137), ae.EventID)
	require.Equal(t, change.Insert, ae.Op)
	require.Contains(t, ae.SQL, `INSERT INTO "public"."u"`)
	require.Contains(t, err.Error(), "not a date")
	require.Empty(t, dump(t, tg.conn, "u"), "a failed batch leaves nothing behind")
	pos, err := tg.a.Position(ctx)
	require.NoError(t, err)
	require.Equal(t, change.Position{}, pos)

	// Fixed on the target: the same batch goes through.
	_, err = tg.conn.Exec(ctx, `CREATE TABLE nope (id int PRIMARY KEY, v text, n bigint)`)
	require.NoError(t, err)
	require.NoError(t, tg.apply(t, []change.Event{ins(40, v("1"), v("a"), v("1")), missing}))
	require.Equal(t, []string{"(1,a,1)"}, dump(t, tg.conn, "nope"))
}

// TestUniqueSwapFallsBackToRows: two rows swap a unique value in one batch. The set-based
// UPDATE trips the unique index; the row-by-row replay in provider order succeeds.
func TestUniqueSwapFallsBackToRows(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", `CREATE TABLE t (id int PRIMARY KEY, v text UNIQUE, n bigint)`)
	require.NoError(t, tg.apply(t, []change.Event{ins(1, v("1"), v("a"), v("1")), ins(2, v("2"), v("b"), v("2"))}))
	require.NoError(t, tg.apply(t, []change.Event{
		upd(3, nil, v("1"), v("tmp"), v("1")),
		upd(4, nil, v("2"), v("a"), v("2")),
		upd(5, nil, v("1"), v("b"), v("1")),
	}))
	require.Equal(t, []string{"(1,b,1)", "(2,a,2)"}, dump(t, tg.conn, "t"))
}

func TestTruncateInOrder(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	require.NoError(t, tg.apply(t, []change.Event{
		ins(1, v("1"), v("a"), v("1")),
		ins(2, v("2"), v("b"), v("2")),
		{ID: 3, Op: change.Truncate, Table: tbl},
		ins(4, v("2"), v("c"), v("3")),
	}))
	require.Equal(t, []string{"(2,c,3)"}, dump(t, tg.conn, "t"))
}

func TestSecondWorkerIsRefused(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	ctx := context.Background()
	conn2, err := pg.Connect(ctx, tg.url, "second-worker")
	require.NoError(t, err)
	defer conn2.Close(ctx)
	_, err = Open(ctx, conn2, Config{Queue: "q", Consumer: "c"})
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, err.Error(), "another worker holds the subscription")
	if tg.a.version >= 90000 {
		require.Contains(t, err.Error(), "skiff-test") // application_name (9.0+)
	} else {
		require.Contains(t, err.Error(), "target backend pid")
	}

	require.NoError(t, tg.a.Close(ctx))
	a2, err := Open(ctx, conn2, Config{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	require.NoError(t, a2.Close(ctx))
}

// TestNoSilentTruncation: a value too long for the target column fails the batch on every
// path (COPY, set-based UPDATE, row by row) instead of being cut to fit, as an explicit cast
// to varchar(n) would do.
func TestNoSilentTruncation(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", `CREATE TABLE t (id int PRIMARY KEY, v varchar(3), n bit(2), c char(3))`)
	cols := []string{"id", "v", "n", "c"}
	ins := func(id int64, vals ...change.Value) change.Event {
		return change.Event{ID: id, Op: change.Insert, Table: tbl, Columns: cols, Key: key, Values: vals}
	}
	upd := func(id int64, vals ...change.Value) change.Event {
		return change.Event{ID: id, Op: change.Update, Table: tbl, Columns: cols, Key: key, Values: vals}
	}
	require.NoError(t, tg.apply(t, []change.Event{ins(1, v("1"), v("ab"), v("01"), v("x"))}))
	err := tg.apply(t, []change.Event{ins(2, v("2"), v("abcd"), v("01"), v("x"))})
	require.ErrorContains(t, err, "value too long")
	err = tg.apply(t, []change.Event{upd(3, v("1"), v("abcd"), v("01"), v("x"))})
	require.ErrorContains(t, err, "value too long")
	err = tg.apply(t, []change.Event{upd(4, v("1"), v("ab"), v("011"), v("x"))})
	require.ErrorContains(t, err, "bit string length 3 does not match type bit(2)")
	err = tg.apply(t, []change.Event{upd(5, v("1"), v("ab"), v("01"), v("wxyz"))})
	require.ErrorContains(t, err, "value too long")
	require.NoError(t, tg.apply(t, []change.Event{upd(6, v("1"), v("abc"), v("10"), v("xyz"))}))
	require.Equal(t, []string{"(1,abc,10,xyz)"}, dump(t, tg.conn, "t"))
}

// TestNonSuperuserKeepsOrderAcrossTables: a target role that may not set
// session_replication_role gets foreign keys checked; the applier then keeps the order of
// events across tables (a child row after its parent, its delete before the parent's), and a
// batch that only applies in provider order goes through.
func TestNonSuperuserKeepsOrderAcrossTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := migratetest.NewDB(t, "", migrate.Target)
	admin := pgtest.Connect(t, url)
	role := fmt.Sprintf("app_%d", time.Now().UnixNano())
	for _, sql := range []string{
		`CREATE TABLE parent (id int PRIMARY KEY, v text)`,
		`CREATE TABLE child (id int PRIMARY KEY, parent int NOT NULL REFERENCES parent, v text)`,
		`INSERT INTO skiff.subscription (queue, consumer, provider) VALUES ('q', 'c', 'test')`,
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA skiff TO ` + role,
	} {
		_, err := admin.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	// GRANT … ON ALL TABLES IN SCHEMA is 9.0+: one GRANT per table and sequence.
	rows, err := admin.Query(ctx, `SELECT 'GRANT ALL ON ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || ' TO ' || $1
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('skiff', 'public') AND c.relkind IN ('r', 'S')`, role)
	require.NoError(t, err)
	grants, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	for _, sql := range grants {
		_, err := admin.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	t.Cleanup(func() {
		for _, sql := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			_, _ = admin.Exec(context.Background(), sql)
		}
	})
	conn, err := pg.Connect(ctx, strings.Replace(url, "postgres://postgres@", "postgres://"+role+"@", 1), "skiff-test")
	require.NoError(t, err)
	defer conn.Close(ctx)
	a, err := Open(ctx, conn, Config{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	require.False(t, a.replica)

	pt, ct := change.Table{Schema: "public", Name: "parent"}, change.Table{Schema: "public", Name: "child"}
	pc, cc := []string{"id", "v"}, []string{"id", "parent", "v"}
	pe := func(id int64, op change.Op, k string) change.Event {
		return change.Event{ID: id, Op: op, Table: pt, Columns: pc, Key: key, Values: []change.Value{v(k), v("p")}}
	}
	ce := func(id int64, op change.Op, k, parent string) change.Event {
		return change.Event{ID: id, Op: op, Table: ct, Columns: cc, Key: key, Values: []change.Value{v(k), v(parent), v("c")}}
	}
	apply := func(id int64, evs ...change.Event) {
		b := change.Batch{ID: id, Prev: change.Position{Tick: id}, End: change.Position{Tick: id + 1}}
		require.NoError(t, a.Apply(ctx, b, func(emit func([]change.Event) error) error { return emit(evs) }))
	}
	apply(1, pe(1, change.Insert, "1"), ce(2, change.Insert, "1", "1"))
	// Grouped by table, the parent's delete would run before the child's and fail.
	apply(2, pe(3, change.Insert, "100"), ce(4, change.Delete, "1", "1"), pe(5, change.Delete, "1"), ce(6, change.Insert, "100", "100"))
	var np, nc int
	require.NoError(t, admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM parent), (SELECT count(*) FROM child)`).Scan(&np, &nc))
	require.Equal(t, []int{1, 1}, []int{np, nc})

	// Tables without triggers are still grouped into runs (their order does not matter):
	// interleaved changes of two of them come out right.
	for _, sql := range []string{`CREATE TABLE x1 (id int PRIMARY KEY, v text)`, `CREATE TABLE x2 (id int PRIMARY KEY, v text)`,
		`GRANT ALL ON x1, x2 TO ` + role} {
		_, err := admin.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	x1, x2 := change.Table{Schema: "public", Name: "x1"}, change.Table{Schema: "public", Name: "x2"}
	xe := func(id int64, tb change.Table, op change.Op, k, val string) change.Event {
		return change.Event{ID: id, Op: op, Table: tb, Columns: pc, Key: key, Values: []change.Value{v(k), v(val)}}
	}
	var evs []change.Event
	id := int64(100)
	for i := 1; i <= 30; i++ {
		for _, tb := range []change.Table{x1, x2} {
			id++
			evs = append(evs, xe(id, tb, change.Insert, strconv.Itoa(i), "new"))
			if i%3 == 0 {
				id++
				evs = append(evs, xe(id, tb, change.Update, strconv.Itoa(i-1), "updated"))
			}
			if i%5 == 0 {
				id++
				evs = append(evs, xe(id, tb, change.Delete, strconv.Itoa(i-2), ""))
			}
		}
	}
	apply(3, evs...)
	for _, tb := range []string{"x1", "x2"} {
		var n, upd int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(*), sum(CASE WHEN v = 'updated' THEN 1 ELSE 0 END) FROM `+tb).Scan(&n, &upd))
		require.Equal(t, []int{24, 8}, []int{n, upd}, tb)
	}
}

// TestDeletesWithKeyOnly: deletes that carry only the key columns (logical decoding's default
// replica identity) mix with full rows in one run.
func TestDeletesWithKeyOnly(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	keyOnly := func(id int64, k string) change.Event {
		return change.Event{ID: id, Op: change.Delete, Table: tbl, Columns: key, Key: key, Values: []change.Value{v(k)}}
	}
	require.NoError(t, tg.apply(t, []change.Event{
		keyOnly(1, "7"), // a run starting with a key-only delete
		ins(2, v("1"), v("a"), v("1")),
		ins(3, v("2"), v("b"), v("2")),
		ins(4, v("3"), v("c"), v("3")),
		keyOnly(5, "2"),
		upd(6, nil, v("3"), v("c2"), v("3")),
		keyOnly(7, "3"),
		ins(8, v("3"), v("c3"), v("8")),
	}))
	require.Equal(t, []string{"(1,a,1)", "(3,c3,8)"}, dump(t, tg.conn, "t"))
}

// TestKeyChangeOfPartialRow: an update that changes the key but lacks a column (logical
// decoding leaves an unchanged TOASTed value out) keeps that column's value on the target;
// written as the old key's delete and the new key's insert, it became NULL.
func TestKeyChangeOfPartialRow(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl)
	require.NoError(t, tg.apply(t, []change.Event{
		ins(1, v("1"), v("big value"), v("1")),
		ins(2, v("2"), v("other"), v("2")),
	}))
	partial := []string{"id", "n"} // v unchanged, not sent
	require.NoError(t, tg.apply(t, []change.Event{
		ins(3, v("3"), v("c"), v("3")),
		{ID: 4, Op: change.Update, Table: tbl, Columns: partial, Key: key, Values: []change.Value{v("10"), v("11")}, OldKey: []change.Value{v("1")}},
		upd(5, nil, v("2"), v("other2"), v("2")),
		{ID: 6, Op: change.Update, Table: tbl, Columns: partial, Key: key, Values: []change.Value{v("3"), v("33")}},
	}))
	require.Equal(t, []string{"(10,\"big value\",11)", "(2,other2,2)", "(3,c,33)"}, dump(t, tg.conn, "t"))
}

// TestChangesOfAKeyFoldIntoOneWrite checks that a batch writes each key once: an insert and
// the updates after it as one insert of the last row, updates as one update, an insert and
// its delete not at all. A trigger the target enables ALWAYS (it fires under the replica
// role) logs each write.
func TestChangesOfAKeyFoldIntoOneWrite(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl+`;
		CREATE TABLE writes (n serial, op text, id int, v text)`)
	tg.plpgsql(t)
	_, err := tg.conn.Exec(context.Background(), `
		CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_OP = 'DELETE' THEN
				INSERT INTO public.writes (op, id, v) VALUES (TG_OP, OLD.id, OLD.v);
			ELSE
				INSERT INTO public.writes (op, id, v) VALUES (TG_OP, NEW.id, NEW.v);
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE PROCEDURE log_write();
		ALTER TABLE t ENABLE ALWAYS TRIGGER log_write;`)
	require.NoError(t, err)
	require.NoError(t, tg.apply(t, []change.Event{ins(1, v("2"), v("old"), v("1"))}))
	_, err = tg.conn.Exec(context.Background(), `TRUNCATE writes`)
	require.NoError(t, err)
	require.NoError(t, tg.apply(t, []change.Event{
		ins(2, v("1"), v("a"), v("1")),
		upd(3, nil, v("1"), v("b"), v("1")),
		upd(4, nil, v("2"), v("x"), v("1")),
		upd(5, nil, v("1"), v("c"), v("1")),
		upd(6, nil, v("2"), v("y"), v("1")),
		ins(7, v("3"), v("gone"), v("1")),
		upd(8, nil, v("3"), v("gone2"), v("1")),
		del(9, v("3"), v("gone2"), v("1")),
	}))
	rows, err := tg.conn.Query(context.Background(), `SELECT op || ' ' || id || ' ' || v FROM writes ORDER BY op, id`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"INSERT 1 c", "UPDATE 2 y"}, got)
	require.Equal(t, []string{"(1,c,1)", "(2,y,1)"}, dump(t, tg.conn, "t"))
}

// TestSetBasedRunsGoInKeyOrder: a run's set-based DELETE and UPDATE send their rows in the
// order of an integer key's values (writer.selected), numeric order not text order, whatever
// order the changes came in; what they write is the same. A trigger (ENABLE ALWAYS: it fires
// under the replica role too) logs the order the rows are written in.
func TestSetBasedRunsGoInKeyOrder(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl+`;
		CREATE TABLE writes (n serial, op text, id int)`)
	tg.plpgsql(t)
	_, err := tg.conn.Exec(context.Background(), `
		CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.writes (op, id) VALUES (TG_OP, OLD.id);
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_write AFTER UPDATE OR DELETE ON t FOR EACH ROW EXECUTE PROCEDURE log_write();
		ALTER TABLE t ENABLE ALWAYS TRIGGER log_write;`)
	require.NoError(t, err)
	const n = 300
	var evs []change.Event
	for i := 1; i <= n; i++ {
		s := strconv.Itoa(i)
		evs = append(evs, ins(int64(i), v(s), v("a"+s), v(s)))
	}
	require.NoError(t, tg.apply(t, evs))
	// Keys 1–200 updated, 201–300 deleted, in a shuffled order.
	perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
	evs = evs[:0]
	for j, p := range perm {
		id, s := int64(1000+j), strconv.Itoa(p+1)
		if p < 200 {
			evs = append(evs, upd(id, nil, v(s), v("b"+s), v(s)))
		} else {
			evs = append(evs, del(id, v(s), v("a"+s), v(s)))
		}
	}
	require.NoError(t, tg.apply(t, evs))
	rows, err := tg.conn.Query(context.Background(), `SELECT op || ' ' || id FROM writes ORDER BY n`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	var want, table []string
	for i := 201; i <= n; i++ {
		want = append(want, fmt.Sprintf("DELETE %d", i))
	}
	for i := 1; i <= 200; i++ {
		want = append(want, fmt.Sprintf("UPDATE %d", i))
		table = append(table, fmt.Sprintf("(%d,b%d,%d)", i, i, i))
	}
	require.Equal(t, want, got)
	sort.Strings(table)
	require.Equal(t, table, dump(t, tg.conn, "t"))
}

// TestCommitWaitsForFlushWhateverTheDefault: a target whose role or database defaults to
// synchronous_commit = off would let a batch's COMMIT return before its WAL is flushed; the
// worker then finishes the batch on the provider, and a crash of the target loses it while
// the provider has let it go (the worker stops: position lost). The batch's transaction sets
// synchronous_commit to local (on before 9.1) when it is off; any other setting is kept.
// A trigger the target enables ALWAYS records the setting the batch's writes run under.
func TestCommitWaitsForFlushWhateverTheDefault(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, "", ddl+`;
		CREATE TABLE seen (setting text)`)
	tg.plpgsql(t)
	ctx := context.Background()
	_, err := tg.conn.Exec(ctx, `
		CREATE FUNCTION log_setting() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.seen VALUES (current_setting('synchronous_commit'));
			RETURN NULL;
		END $$;
		CREATE TRIGGER log_setting AFTER INSERT ON t FOR EACH ROW EXECUTE PROCEDURE log_setting();
		ALTER TABLE t ENABLE ALWAYS TRIGGER log_setting;`)
	require.NoError(t, err)
	defaults := []string{"off"}
	if pg.ServerVersion(tg.conn) >= 90200 { // before, a Boolean
		defaults = append(defaults, "local", "remote_write")
	}
	for _, def := range defaults {
		_, err = tg.conn.Exec(ctx, `TRUNCATE seen`)
		require.NoError(t, err)
		_, err = tg.conn.Exec(ctx, `SELECT set_config('synchronous_commit', $1, false)`, def)
		require.NoError(t, err)
		id := int64(tg.tick + 1)
		s := strconv.FormatInt(id, 10)
		require.NoError(t, tg.apply(t, []change.Event{ins(id, v(s), v("a"), v("1"))}))
		var got string
		require.NoError(t, tg.conn.QueryRow(ctx, `SELECT setting FROM seen`).Scan(&got))
		want := def
		if def == "off" && pg.ServerVersion(tg.conn) >= 90100 {
			want = "local"
		} else if def == "off" {
			want = "on"
		}
		require.Equal(t, want, got, "session default synchronous_commit = %s", def)
		// The session's own setting is left as it was once the batch is over.
		require.NoError(t, tg.conn.QueryRow(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&got))
		require.Equal(t, def, got)
	}
}
