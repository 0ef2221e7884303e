package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// The README's example servers, replaced by the test's databases.
const (
	readmeProvider = "postgres://app@old-host/app"
	readmeTarget   = "postgres://app@new-host/app"
)

// readmeBlock returns the lines of the first fenced block after the first README line that
// contains marker.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	lines := strings.Split(string(b), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, marker) })
	require.GreaterOrEqual(t, start, 0, "README.md has no %q", marker)
	var out []string
	in := false
	for _, l := range lines[start+1:] {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			if in {
				return out
			}
			in = true
			continue
		}
		if in {
			out = append(out, strings.TrimSpace(l))
		}
	}
	t.Fatalf("README.md: no closed code block after %q", marker)
	return nil
}

// shellComment is a trailing shell comment.
var shellComment = regexp.MustCompile(`(^|\s+)#.*$`)

// readme runs README command lines the way a shell would, with the README's example servers
// replaced by the test's databases: `skiff … &` starts a background job (`%1`, `%2`, … in
// order), `kill %N` sends the job SIGTERM and waits for it to exit 0, `skiff status` and `skiff
// compare` are run again until they say what the README says to wait for, every other command
// must exit 0. A line the test cannot run fails it, so that the README cannot drift from the
// test.
type readme struct {
	t          *testing.T
	prov, tgt  string
	jobs       []*exec.Cmd
	jobOut     []*procOut
	ran        []string // subcommands run, e.g. "init provider", "worker &"
	statusDone func(out string) bool
}

func (r *readme) run(lines []string) {
	t := r.t
	t.Helper()
	for _, line := range lines {
		line = shellComment.ReplaceAllString(line, "")
		if line == "" {
			continue
		}
		require.NotContains(t, line, `"`, "README line %q: the test splits lines on spaces only", line)
		require.NotContains(t, line, `'`, "README line %q: the test splits lines on spaces only", line)
		args := strings.Fields(line)
		if args[0] == "kill" {
			require.Len(t, args, 2, "README line %q", line)
			n, err := strconv.Atoi(strings.TrimPrefix(args[1], "%"))
			require.NoError(t, err, "README line %q: kill takes a job %%N", line)
			require.True(t, n >= 1 && n <= len(r.jobs), "README line %q: no job %d", line, n)
			r.stop(n - 1)
			r.ran = append(r.ran, "kill")
			continue
		}
		require.Equal(t, "skiff", args[0], "README line %q: the test runs skiff and kill only", line)
		args = args[1:]
		background := args[len(args)-1] == "&"
		if background {
			args = args[:len(args)-1]
		}
		for i, a := range args {
			args[i] = strings.NewReplacer(readmeProvider, r.prov, readmeTarget, r.tgt).Replace(a)
		}
		name := args[0]
		if name == "init" || name == "table" {
			name += " " + args[1]
		}
		if background {
			name += " &"
			cmd := exec.Command(skiffBinary(t), args...)
			out := &procOut{}
			cmd.Stdout, cmd.Stderr = out, out
			require.NoError(t, cmd.Start(), line)
			r.jobs, r.jobOut = append(r.jobs, cmd), append(r.jobOut, out)
			r.ran = append(r.ran, name)
			continue
		}
		r.ran = append(r.ran, name)
		var out string
		var err error
		runIt := func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			b, e := exec.CommandContext(ctx, skiffBinary(t), args...).CombinedOutput()
			out, err = string(b), e
			return err == nil
		}
		switch name {
		case "status":
			pgtest.Eventually(t, 2*time.Minute, "README: "+line, func() bool { return runIt() && r.statusDone(out) })
		case "compare":
			pgtest.Eventually(t, 2*time.Minute, "README: "+line, runIt)
		default:
			require.True(t, runIt(), "README: %s\n%s", line, out)
		}
		t.Logf("README: %s\n%s", line, out)
	}
}

// stop sends job i SIGTERM and requires it to exit 0 within 30 s.
func (r *readme) stop(i int) {
	t := r.t
	cmd := r.jobs[i]
	if cmd.ProcessState != nil {
		return
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "job %%%d: %s", i+1, r.jobOut[i].String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("job %%%d did not stop on SIGTERM:\n%s", i+1, r.jobOut[i].String())
	}
}

// quickstartPairs: 15 → the newest installed version, and the oldest installed one → 15
// (8.4 with SKIFF_PG_BINDIRS=/tmp/pg84/bin, 10 with the matrix); 15 → 15 when only 15 is.
func quickstartPairs() [][2]string {
	majors := pgtest.Majors()
	var out [][2]string
	if len(majors) > 0 && majors[0] != "15" {
		out = append(out, [2]string{"15", majors[0]})
	}
	if len(majors) > 0 && majors[len(majors)-1] != "15" {
		out = append(out, [2]string{majors[len(majors)-1], "15"})
	}
	if len(out) == 0 {
		out = append(out, [2]string{"15", "15"})
	}
	return out
}

// TestReadmeQuickStart follows README.md literally, as a newcomer would: the Quick start's
// commands as they are written there (parsed out of the README, the example servers replaced
// by a provider database holding the application's tables and an empty target database), the
// application writing meanwhile, then the README's cut-over commands, then the application's
// first INSERT on the new server, which must succeed (its sequences stand past the provider's
// rows), and a row-by-row comparison.
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	quick := readmeBlock(t, "## Quick start")
	cutover := readmeBlock(t, "**Cut-over**")
	for _, vp := range quickstartPairs() {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			testReadmeQuickStart(t, vp[0], vp[1], quick, cutover)
		})
	}
}

func testReadmeQuickStart(t *testing.T, provVersion, tgtVersion string, quick, cutover []string) {
	ctx := context.Background()
	p := &pair{prov: pgtest.Shared(t, provVersion).NewDB(t), tgt: pgtest.Shared(t, tgtVersion).NewDB(t)}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	// The application's database on the old server. The target database is empty.
	exec1(t, prov, `CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');
		CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email varchar(200));
		CREATE UNIQUE INDEX customers_email ON customers (email);
		CREATE TABLE orders (id serial PRIMARY KEY, customer bigint NOT NULL, amount numeric(10,2),
			status order_status NOT NULL DEFAULT 'new', created timestamptz DEFAULT now());
		CREATE INDEX orders_customer ON orders (customer);
		INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@example.com' FROM generate_series(1, 200) g;
		INSERT INTO orders (customer, amount) SELECT 1 + g % 200, g FROM generate_series(1, 1000) g`)

	r := &readme{t: t, prov: p.prov, tgt: p.tgt, statusDone: func(string) bool { return true }}
	t.Cleanup(func() {
		for i := range r.jobs {
			if r.jobs[i].ProcessState == nil {
				_ = r.jobs[i].Process.Signal(syscall.SIGTERM)
				_ = r.jobs[i].Wait()
			}
			if t.Failed() {
				t.Logf("job %%%d output:\n%.20000s", i+1, r.jobOut[i].String())
			}
		}
	})
	r.run(quick)
	require.Equal(t, []string{"init provider", "init target", "table add", "subscribe", "ticker &", "worker &", "status", "compare"}, r.ran,
		"the Quick start's commands")

	// The application writes while skiff replicates.
	for i := range 30 {
		exec1(t, prov, fmt.Sprintf(`INSERT INTO customers (name) VALUES ('new %d');
			INSERT INTO orders (customer, amount, status) SELECT currval('customers_id_seq'), g, 'paid' FROM generate_series(1, 5) g;
			UPDATE orders SET amount = amount + 1, status = 'shipped' WHERE id = %d;
			DELETE FROM orders WHERE id = %d`, i, 1+i, 500+i))
	}

	// The cut-over: writes have stopped.
	pending := regexp.MustCompile(`\b0 events pending\b`)
	lag := regexp.MustCompile(`lag [^,]*, 0 events`)
	r.statusDone = func(out string) bool { return pending.MatchString(out) && lag.MatchString(out) }
	r.ran = nil
	r.run(cutover)
	require.Equal(t, []string{"status", "compare", "kill"}, r.ran, "the cut-over's commands")
	p.compare(t, "customers", "orders")

	// The application now writes to the new server; the same INSERT on the old one (no
	// longer replicated) makes the same rows.
	const first = `INSERT INTO customers (name) VALUES ('first after cut-over');
		INSERT INTO orders (customer, amount, created) VALUES (currval('customers_id_seq'), 1, '2026-01-01 12:00+00')`
	_, err := tgt.Exec(ctx, first)
	require.NoError(t, err, "the first INSERT on the new server")
	exec1(t, prov, first)
	p.compare(t, "customers", "orders")
	var indexes int
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname IN ('customers_email', 'orders_customer', 'customers_pkey', 'orders_pkey')`).Scan(&indexes))
	require.Equal(t, 4, indexes, "the provider's indexes, made after the copy")
	_, err = tgt.Exec(ctx, `INSERT INTO customers (name, email) VALUES ('dup', 'c1@example.com')`)
	require.True(t, err != nil && !errors.Is(err, context.Canceled), "the unique index holds on the target")
}
