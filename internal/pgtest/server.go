// Package pgtest starts throwaway PostgreSQL servers for tests: initdb into a temporary
// directory, a free port on 127.0.0.1, run as an unprivileged user when the test runs as root
// (postgres refuses root), stopped and removed at the end even when a test fails.
//
// Server binaries are found in, by order of preference:
//   - the directories listed in SKIFF_PG_BINDIRS (separated by ':'), e.g. a self-built 9.1;
//   - the cache filled by `make pg-matrix` (SKIFF_PG_CACHE, default <module root>/.cache/pg);
//   - Debian's /usr/lib/postgresql/*/bin.
//
// SKIFF_PG_VERSION chooses the default major version (e.g. "15", "9.1"); without it the
// harness prefers 15 and otherwise takes the newest it finds.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
)

// Install is one PostgreSQL installation: its bin directory and major version.
type Install struct {
	Major  string // "15", "9.1", "8.4"
	Num    int    // server_version_num of the binaries, e.g. 150004
	BinDir string
}

// Options configure a server.
type Options struct {
	// Version is the major version to run ("15", "10", "9.1"); empty means DefaultVersion().
	Version string
	// Settings are extra postgresql.conf settings; they override the harness's defaults.
	Settings map[string]string
	// Durable keeps fsync and synchronous_commit on, as for benchmarks. Tests leave it off.
	Durable bool
	// Passwords makes the server ask every role but postgres for its password (md5) on TCP
	// connections, as a production server does; postgres and Unix sockets stay trusted. For
	// tests of wrong passwords and of password handling (CreateRole, URLAs).
	Passwords bool
}

// Server is a running throwaway PostgreSQL server.
type Server struct {
	Install Install
	Port    int
	Dir     string // temporary directory holding data/ and the socket

	settings map[string]string
	uid, gid int
	asUser   bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
	log     *os.File
}

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return filepath.Join(s.Dir, "data") }

// LogPath is the file the server logs to.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, "server.log") }

// URL returns a connection URI for a database on this server as the superuser "postgres".
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// URLAs returns a connection URI for a database on this server as another role, with a
// password when it is not empty.
func (s *Server) URLAs(user, password, db string) string {
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("127.0.0.1:%d", s.Port), Path: "/" + db, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	return u.String()
}

// Installs lists every installation the harness can find, newest first, one per major.
func Installs() []Install {
	var dirs []string
	if env := os.Getenv("SKIFF_PG_BINDIRS"); env != "" {
		dirs = append(dirs, filepath.SplitList(env)...)
	}
	cache := os.Getenv("SKIFF_PG_CACHE")
	if cache == "" {
		if root := moduleRoot(); root != "" {
			cache = filepath.Join(root, ".cache", "pg")
		}
	}
	if cache != "" {
		m, _ := filepath.Glob(filepath.Join(cache, "*", "bin"))
		dirs = append(dirs, m...)
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	dirs = append(dirs, m...)

	seen := map[string]bool{}
	var out []Install
	for _, d := range dirs {
		in, err := probe(d)
		if err != nil || seen[in.Major] {
			continue
		}
		seen[in.Major] = true
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Num > out[j].Num })
	return out
}

// Majors lists the major versions Installs finds, newest first.
func Majors() []string {
	var out []string
	for _, in := range Installs() {
		out = append(out, in.Major)
	}
	return out
}

// DefaultVersion is SKIFF_PG_VERSION, else 15 when installed, else the newest installed.
func DefaultVersion() string {
	if v := os.Getenv("SKIFF_PG_VERSION"); v != "" {
		return v
	}
	ins := Installs()
	for _, in := range ins {
		if in.Major == "15" {
			return "15"
		}
	}
	if len(ins) > 0 {
		return ins[0].Major
	}
	return ""
}

// Find returns the installation of a major version.
func Find(version string) (Install, error) {
	if version == "" {
		version = DefaultVersion()
	}
	ins := Installs()
	for _, in := range ins {
		if in.Major == version {
			return in, nil
		}
	}
	return Install{}, fmt.Errorf("no PostgreSQL %s installed (found %v); run `make pg-matrix` or set SKIFF_PG_BINDIRS", version, Majors())
}

func probe(binDir string) (Install, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return Install{}, err
	}
	// "postgres (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return Install{}, fmt.Errorf("unexpected version output %q", out)
	}
	num := pg.ParseServerVersion(f[2])
	major := strconv.Itoa(num / 10000)
	if num < 100000 {
		major = fmt.Sprintf("%d.%d", num/10000, num/100%100)
	}
	return Install{Major: major, Num: num, BinDir: binDir}, nil
}

func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Start initialises and starts a new server. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	in, err := Find(opts.Version)
	if err != nil {
		return nil, err
	}
	s := &Server{Install: in, settings: map[string]string{}}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs an unprivileged user \"postgres\" for the server: %w", err)
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
		s.asUser = true
	}
	s.Dir, err = os.MkdirTemp("", fmt.Sprintf("skiff-pg%s-", in.Major))
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if s.asUser {
		if err := os.Chown(s.Dir, s.uid, s.gid); err != nil {
			return nil, errors.Join(fmt.Errorf("chown %s: %w", s.Dir, err), os.RemoveAll(s.Dir))
		}
	}
	if err := s.initdb(ctx); err != nil {
		return nil, errors.Join(err, os.RemoveAll(s.Dir))
	}
	if err := s.allowReplication(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(s.Dir))
	}
	if opts.Passwords {
		if err := s.passwordAuth(); err != nil {
			return nil, errors.Join(err, os.RemoveAll(s.Dir))
		}
	}
	s.defaultSettings(opts)
	for k, v := range opts.Settings {
		s.settings[k] = v
	}
	for attempt := 0; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			return nil, errors.Join(err, os.RemoveAll(s.Dir))
		}
		err = s.start(ctx)
		if err == nil {
			return s, nil
		}
		if attempt == 2 || ctx.Err() != nil {
			return nil, errors.Join(err, os.RemoveAll(s.Dir))
		}
	}
}

func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.Install.BinDir, name), args...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	if lib := filepath.Join(filepath.Dir(s.Install.BinDir), "lib"); isDir(lib) && !strings.HasPrefix(s.Install.BinDir, "/usr/lib/postgresql/") {
		cmd.Env = append(cmd.Env, "LD_LIBRARY_PATH="+lib)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
	if s.asUser {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	return cmd
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func (s *Server) initdb(ctx context.Context) error {
	args := []string{"-D", s.DataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"}
	if s.Install.Num >= 90300 {
		args = append(args, "-N") // no fsync of the new cluster
	}
	out, err := s.command(ctx, "initdb", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb (PostgreSQL %s in %s): %w\n%s", s.Install.Major, s.Install.BinDir, err, out)
	}
	return nil
}

// allowReplication lets replication connections in over TCP and the Unix socket as initdb lets
// the others (the logical source's stream): initdb writes those lines from 10 on, commented
// out before.
func (s *Server) allowReplication() error {
	p := filepath.Join(s.DataDir(), "pg_hba.conf")
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	if _, err := f.WriteString("local replication all trust\nhost replication all 127.0.0.1/32 trust\n"); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	return f.Close()
}

// passwordAuth replaces initdb's all-trust pg_hba.conf: postgres (the harness's own role) and
// local sockets stay trusted (replication too: a test may stream over the socket, whose
// small, fixed buffer bounds what the server sends ahead), every other role gives its password over TCP (md5: every version
// has it, and from 10 on it also accepts a SCRAM-stored password).
func (s *Server) passwordAuth() error {
	hba := "local all all trust\n" +
		"local replication all trust\n" +
		"host all postgres 127.0.0.1/32 trust\n" +
		"host all all 127.0.0.1/32 md5\n" +
		"host replication postgres 127.0.0.1/32 trust\n" +
		"host replication all 127.0.0.1/32 md5\n"
	p := filepath.Join(s.DataDir(), "pg_hba.conf")
	if err := os.WriteFile(p, []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if s.asUser {
		if err := os.Chown(p, s.uid, s.gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

func (s *Server) defaultSettings(opts Options) {
	v := s.Install.Num
	set := s.settings
	set["listen_addresses"] = "127.0.0.1"
	set["max_connections"] = "100"
	set["shared_buffers"] = "128MB"
	set["logging_collector"] = "off"
	set["log_min_messages"] = "warning"
	set["log_line_prefix"] = "%m [%p] %d "
	set["TimeZone"] = "UTC"
	if v >= 90300 {
		set["unix_socket_directories"] = s.Dir
	} else {
		set["unix_socket_directory"] = s.Dir
	}
	if !opts.Durable {
		// fsync off keeps tests fast; synchronous_commit stays on so that a crash (Crash)
		// keeps every commit a client saw, as crash tests assume.
		set["fsync"] = "off"
		set["full_page_writes"] = "off"
	}
	switch {
	case v >= 90400:
		set["wal_level"] = "logical"
		set["max_replication_slots"] = "16"
		set["max_wal_senders"] = "16"
	case v >= 90000:
		set["wal_level"] = "hot_standby"
	}
}

func (s *Server) start(ctx context.Context) error {
	args := []string{"-D", s.DataDir(), "-p", strconv.Itoa(s.Port)}
	keys := make([]string, 0, len(s.settings))
	for k := range s.settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+s.settings[k])
	}
	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	// The server outlives ctx: it is stopped by Stop, not by the context that started it.
	cmd := s.command(context.WithoutCancel(ctx), "postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.log, s.stopped = cmd, exited, logf, false
	s.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres %s exited during start-up:\n%s", s.Install.Major, s.LogTail(20))
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("postgres %s did not accept connections within 60s:\n%s", s.Install.Major, s.LogTail(20))
		}
	}
}

// LogTail returns the last n lines of the server log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.LogPath())
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// halt stops the postmaster with sig and waits for it to exit.
func (s *Server) halt(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	if s.log != nil {
		s.log.Close()
	}
}

// Crash stops the server the way a power cut would (immediate shutdown, no checkpoint); Start
// brings it back with crash recovery. For tests of what survives a provider restart.
func (s *Server) Crash() { s.halt(syscall.SIGQUIT) }

// Restart stops the server (fast shutdown, clients disconnected) and starts it again on the
// same port and data directory.
func (s *Server) Restart(ctx context.Context) error {
	s.halt(syscall.SIGINT)
	return s.start(ctx)
}

// Resume starts a server stopped by Crash.
func (s *Server) Resume(ctx context.Context) error { return s.start(ctx) }

// Stop shuts the server down and removes its directory. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.halt(syscall.SIGINT)
	if os.Getenv("SKIFF_PG_KEEP") == "" {
		_ = os.RemoveAll(s.Dir)
	}
}

// Exec runs SQL statements on a database of the server as the superuser.
func (s *Server) Exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
