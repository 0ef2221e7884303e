package copier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCopyReferencedTable: the destination is referenced by another table's foreign key (ON
// DELETE CASCADE) whose rows must survive, and has a user trigger that refuses deletes. A
// superuser copies it (TRUNCATE would be refused: it deletes under replica role); a role that
// may not set session_replication_role is told which key blocks, and on 15+ the GRANT it is
// told about lets it copy.
func TestCopyReferencedTable(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE parent (id int PRIMARY KEY, v text);
		INSERT INTO parent SELECT g, 'new ' || g FROM generate_series(1, 100) g`)
	require.NoError(t, err)
	admin := pgtest.Connect(t, tg)
	pgtest.PLpgSQL(t, admin)
	_, err = admin.Exec(ctx, `CREATE TABLE parent (id int PRIMARY KEY, v text);
		CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent ON DELETE CASCADE);
		INSERT INTO parent SELECT g, 'old' FROM generate_series(1, 50) g;
		INSERT INTO child SELECT g, g FROM generate_series(1, 50) g;
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'user trigger fired'; END $$;
		CREATE TRIGGER refuse BEFORE DELETE ON parent FOR EACH ROW EXECUTE PROCEDURE refuse()`)
	require.NoError(t, err)
	pc, tc := configs(t, p, tg)
	parent := copier.Table{Source: change.Table{Schema: "public", Name: "parent"}, Dest: change.Table{Schema: "public", Name: "parent"}}
	children := func() int {
		var n int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM child`).Scan(&n))
		return n
	}
	equal := func() bool {
		cres, err := compare.Run(ctx, compare.Config{Provider: pc, Target: tc, Pairs: []compare.Pair{{Source: parent.Source, Dest: parent.Dest}}})
		require.NoError(t, err)
		require.NoError(t, cres[0].Err)
		return cres[0].Equal
	}

	// A role that may not set session_replication_role.
	role := fmt.Sprintf("copier_%d", time.Now().UnixNano())
	for _, sql := range []string{`CREATE ROLE ` + role + ` LOGIN`, `GRANT ALL ON parent TO ` + role, `GRANT ALL ON child TO ` + role} {
		_, err := admin.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	t.Cleanup(func() {
		for _, sql := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			_, _ = admin.Exec(context.Background(), sql)
		}
	})
	rc, err := pg.ParseConfig(strings.Replace(tg, "postgres://postgres@", "postgres://"+role+"@", 1), "copier-test")
	require.NoError(t, err)
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: rc}, []copier.Table{parent})
	require.Error(t, err)
	var refErr *copier.ReferencedError
	require.ErrorAs(t, res[0].Err, &refErr, "%v", res[0].Err)
	require.ErrorContains(t, err, `foreign key "child_parent_fkey" of table "public"."child" references it`)
	require.ErrorContains(t, err, "session_replication_role")
	require.ErrorContains(t, err, `GRANT SET ON PARAMETER session_replication_role TO "`+role+`"`)
	require.Equal(t, 50, children())
	require.False(t, equal(), "the refused copy leaves the destination as it was")

	// A superuser copies it: the referencing rows stay, no cascade, no user trigger.
	res, err = copier.Copy(ctx, copier.Config{Provider: pc, Target: tc}, []copier.Table{parent})
	require.NoError(t, err)
	require.EqualValues(t, 100, res[0].Rows)
	require.Equal(t, 50, children(), "the copy must not delete the referencing rows")
	require.True(t, equal())

	// 15+: the parameter can be granted.
	if pg.ServerVersion(admin) >= 150000 {
		_, err = admin.Exec(ctx, `UPDATE parent SET v = 'damaged'`)
		require.NoError(t, err)
		_, err = admin.Exec(ctx, `GRANT SET ON PARAMETER session_replication_role TO `+role)
		require.NoError(t, err)
		res, err = copier.Copy(ctx, copier.Config{Provider: pc, Target: rc}, []copier.Table{parent})
		require.NoError(t, err)
		require.EqualValues(t, 100, res[0].Rows)
		require.Equal(t, 50, children())
		require.True(t, equal())
	}
}

// TestCopyLockTimeout: a session reading the destination in an open transaction holds a lock
// the copy needs. The copy gives up after its lock timeout, naming that session, and releases
// the barrier: the subscription's batches are held back no longer than the timeout. The
// copy's error is recorded where skiff status shows it. Once the reader is gone it copies.
func TestCopyLockTimeout(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc, tc := configs(t, p, tg)
	migratetest.Install(t, tg, migrate.Target)
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'x')`)
		require.NoError(t, err)
	}
	tgt := pgtest.Connect(t, tg)
	tbl := change.Table{Schema: "public", Name: "t"}
	_, err := apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "q", Consumer: "c", Provider: "p", Tick: 1},
		[]change.Route{{Source: tbl, Dest: tbl, State: change.StateCopying}})
	require.NoError(t, err)
	sub := copier.Subscription{Queue: "q", Consumer: "c"}

	readerCfg, err := pg.ParseConfig(tg, "long reader")
	require.NoError(t, err)
	reader, err := pg.ConnectConfig(ctx, readerCfg)
	require.NoError(t, err)
	defer reader.Close(ctx)
	rtx, err := reader.Begin(ctx)
	require.NoError(t, err)
	_, err = rtx.Exec(ctx, `SELECT count(*) FROM t`)
	require.NoError(t, err)

	cfg := copier.Config{Provider: pc, Target: tc, LockTimeout: 300 * time.Millisecond,
		LockKey: func(t copier.Table) int32 { return sub.TableLockKey(t.Source) },
		Hooks:   sub.Hooks(), CopyPoint: trigger.CopyPoint}
	start := time.Now()
	res, err := copier.Copy(ctx, cfg, []copier.Table{{Source: tbl, Dest: tbl}})
	require.Error(t, err)
	require.Less(t, time.Since(start), 30*time.Second)
	require.ErrorContains(t, res[0].Err, "not granted within 300ms")
	require.ErrorContains(t, res[0].Err, fmt.Sprintf("held by pid %d", reader.PgConn().PID()))
	require.ErrorContains(t, res[0].Err, "AccessShareLock")
	if pg.ServerVersion(tgt) >= 90000 {
		require.ErrorContains(t, res[0].Err, "application long reader")
	}
	// The barrier is released: a batch can lock the subscription row at once.
	btx, err := tgt.Begin(ctx)
	require.NoError(t, err)
	setting := "lock_timeout"
	if pg.ServerVersion(tgt) < 90300 {
		setting = "statement_timeout" // no lock_timeout before 9.3
	}
	_, err = btx.Exec(ctx, `SET LOCAL `+setting+` = '1s'; SELECT 1 FROM skiff.subscription FOR UPDATE`)
	require.NoError(t, err)
	require.NoError(t, btx.Rollback(ctx))
	var state, copyErr string
	require.NoError(t, tgt.QueryRow(ctx, `SELECT state, coalesce(copy_error, '') FROM skiff.table_state`).Scan(&state, &copyErr))
	require.Equal(t, "copying", state)
	require.Contains(t, copyErr, "not granted within 300ms")

	require.NoError(t, rtx.Rollback(ctx))
	_, err = copier.Copy(ctx, cfg, []copier.Table{{Source: tbl, Dest: tbl}})
	require.NoError(t, err)
	require.NoError(t, tgt.QueryRow(ctx, `SELECT state, coalesce(copy_error, '') FROM skiff.table_state`).Scan(&state, &copyErr))
	require.Equal(t, "catching-up", state)
	require.Empty(t, copyErr, "a successful copy clears the error")
}

// TestBarrierCommitFails: when the barrier's transaction (which clears the table's stale copy
// snapshot and backlog) fails to commit, the copy fails and rolls back instead of going on
// with the stale snapshot in place.
func TestBarrierCommitFails(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc, tc := configs(t, p, tg)
	migratetest.Install(t, tg, migrate.Target)
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
		require.NoError(t, err)
	}
	_, err := pgtest.Connect(t, p).Exec(ctx, `INSERT INTO t VALUES (1, 'new')`)
	require.NoError(t, err)
	tgt := pgtest.Connect(t, tg)
	pgtest.PLpgSQL(t, tgt)
	tbl := change.Table{Schema: "public", Name: "t"}
	_, err = apply.Subscribe(ctx, tgt, apply.Subscription{Queue: "q", Consumer: "c", Provider: "p", Tick: 1},
		[]change.Route{{Source: tbl, Dest: tbl, State: change.StateCopying, CopyPoint: "10:10:"}})
	require.NoError(t, err)
	// A deferred check that fails the barrier's commit (it clears copy_snapshot).
	_, err = tgt.Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.copy_snapshot IS NULL THEN
				RAISE EXCEPTION 'barrier commit refused';
			END IF;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON skiff.table_state DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE PROCEDURE refuse()`)
	require.NoError(t, err)
	sub := copier.Subscription{Queue: "q", Consumer: "c"}
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc,
		Hooks: sub.Hooks(), CopyPoint: trigger.CopyPoint},
		[]copier.Table{{Source: tbl, Dest: tbl}})
	require.Error(t, err)
	require.ErrorContains(t, res[0].Err, "barrier commit refused")
	var n int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Zero(t, n, "the copy rolled back")
}

// TestCopyRoutesIntoReferencedTable: a handler without an SQL form sends the even rows to
// another table, which a foreign key with rows of its own references. The copy empties that
// table as it does a destination (TRUNCATE would be refused), and the referencing rows stay.
func TestCopyRoutesIntoReferencedTable(t *testing.T) {
	t.Parallel()
	p := pgtest.Shared(t, "").NewDB(t)
	tg := pgtest.Shared(t, "").NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := pgtest.Connect(t, p).Exec(ctx, `CREATE TABLE src (id int PRIMARY KEY, v text);
		INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 100) g`)
	require.NoError(t, err)
	tconn := pgtest.Connect(t, tg)
	_, err = tconn.Exec(ctx, `CREATE TABLE odd (id int PRIMARY KEY, v text); CREATE TABLE even (id int PRIMARY KEY, v text);
		CREATE TABLE note (id int PRIMARY KEY, even_id int REFERENCES even ON DELETE CASCADE);
		INSERT INTO even VALUES (2, 'old'), (1000, 'gone after the copy'); INSERT INTO note VALUES (1, 2), (2, 1000)`)
	require.NoError(t, err)
	even := change.Table{Schema: "public", Name: "even"}
	reg := handlers.NewRegistry()
	require.NoError(t, reg.Register("split", func(change.Table, json.RawMessage) (handlers.Handler, error) {
		return handlers.Func(func(ev *change.Event) (bool, error) {
			if id := ev.Values[0]; id.Valid && id.Text != "" && (id.Text[len(id.Text)-1]-'0')%2 == 0 {
				ev.Table = even
			}
			return true, nil
		}), nil
	}))
	pc, tc := configs(t, p, tg)
	src := change.Table{Schema: "public", Name: "src"}
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, Registry: reg},
		[]copier.Table{{Source: src, Dest: change.Table{Schema: "public", Name: "odd"}, Handler: "split"}})
	require.NoError(t, err)
	require.EqualValues(t, 100, res[0].Rows)
	var odd, evens, notes int
	require.NoError(t, tconn.QueryRow(ctx, `SELECT (SELECT count(*) FROM odd), (SELECT count(*) FROM even WHERE v LIKE 'v%'),
		(SELECT count(*) FROM note)`).Scan(&odd, &evens, &notes))
	require.Equal(t, 50, odd)
	require.Equal(t, 50, evens, "even holds the copied rows only")
	require.Equal(t, 2, notes, "the referencing rows stay")
}
