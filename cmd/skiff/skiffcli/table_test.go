package skiffcli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// skiff runs the command line and returns its exit code, stdout and stderr.
// A panic fails the test (and names the command) instead of ending the test binary.
func skiff(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("skiff %s panicked: %v\nstderr: %s", strings.Join(args, " "), p, errb.String())
		}
	}()
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// oneLineError checks that a failed command wrote exactly one log line holding want.
func oneLineError(t *testing.T, code int, stderr, want string) {
	t.Helper()
	require.Equal(t, 1, code, stderr)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(stderr), "\n")+1, "one line: %s", stderr)
	require.Contains(t, stderr, want)
}

// initProvider makes a fresh database, installs the provider schema through `skiff init
// provider` and returns its URL and a connection closed when the test ends.
func initProvider(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	return initProviderOn(t, "")
}

// initProviderOn is initProvider on the shared server of a version ("" = the default).
func initProviderOn(t *testing.T, version string) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.Shared(t, version).NewDB(t)
	code, _, stderr := skiff(t, "init", "provider", "--db", url)
	require.Zero(t, code, stderr)
	conn, err := pg.Connect(context.Background(), url, "skiff-test")
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return url, conn
}

func TestTableAddRemove(t *testing.T) {
	t.Parallel()
	url, conn := initProvider(t)
	ctx := context.Background()
	for _, sql := range []string{
		`CREATE SCHEMA "My Schema"`,
		`CREATE TABLE "My Schema"."Odd Table" (id int PRIMARY KEY, v text)`,
		`CREATE TABLE plain (id int PRIMARY KEY, status text)`,
		`CREATE TABLE nokey (a int NOT NULL, b int NOT NULL, UNIQUE (a, b))`,
		`CREATE SEQUENCE seq1`,
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err)
	}

	code, stdout, stderr := skiff(t, "table", "add", "--db", url, "--queue", "q1", `"My Schema"."Odd Table"`, "seq1")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `table "My Schema"."Odd Table": captured by queue q1`)
	require.Contains(t, stdout, `sequence "public"."seq1": captured by queue q1`)

	code, _, stderr = skiff(t, "table", "add", "--db", url, "--queue", "q1", "--where", "status <> 'x'", "plain")
	require.Zero(t, code, stderr)
	code, _, stderr = skiff(t, "table", "add", "--db", url, "--queue", "q1", "--key", "a, b", "nokey")
	require.Zero(t, code, stderr)

	code, _, stderr = skiff(t, "table", "add", "--db", url, "--queue", "q1", "plain")
	oneLineError(t, code, stderr, `table \"public\".\"plain\" in queue q1: table is already captured by this queue`)
	code, stdout, stderr = skiff(t, "table", "add", "--db", url, "--queue", "q1", "--refresh", "plain")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "trigger regenerated")

	code, _, stderr = skiff(t, "table", "add", "--db", url, "--queue", "q1", "missing")
	oneLineError(t, code, stderr, "table missing: no such table")

	_, err := conn.Exec(ctx, `CREATE TABLE nokey2 (a int)`)
	require.NoError(t, err)
	code, _, stderr = skiff(t, "table", "add", "--db", url, "--queue", "q1", "nokey2")
	oneLineError(t, code, stderr, `table \"public\".\"nokey2\": table has no primary key; give its identifying columns with --key col,col`)

	code, stdout, stderr = skiff(t, "table", "remove", "--db", url, "--queue", "q1", "plain", "seq1")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `"public"."plain": no longer captured by queue q1`)
	code, _, stderr = skiff(t, "table", "remove", "--db", url, "--queue", "q1", "plain")
	oneLineError(t, code, stderr, "table is not captured by this queue")

	// Server down: a closed port.
	srv := pgtest.New(t, pgtest.Options{})
	down := srv.URL("postgres")
	srv.Stop()
	code, _, stderr = skiff(t, "table", "add", "--db", down, "--queue", "q1", "plain")
	oneLineError(t, code, stderr, "connect to postgres@")
}

// TestInitWarnsOfTriggersFiringFirst: init provider names the captures still under the
// trigger names of an older skiff whose table has a trigger of the user's that fires before
// them (queue.CapturesFiredBefore), with the statements that move them; a capture made now
// is not named.
func TestInitWarnsOfTriggersFiringFirst(t *testing.T) {
	t.Parallel()
	url, conn := initProvider(t)
	ctx := context.Background()
	for _, sql := range []string{
		`CREATE TABLE "Old t" (id int PRIMARY KEY, v text)`,
		`CREATE TABLE fresh (id int PRIMARY KEY, v text)`,
		`CREATE FUNCTION fix() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`,
		`CREATE TRIGGER audit_fix AFTER INSERT ON "Old t" FOR EACH ROW EXECUTE PROCEDURE fix()`,
		`CREATE TRIGGER audit_fix AFTER INSERT ON fresh FOR EACH ROW EXECUTE PROCEDURE fix()`,
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	code, _, stderr := skiff(t, "table", "add", "--db", url, "--queue", "q1", `"Old t"`, "fresh")
	require.Zero(t, code, stderr)
	var qid int
	require.NoError(t, conn.QueryRow(ctx, `SELECT skiff.queue_id('q1')`).Scan(&qid))
	for _, sql := range []string{ // "Old t" as an older skiff captured it
		fmt.Sprintf(`ALTER TRIGGER "!skiff_capture_q%d" ON "Old t" RENAME TO skiff_capture_q%d`, qid, qid),
		fmt.Sprintf(`ALTER TRIGGER "!skiff_truncate_q%d" ON "Old t" RENAME TO skiff_truncate_q%d`, qid, qid),
		`UPDATE skiff.captured_table SET row_trigger = 'skiff_capture_q' || queue_id, trunc_trigger = 'skiff_truncate_q' || queue_id WHERE table_name = 'Old t'`,
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	code, stdout, stderr := skiff(t, "init", "provider", "--db", url)
	require.Zero(t, code, stderr)
	out := stdout + stderr
	require.Contains(t, out, "capture triggers fire after triggers of the table's own")
	require.Contains(t, out, "audit_fix")
	require.Contains(t, out, fmt.Sprintf(`DROP TRIGGER \"skiff_truncate_q%d\" ON \"public\".\"Old t\"; then at once skiff table add --db PROVIDER --queue q1 --refresh \"public\".\"Old t\"`, qid))
	require.NotContains(t, out, `\"fresh\"`, "a capture made now")
	require.NotContains(t, out, "writes not captured")

	// A capture trigger disabled: init provider says so too (as status and the ticker do).
	_, err := conn.Exec(ctx, `ALTER TABLE fresh DISABLE TRIGGER USER`)
	require.NoError(t, err)
	code, stdout, stderr = skiff(t, "init", "provider", "--db", url)
	require.Zero(t, code, stderr)
	out = stdout + stderr
	require.Contains(t, out, "writes not captured")
	require.Contains(t, out, `its INSERTs, UPDATEs, DELETEs, TRUNCATEs are not captured`)
}
