package pgtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// shared holds one server per major version for the whole test binary; Main stops them.
// It is test-harness state, never used by skiff itself.
var shared struct {
	mu      sync.Mutex
	servers map[string]*sharedServer
}

type sharedServer struct {
	once sync.Once
	srv  *Server
	err  error
}

var dbCounter atomic.Int64

// Main runs a package's tests and then stops the servers Shared started. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	for _, s := range shared.servers {
		if s.srv != nil {
			s.srv.Stop()
		}
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Shared returns a server of the given major version ("" = DefaultVersion) shared by every test
// of the binary, started on first use. Tests isolate themselves with NewDB. The test is skipped
// when the version is not installed and SKIFF_PG_REQUIRE is unset; with SKIFF_PG_REQUIRE=1
// (as in CI) a missing version fails it.
func Shared(t testing.TB, version string) *Server {
	t.Helper()
	if version == "" {
		version = DefaultVersion()
	}
	if _, err := Find(version); err != nil {
		missing(t, err)
	}
	shared.mu.Lock()
	if shared.servers == nil {
		shared.servers = map[string]*sharedServer{}
	}
	s, ok := shared.servers[version]
	if !ok {
		s = &sharedServer{}
		shared.servers[version] = s
	}
	shared.mu.Unlock()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s.srv, s.err = Start(ctx, Options{Version: version})
	})
	if s.err != nil {
		t.Fatalf("start shared PostgreSQL %s: %v", version, s.err)
	}
	return s.srv
}

// New starts a server for this test alone, stopped when the test ends. Use it for tests that
// restart, crash or reconfigure the server.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := Find(opts.Version); err != nil {
		missing(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start PostgreSQL %s: %v", opts.Version, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log of PostgreSQL %s (port %d):\n%s", s.Install.Major, s.Port, s.LogTail(30))
		}
		s.Stop()
	})
	return s
}

func missing(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("SKIFF_PG_REQUIRE") != "" {
		t.Fatal(err)
	}
	t.Skip(err)
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDB creates a fresh database named after the test and returns its URL. It is dropped when
// the test ends (kept when the test fails, for a look).
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	return s.NewDBOwnedBy(t, "")
}

// NewDBOwnedBy is NewDB for a database owned by a role (e.g. one made by CreateRole; "" is
// the superuser postgres). The URL returned connects as postgres.
func (s *Server) NewDBOwnedBy(t testing.TB, owner string) string {
	t.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	name = fmt.Sprintf("t%d_%s", dbCounter.Add(1), strings.Trim(name, "_"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if owner != "" {
		sql += " OWNER " + pgx.Identifier{owner}.Sanitize()
	}
	if err := s.Exec(ctx, "postgres", sql); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.Exec(ctx, "postgres", "DROP DATABASE "+pgx.Identifier{name}.Sanitize())
	})
	return s.URL(name)
}

// CreateRole creates a login role (no superuser, no CREATEDB) with a password ("" for none)
// and returns its name, made unique on the server from the test's name and base. The role is
// dropped when the test ends (with whatever it owns).
func (s *Server) CreateRole(t testing.TB, base, password string) string {
	t.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(base), "_")
	name = fmt.Sprintf("r%d_%s", dbCounter.Add(1), strings.Trim(name, "_"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN"
	if password != "" {
		sql += " PASSWORD '" + strings.ReplaceAll(password, "'", "''") + "'"
	}
	if err := s.Exec(ctx, "postgres", sql); err != nil {
		t.Fatalf("create role %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.Exec(ctx, "postgres", "DROP ROLE "+pgx.Identifier{name}.Sanitize())
	})
	return name
}

// Connect opens a connection to url for the test, closed when it ends.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// Eventually polls cond until it returns true or the timeout passes, then fails the test with
// msg. It is the harness's only way to wait: a condition with a deadline, never a bare sleep.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PLpgSQL makes sure the database behind conn has PL/pgSQL, which a new database lacks before
// PostgreSQL 9.0, for tests that create functions of their own.
func PLpgSQL(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var has bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_language WHERE lanname = 'plpgsql')`).Scan(&has); err != nil {
		t.Fatalf("look for PL/pgSQL: %v", err)
	}
	if !has {
		if _, err := conn.Exec(ctx, `CREATE LANGUAGE plpgsql`); err != nil {
			t.Fatalf("create PL/pgSQL: %v", err)
		}
	}
}
