package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// lpCounter makes the names of TestLeastPrivilege's roles and databases unique: roles are
// cluster-wide, and a shared server may hold both sides of a pair.
var lpCounter atomic.Int64

// lpDDL is the application's schema, made by its role app_<n> on both sides.
const lpDDL = `
CREATE SCHEMA appdata;
CREATE SEQUENCE appdata.order_ids;
CREATE TABLE appdata.accounts (id integer PRIMARY KEY, region text NOT NULL, name text, balance numeric(12,2));
CREATE TABLE appdata.orders (id bigint PRIMARY KEY, account integer, amount numeric(12,2), note text, created timestamptz);
`

// lpWhere filters appdata.accounts on the provider (table add --where).
const lpWhere = "region <> 'internal'"

// lpReplicaWarning is what the worker logs when its target role may not set
// session_replication_role.
const lpReplicaWarning = "may not SET session_replication_role"

// lpSide is one side of TestLeastPrivilege: a database owned by the application's role and the
// role skiff runs as, neither of them a superuser.
type lpSide struct {
	srv        *pgtest.Server
	num        int    // server_version_num
	db         string // database name
	app, skiff string // role names
	managed    bool   // administered by a role with CREATEROLE and CREATEDB only
}

func (s *lpSide) url(role string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", role, s.srv.Port, s.db)
}

// newLPSide does the administrator's part, once, as docs/roles.md lists it: roles app_<n> and
// skiff_<n> (LOGIN, nothing else) and a database owned by app_<n>. On a self-hosted server the
// superuser also makes schema skiff owned by skiff_<n> (which then needs no CREATE on the
// database) and, on a target from 15 on, grants it SET on session_replication_role. On a
// managed server the administrator is a role with CREATEROLE and CREATEDB but not superuser,
// which can do neither: there the database's owner grants CREATE on the database instead
// (grantApp), and the worker applies in strict order.
func newLPSide(t *testing.T, version string, target, managed bool) *lpSide {
	t.Helper()
	srv := pgtest.Shared(t, version)
	n := lpCounter.Add(1)
	s := &lpSide{srv: srv, num: srv.Install.Num, db: fmt.Sprintf("lp_%d", n),
		app: fmt.Sprintf("app_%d", n), skiff: fmt.Sprintf("skiff_%d", n), managed: managed}
	admin := ""
	super := connect(t, srv.URL("postgres"))
	t.Cleanup(func() { s.drop(t, admin) })
	adminURL := srv.URL("postgres")
	if managed {
		// What a managed service hands its customer: CREATEROLE and CREATEDB, no superuser.
		admin = fmt.Sprintf("admin_%d", n)
		exec1(t, super, `CREATE ROLE `+admin+` LOGIN CREATEROLE CREATEDB`)
		adminURL = fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", admin, srv.Port)
	}
	a := connect(t, adminURL)
	exec1(t, a, `CREATE ROLE `+s.app+` LOGIN`)
	exec1(t, a, `CREATE ROLE `+s.skiff+` LOGIN`)
	if managed {
		// CREATE DATABASE ... OWNER needs membership in the owner (SET ROLE to it from 16);
		// CREATEROLE lets the administrator grant that to itself (ADMIN on the roles it made
		// from 16).
		exec1(t, a, `GRANT `+s.app+` TO `+admin)
	}
	exec1(t, a, `CREATE DATABASE `+s.db+` OWNER `+s.app)
	if !managed {
		su := connect(t, s.url("postgres"))
		exec1(t, su, `CREATE SCHEMA skiff AUTHORIZATION `+s.skiff)
		if target && s.num >= 150000 {
			exec1(t, su, `GRANT SET ON PARAMETER session_replication_role TO `+s.skiff)
		}
	}
	return s
}

// drop removes the database and the roles (kept when the test failed, for a look).
func (s *lpSide) drop(t *testing.T, admin string) {
	if t.Failed() {
		return
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.srv.URL("postgres"))
	if err != nil {
		return
	}
	defer c.Close(ctx)
	// DROP DATABASE waits a few seconds for the sessions that earlier cleanups closed.
	if _, err := c.Exec(ctx, `DROP DATABASE `+s.db); err != nil {
		t.Logf("drop database %s: %v", s.db, err)
		return
	}
	if s.num >= 150000 {
		_, _ = c.Exec(ctx, `REVOKE SET ON PARAMETER session_replication_role FROM `+s.skiff)
	}
	for _, r := range []string{s.skiff, s.app, admin} {
		if r != "" {
			_, _ = c.Exec(ctx, `DROP ROLE `+r)
		}
	}
}

// grantApp is the application role's part, as the owner of the database and of its tables:
// PL/pgSQL before 9.0 (the database owner may create it), the application's schema, and the
// grants docs/roles.md lists for skiff's role on this side. CONNECT and TEMPORARY, which
// PUBLIC has by default, are taken from PUBLIC so that skiff's role holds exactly the listed
// privileges.
func (s *lpSide) grantApp(t *testing.T, target bool) *pgx.Conn {
	t.Helper()
	app := connect(t, s.url(s.app))
	if !target && s.num < 90000 {
		exec1(t, app, `CREATE LANGUAGE plpgsql`)
	}
	exec1(t, app, lpDDL)
	sk := s.skiff
	stmts := []string{`REVOKE ALL ON DATABASE ` + s.db + ` FROM PUBLIC`}
	if target {
		stmts = append(stmts,
			`GRANT CONNECT ON DATABASE `+s.db+` TO `+sk,
			`GRANT USAGE ON SCHEMA appdata TO `+sk,
			`GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON appdata.accounts, appdata.orders TO `+sk,
			`GRANT SELECT, UPDATE ON SEQUENCE appdata.order_ids TO `+sk)
	} else {
		stmts = append(stmts,
			`GRANT CONNECT, TEMPORARY ON DATABASE `+s.db+` TO `+sk,
			`GRANT USAGE ON SCHEMA appdata TO `+sk,
			`GRANT SELECT, TRIGGER ON appdata.accounts, appdata.orders TO `+sk,
			`GRANT SELECT ON SEQUENCE appdata.order_ids TO `+sk)
	}
	if s.managed {
		stmts = append(stmts, `GRANT CREATE ON DATABASE `+s.db+` TO `+sk) // skiff makes its own schema
	}
	for _, q := range stmts {
		exec1(t, app, q)
	}
	return app
}

// lockPrivilege is the table privilege that lets a role LOCK a table IN SHARE ROW EXCLUSIVE
// MODE, as table add does: MAINTAIN from 17 (it changes no row), UPDATE before (DELETE or
// TRUNCATE would do as well).
func lockPrivilege(num int) string {
	if num >= 170000 {
		return "MAINTAIN"
	}
	return "UPDATE"
}

// TestLeastPrivilege: every skiff command runs as a role that is not a superuser and holds
// only the privileges docs/roles.md lists, on tables owned by another role that writes them
// live. For each version pair: the first (oldest → newest) on self-hosted servers, where a
// superuser made schema skiff and, on a 15+ target, granted SET on session_replication_role
// (the worker then applies with replica role); the others on managed servers, whose
// administrator has only CREATEROLE and CREATEDB (skiff makes its schema with CREATE on the
// database, and the worker applies in strict order). On an 8.4 provider the database's owner
// creates PL/pgSQL. table add is refused without the lock privilege, which is revoked again
// once the tables are added (and refreshed after DDL); subscribe copies, the worker replays
// inserts, updates (into and out of a --where), deletes and truncates, and skiff compare and a
// row-by-row comparison find both sides equal.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	pairs := versionPairs()
	if len(pairs) == 0 {
		pairs = [][2]string{{"", ""}}
	}
	for i, vp := range pairs {
		managed := i > 0 || len(pairs) == 1
		kind := "selfhosted"
		if managed {
			kind = "managed"
		}
		t.Run(vp[0]+"to"+vp[1]+"_"+kind, func(t *testing.T) {
			t.Parallel()
			testLeastPrivilege(t, vp[0], vp[1], managed)
		})
	}
}

// lpSetup makes the two sides of a least-privilege pair, each with the application's schema
// and grants (grantApp), and the application's first rows on the provider; it returns the
// sides and the application role's connections to them.
func lpSetup(t *testing.T, provVersion, tgtVersion string, managed bool) (ps, ts *lpSide, provApp, tgtApp *pgx.Conn) {
	t.Helper()
	ps = newLPSide(t, provVersion, false, managed)
	ts = newLPSide(t, tgtVersion, true, managed)
	provApp = ps.grantApp(t, false)
	tgtApp = ts.grantApp(t, true)
	exec1(t, provApp, `INSERT INTO appdata.accounts SELECT g, CASE g % 3 WHEN 0 THEN 'eu' WHEN 1 THEN 'us' ELSE 'internal' END, 'acct ' || g, g FROM generate_series(1, 300) g`)
	exec1(t, provApp, `INSERT INTO appdata.orders SELECT nextval('appdata.order_ids'), g % 300, g / 7.0, 'order ' || g, '2024-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 1000) g`)
	return ps, ts, provApp, tgtApp
}

func testLeastPrivilege(t *testing.T, provVersion, tgtVersion string, managed bool) {
	ctx := context.Background()
	ps, ts, provApp, tgtApp := lpSetup(t, provVersion, tgtVersion, managed)
	prov, tgt := ps.url(ps.skiff), ts.url(ts.skiff)
	run := func(args ...string) string {
		t.Helper()
		return mustSkiff(t, args...)
	}

	run("init", "provider", "--db", prov)
	run("init", "target", "--db", tgt)
	out, err := skiff(t, "table", "add", "--db", prov, "--queue", "lp", "appdata.orders")
	require.Error(t, err, "table add without a privilege that allows LOCK ... IN SHARE ROW EXCLUSIVE MODE")
	require.Contains(t, out, "lock table")
	require.Contains(t, out, "permission denied")

	lock := lockPrivilege(ps.num)
	t.Logf("provider %d: %s granted for table add, revoked afterwards", ps.num, lock)
	exec1(t, provApp, `GRANT `+lock+` ON appdata.accounts, appdata.orders TO `+ps.skiff)
	run("table", "add", "--db", prov, "--queue", "lp", "appdata.orders", "appdata.order_ids")
	run("table", "add", "--db", prov, "--queue", "lp", "--where", lpWhere, "appdata.accounts")
	// DDL by the application on both sides, then a refresh by skiff, which does not own the table.
	exec1(t, provApp, `ALTER TABLE appdata.orders ADD COLUMN status text`)
	exec1(t, tgtApp, `ALTER TABLE appdata.orders ADD COLUMN status text`)
	run("table", "add", "--db", prov, "--queue", "lp", "--refresh", "appdata.orders")
	exec1(t, provApp, `REVOKE `+lock+` ON appdata.accounts, appdata.orders FROM `+ps.skiff)

	startProc(t, "ticker", "--db", prov, "--poll", "50ms")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var wwg sync.WaitGroup
	var txs atomic.Int64
	for i := range 2 {
		lpWriter(t, wctx, &wwg, ps.url(ps.app), uint64(i+1), &txs)
	}
	run("subscribe", "--provider", prov, "--target", tgt, "--queue", "lp", "--consumer", "c1")
	w := startProc(t, "worker", "--provider", prov, "--target", tgt, "--queue", "lp", "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")
	tgtConn := connect(t, tgt)
	pgtest.Eventually(t, 3*time.Minute, "every table in sync", func() bool { return allInSync(t, tgtConn) })

	// Live writes go on; a TRUNCATE of each table among them.
	for _, tb := range []string{"appdata.orders", "appdata.accounts"} {
		before := txs.Load()
		pgtest.Eventually(t, time.Minute, "writers run", func() bool { return t.Failed() || txs.Load() > before+100 })
		exec1(t, provApp, `TRUNCATE `+tb)
	}
	before := txs.Load()
	pgtest.Eventually(t, time.Minute, "writers refill the tables", func() bool { return t.Failed() || txs.Load() > before+200 })
	require.False(t, t.Failed())
	wstop()
	wwg.Wait()
	t.Logf("%d writer transactions by %s", txs.Load(), ps.app)
	p := &pair{prov: prov, tgt: tgt}
	p.caughtUp(t, 2*time.Minute, "lp")

	// The sequence reaches the target (the worker's table manager moves it forward).
	p.sequencesSynced(t, time.Minute, "lp")

	run("compare", "--provider", prov, "--target", tgt, "--queue", "lp")
	provConn := connect(t, prov)
	awkCompare(t, provConn, tgtConn, "appdata.accounts", lpWhere)
	awkCompare(t, provConn, tgtConn, "appdata.orders", "")
	var filtered int
	require.NoError(t, tgtConn.QueryRow(ctx, `SELECT count(*) FROM appdata.accounts WHERE region = 'internal'`).Scan(&filtered))
	require.Zero(t, filtered, "rows the --where leaves out are not on the target")

	if !managed && ts.num >= 150000 {
		require.NotContains(t, w.String(), lpReplicaWarning, "SET on session_replication_role granted: the fast path")
	} else {
		require.Contains(t, w.String(), lpReplicaWarning, "no superuser on the target: strict order, with a warning")
	}
	var super bool
	require.NoError(t, provConn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super))
	require.False(t, super)
}

// lpWriter runs transactions as the application's role until ctx ends: inserts, updates
// (accounts move into and out of the --where), deletes.
func lpWriter(t *testing.T, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, txs *atomic.Int64) {
	c := connect(t, url)
	regions := []string{"eu", "us", "internal"}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 11))
		for ctx.Err() == nil {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				for range 1 + rng.IntN(4) {
					var err error
					switch r := rng.IntN(100); {
					case r < 30:
						_, err = tx.Exec(ctx, `INSERT INTO appdata.orders SELECT nextval('appdata.order_ids'), $1::int, random() * 100, $2::text, now()
							FROM generate_series(1, $3::int)`, rng.IntN(1000), randText(rng), 1+rng.IntN(5))
					case r < 45:
						_, err = tx.Exec(ctx, `UPDATE appdata.orders SET amount = amount + 1, note = $1, status = 'updated'
							WHERE id IN (SELECT id FROM appdata.orders ORDER BY random() LIMIT 3)`, randText(rng))
					case r < 55:
						_, err = tx.Exec(ctx, `DELETE FROM appdata.orders WHERE id IN (SELECT id FROM appdata.orders ORDER BY random() LIMIT 2)`)
					case r < 70:
						_, err = tx.Exec(ctx, `INSERT INTO appdata.accounts VALUES ($1, $2, $3, 0)`, 1000+rng.IntN(1_000_000), regions[rng.IntN(3)], randText(rng))
					case r < 90:
						_, err = tx.Exec(ctx, `UPDATE appdata.accounts SET region = $1, balance = balance + 1
							WHERE id = (SELECT id FROM appdata.accounts ORDER BY random() LIMIT 1)`, regions[rng.IntN(3)])
					default:
						_, err = tx.Exec(ctx, `DELETE FROM appdata.accounts WHERE id = (SELECT id FROM appdata.accounts ORDER BY random() LIMIT 1)`)
					}
					if err != nil {
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
					continue // writers collide now and then; the provider rolled back
				}
				t.Errorf("writer: %v", err)
				return
			}
			txs.Add(1)
		}
	}()
}
