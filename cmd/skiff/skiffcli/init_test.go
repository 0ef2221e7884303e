package skiffcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/ticker"
)

// dbName is the database a URL names.
func dbName(t *testing.T, url string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	return cfg.Database
}

// TestInitFailures: the first command a user runs says why it cannot connect or install, in
// one line naming the server (never the password), with exit code 1: a closed port, a missing
// database, a wrong password, a role without CREATE on the database.
func TestInitFailures(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t, pgtest.Options{Passwords: true})
	const password = "Right-Pa55word"
	const wrong = "Wr0ng-Pa55word"
	user := srv.CreateRole(t, "alice", password)
	db := dbName(t, srv.NewDB(t))

	down := pgtest.New(t, pgtest.Options{})
	closed := down.URL("postgres")
	down.Stop()

	for _, tc := range []struct {
		name, url, want string
	}{
		{"closed port", closed, "connection refused"},
		{"missing database", srv.URLAs("postgres", "", "no_such_db"), `database "no_such_db" does not exist`},
		{"wrong password", srv.URLAs(user, wrong, db), "password authentication failed"},
		// skiff names the privilege the role lacks, whatever the server says (8.4 refuses
		// CREATE LANGUAGE, which a provider needs there, with "must be owner of database").
		{"no CREATE on the database", srv.URLAs(user, password, db), "lacks the CREATE privilege on database"},
	} {
		// The URL comes from a config file: a password on the command line is warned about.
		config := filepath.Join(t.TempDir(), "skiff.json")
		b, err := json.Marshal(map[string]string{"db": tc.url})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(config, b, 0o600))
		for _, role := range []string{"provider", "target"} {
			want := tc.want
			if role == "provider" && srv.Install.Num < 90000 && strings.HasPrefix(tc.name, "no CREATE") {
				// Before 9.0 a new database has no PL/pgSQL: creating it is the first refusal.
				want = `PL/pgSQL is not installed in database "` + db + `" and role "` + user + `" may not create it: only the database's owner or a superuser may`
			}
			code, stdout, stderr := skiff(t, "--log-format", "text", "--config", config, "init", role)
			oneLineError(t, code, stderr, want)
			require.Contains(t, stderr, "init "+role+" ", tc.name)
			require.NotContains(t, stderr, wrong, tc.name)
			require.NotContains(t, stderr, password, tc.name)
			require.NotContains(t, stderr, "goroutine", tc.name)
			require.Empty(t, stdout, tc.name)
		}
	}
}

// TestInitAsDatabaseOwner: a role that owns its database, without superuser, installs both
// schemas and uses them, on every installed version from 9.0 (before, PL/pgSQL is not in a
// new database and only a superuser may create it).
func TestInitAsDatabaseOwner(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			srv := pgtest.Shared(t, v)
			if srv.Install.Num < 90000 {
				t.Skip("PL/pgSQL is not installed in a new database before 9.0")
			}
			owner := srv.CreateRole(t, "owner", "")
			url := srv.URLAs(owner, "", dbName(t, srv.NewDBOwnedBy(t, owner)))
			for _, role := range []string{"provider", "target"} {
				code, _, stderr := skiff(t, "init", role, "--db", url)
				require.Zero(t, code, stderr)
				require.Contains(t, stderr, "schema installed")
			}
			conn := pgtest.Connect(t, url)
			ctx := context.Background()
			for _, role := range []migrate.Role{migrate.Provider, migrate.Target} {
				v, err := migrate.Version(ctx, conn, role)
				require.NoError(t, err)
				latest, err := migrate.Latest(role)
				require.NoError(t, err)
				require.Equal(t, latest, v, role)
			}
			// The owner can use what it installed: a table captured, a tick.
			_, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY)`)
			require.NoError(t, err)
			code, stdout, stderr := skiff(t, "table", "add", "--db", url, "--queue", "q", "t")
			require.Zero(t, code, stderr)
			require.Contains(t, stdout, "captured by queue q")
			_, err = conn.Exec(ctx, `INSERT INTO t VALUES (1)`)
			require.NoError(t, err)
			var tick *int64
			require.NoError(t, conn.QueryRow(ctx, `SELECT skiff.force_tick('q')`).Scan(&tick))
			require.NotNil(t, tick)
		})
	}
}

// TestInitTargetBesideTicker: a database that is both provider and target gets its target
// schema while a ticker runs on it (the ticker's lock and the installer's are distinct).
func TestInitTargetBesideTicker(t *testing.T) {
	t.Parallel()
	url, conn := initProvider(t)
	ctx := context.Background()
	tk, err := ticker.New(ticker.Config{DBs: []string{url}, Poll: 20 * time.Millisecond}, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	require.NoError(t, tk.Start(ctx))
	t.Cleanup(tk.Stop)
	pgtest.Eventually(t, 30*time.Second, "the ticker holds its lock", func() bool {
		var held bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory'
			AND classid = ($1::int8 >> 32)::oid AND objid = ($1::int8 & 4294967295)::oid AND objsubid = 1 AND granted)`,
			ticker.LockKey).Scan(&held)
		require.NoError(t, err)
		return held
	})

	done := make(chan string, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run([]string{"init", "target", "--db", url}, &out, &errb)
		done <- fmt.Sprintf("exit %d: %s", code, errb.String())
	}()
	select {
	case res := <-done:
		require.True(t, strings.HasPrefix(res, "exit 0:"), res)
		require.Contains(t, res, "schema installed")
	case <-time.After(30 * time.Second):
		t.Fatal("skiff init target still waits after 30 s while a ticker runs on the database")
	}
}
