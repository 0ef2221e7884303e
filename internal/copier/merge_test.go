package copier_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestMergeCopy: the copy of a merged (shared) destination truncates nothing and writes the
// provider's rows by key: rows of other providers stay; a key the target holds with the same
// values is no conflict; one it holds with other values is a conflict, which fails the copy
// under error (nothing written), is overwritten under apply-remote and kept under keep-local,
// and counted (Hooks.Conflicts). On a 15 target (ON CONFLICT) and, when installed, a target
// before 9.5 (UPDATE … FROM and INSERT … WHERE NOT EXISTS).
func TestMergeCopy(t *testing.T) {
	t.Parallel()
	versions := []string{"15"}
	if majors := pgtest.Majors(); len(majors) > 0 {
		if f, err := strconv.ParseFloat(majors[len(majors)-1], 64); err == nil && f < 9.5 {
			versions = append(versions, majors[len(majors)-1])
		}
	}
	for _, tv := range versions {
		for _, mode := range []string{"error", "apply-remote", "keep-local"} {
			t.Run(tv+"/"+mode, func(t *testing.T) {
				t.Parallel()
				testMergeCopy(t, tv, mode)
			})
		}
	}
}

func testMergeCopy(t *testing.T, targetVersion, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, tg := pgtest.Shared(t, "15").NewDB(t), pgtest.Shared(t, targetVersion).NewDB(t)
	pconn, tconn := pgtest.Connect(t, p), pgtest.Connect(t, tg)
	const ddl = `CREATE TABLE "M t" (id int PRIMARY KEY, v text, n int NOT NULL)`
	for _, c := range []*pgx.Conn{pconn, tconn} {
		_, err := c.Exec(ctx, ddl)
		require.NoError(t, err)
	}
	_, err := pconn.Exec(ctx, `INSERT INTO "M t" SELECT g, 'p', g FROM generate_series(1, 100) g`)
	require.NoError(t, err)
	for _, q := range []string{
		`INSERT INTO "M t" SELECT g, 'other', 0 FROM generate_series(50, 60) g`,     // conflicts
		`INSERT INTO "M t" SELECT g, 'p', g FROM generate_series(61, 70) g`,         // same values
		`INSERT INTO "M t" SELECT g, 'other', 0 FROM generate_series(1000, 1009) g`, // another provider's only
	} {
		_, err := tconn.Exec(ctx, q)
		require.NoError(t, err)
	}
	pc, tc := configs(t, p, tg)
	var conflicts int64
	var last string
	tbl := change.Table{Schema: "public", Name: "M t"}
	res, err := copier.Copy(ctx, copier.Config{Provider: pc, Target: tc, Hooks: copier.Hooks{
		Merge: func(context.Context, *pgx.Conn, copier.Table) (string, error) { return mode, nil },
		Conflicts: func(_ context.Context, _ pgx.Tx, _ copier.Table, n int64, l string) error {
			conflicts, last = conflicts+n, l
			return nil
		},
	}}, []copier.Table{{Source: tbl, Dest: tbl}})
	count := func(where string) int {
		var n int
		require.NoError(t, tconn.QueryRow(ctx, `SELECT count(*) FROM "M t" WHERE `+where).Scan(&n))
		return n
	}
	if mode == "error" {
		require.Error(t, err)
		require.ErrorContains(t, res[0].Err, `merge conflict on table "public"."M t": 11 of the provider's rows`)
		require.ErrorContains(t, res[0].Err, "key (id) = (50)")
		require.Equal(t, 31, count("true"), "nothing written")
		return
	}
	require.NoError(t, err)
	require.Equal(t, int64(11), conflicts, "only the keys held with other values")
	require.True(t, strings.HasSuffix(last, mode), last)
	require.Equal(t, 10, count(`id >= 1000 AND v = 'other'`), "other providers' rows stay")
	require.Equal(t, 110, count("true"))
	if mode == "apply-remote" {
		require.Equal(t, 100, count(`v = 'p' AND n = id`))
	} else {
		require.Equal(t, 11, count(`id BETWEEN 50 AND 60 AND v = 'other'`), "keep-local keeps the target's rows")
		require.Equal(t, 89, count(`v = 'p' AND n = id`))
	}
}
