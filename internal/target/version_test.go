package target

import (
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
	skiffsql "github.com/skiffdb/skiff/sql"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// migrations returns the target migrations' text by version.
func migrations(t *testing.T) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	files, err := fs.Glob(skiffsql.Target, "target/*.sql")
	require.NoError(t, err)
	for _, f := range files {
		base := strings.TrimPrefix(f, "target/")
		v, err := strconv.ParseInt(base[:strings.IndexByte(base, '_')], 10, 64)
		require.NoError(t, err, f)
		b, err := fs.ReadFile(skiffsql.Target, f)
		require.NoError(t, err)
		out[v] = string(b)
	}
	require.NotEmpty(t, out)
	return out
}

// TestVersionFeatures: each Has method starts at the migration that makes what it names
// (what status and the applier probed the catalog for before they asked for the version).
func TestVersionFeatures(t *testing.T) {
	t.Parallel()
	ms := migrations(t)
	first := func(re string) int64 {
		r := regexp.MustCompile(re)
		for v := int64(1); v <= int64(len(ms)); v++ {
			up, _, _ := strings.Cut(ms[v], "-- +goose Down")
			if r.MatchString(up) {
				return v
			}
		}
		t.Fatalf("no target migration makes %s", re)
		return 0
	}
	for _, c := range []struct {
		what string
		has  func(Version) bool
		re   string
	}{
		{"installed", Version.Installed, `CREATE TABLE skiff\.subscription\b`},
		{"copy progress", Version.HasCopyProgress, `ADD COLUMN copy_rows\b`},
		{"copy backlog", Version.HasBacklog, `CREATE TABLE skiff\.copy_backlog\b`},
		{"identity", Version.HasIdentity, `CREATE TABLE skiff\.target\b`},
		{"copy error", Version.HasCopyError, `ADD COLUMN copy_error\b`},
		{"dead letters", Version.HasDeadLetter, `CREATE TABLE skiff\.dead_letter\b`},
		{"last error event", Version.HasDeadLetter, `ADD COLUMN last_error_event\b`},
		{"schema map", Version.HasSchemaMap, `CREATE TABLE skiff\.schema_map\b`},
		{"merge", Version.HasMerge, `ADD COLUMN on_conflict\b`},
	} {
		v := Version(first(c.re))
		require.False(t, c.has(v-1), "%s before version %d", c.what, v)
		require.True(t, c.has(v), "%s from version %d", c.what, v)
	}
}

// TestEveryVersion runs the statements that depend on the schema's version on a target
// schema taken down one migration at a time (each migration's Down, as uninstall runs it),
// from the latest to the first: ReadVersion reads the version internal/migrate records, and
// the columns each statement names exist in it.
func TestEveryVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := migratetest.NewDB(t, "", migrate.Target)
	conn, err := pg.Connect(ctx, url, "skiff-test")
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.WithoutCancel(ctx)) })

	k := Key{Queue: "q", Consumer: "c"}
	tick := int64(7)
	id, err := CreateSubscription(ctx, conn, k, "u@h:5432/p", tick)
	require.NoError(t, err)
	src := change.Table{Schema: "public", Name: "t"}
	require.NoError(t, AddTable(ctx, conn, id, change.Route{Source: src, Dest: src, State: change.StateCopying}))

	latest, err := migrate.Latest(migrate.Target)
	require.NoError(t, err)
	ms := migrations(t)
	for want := Version(latest); want >= 1; want-- {
		v, err := ReadVersion(ctx, conn)
		require.NoError(t, err)
		require.Equal(t, want, v)

		subs, err := SubscriptionStates(ctx, conn, v)
		require.NoError(t, err, "version %d", v)
		require.Len(t, subs, 1)
		require.Equal(t, k, subs[0].Key)
		tables, err := TableStates(ctx, conn, v)
		require.NoError(t, err, "version %d", v)
		require.Len(t, tables, 1)
		require.Equal(t, `public.t`, tables[0].Source)
		event := int64(42)
		require.NoError(t, RecordError(ctx, conn, v, id, fmt.Sprintf("failed at %d", v), &event), "version %d", v)
		ev, msg, err := LastError(ctx, conn, v, k)
		require.NoError(t, err, "version %d", v)
		require.Equal(t, fmt.Sprintf("failed at %d", v), *msg)
		if v.HasDeadLetter() {
			require.Equal(t, event, *ev)
		} else {
			require.Nil(t, ev)
		}
		ok, err := RecordBatch(ctx, conn, v, id, Applied{BatchID: int64(v), Prev: change.Position{Tick: tick}, End: change.Position{Tick: tick + 1}})
		require.NoError(t, err, "version %d", v)
		require.True(t, ok, "version %d", v)
		tick++
		pos, err := Position(ctx, conn, id)
		require.NoError(t, err)
		require.Equal(t, change.Position{Tick: tick}, pos)
		require.NoError(t, func() error {
			if !v.HasSchemaMap() {
				return nil
			}
			return SetSchemaMap(ctx, conn, id, map[string]string{"legacy": "app"})
		}(), "version %d", v)
		sm, err := SchemaMap(ctx, conn, v, k)
		require.NoError(t, err, "version %d", v)
		if v.HasSchemaMap() {
			require.Equal(t, map[string]string{"legacy": "app"}, sm)
		} else {
			require.Empty(t, sm)
		}
		require.NoError(t, func() error {
			if !v.HasMerge() {
				return nil
			}
			if err := SetMergeMode(ctx, conn, id, "keep-local"); err != nil {
				return err
			}
			return CountConflicts(ctx, conn, id, 2, "insert of (id=1)")
		}(), "version %d", v)
		m, err := MergeOf(ctx, conn, v, id)
		require.NoError(t, err, "version %d", v)
		ms8, err := Merges(ctx, conn, v)
		require.NoError(t, err, "version %d", v)
		if v.HasMerge() {
			require.Equal(t, "keep-local", m.Mode)
			require.Equal(t, int64(2), m.Conflicts)
			require.Equal(t, m.Conflicts, ms8[id].Conflicts)
		} else {
			require.Equal(t, Merge{}, m)
			require.Empty(t, ms8)
		}
		if v.HasBacklog() {
			require.NoError(t, AppendBacklog(ctx, conn, id, src, []change.Event{{ID: 1, Op: change.Insert, Table: src}}))
			n, err := Backlogged(ctx, conn, id)
			require.NoError(t, err)
			require.Equal(t, []change.Table{src}, n)
		}

		_, down, ok := strings.Cut(ms[int64(v)], "-- +goose Down")
		require.True(t, ok, "migration %d has a Down section", v)
		for _, stmt := range strings.Split(down, ";") {
			if strings.TrimSpace(stripComments(stmt)) == "" {
				continue
			}
			_, err := conn.Exec(ctx, stmt)
			require.NoError(t, err, "version %d down: %s", v, stmt)
		}
		_, err = conn.Exec(ctx, `DELETE FROM skiff.target_migrations WHERE version_id = $1`, int64(v))
		require.NoError(t, err)
	}
	v, err := ReadVersion(ctx, conn)
	require.NoError(t, err)
	require.False(t, v.Installed())
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
