package catalog_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestReplicaIdentity reads each kind of replica identity (9.4+) with its columns in index
// order: default (the primary key, INCLUDE columns left out on 11+), USING INDEX, FULL with
// and without a primary key, NOTHING.
func TestReplicaIdentity(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			conn := connect(t, pgtest.Shared(t, v).NewDB(t))
			version := pg.ServerVersion(conn)
			if version < 90400 {
				t.Skip("replica identity arrives in 9.4")
			}
			include := ""
			if version >= 110000 {
				include = " INCLUDE (c)"
			}
			exec(t, conn, `CREATE TABLE d (a int, "B b" int, c int, PRIMARY KEY ("B b", a)`+include+`)`)
			exec(t, conn, `CREATE TABLE i (a int NOT NULL, b int NOT NULL, c int PRIMARY KEY)`)
			exec(t, conn, `CREATE UNIQUE INDEX i_ba ON i (b, a)`)
			exec(t, conn, `ALTER TABLE i REPLICA IDENTITY USING INDEX i_ba`)
			exec(t, conn, `CREATE TABLE f (a int, b int PRIMARY KEY)`)
			exec(t, conn, `ALTER TABLE f REPLICA IDENTITY FULL`)
			exec(t, conn, `CREATE TABLE fn (a int)`)
			exec(t, conn, `ALTER TABLE fn REPLICA IDENTITY FULL`)
			exec(t, conn, `CREATE TABLE n (a int PRIMARY KEY)`)
			exec(t, conn, `ALTER TABLE n REPLICA IDENTITY NOTHING`)
			for name, want := range map[string]struct {
				ident byte
				cols  []string
			}{
				"d": {'d', []string{"B b", "a"}}, "i": {'i', []string{"b", "a"}}, "f": {'f', []string{"b"}},
				"fn": {'f', []string{}}, "n": {'n', []string{}},
			} {
				oid, err := catalog.Lookup(ctx, conn, change.Table{Schema: "public", Name: name}, "")
				require.NoError(t, err)
				ident, cols, err := catalog.ReplicaIdentity(ctx, conn, oid)
				require.NoError(t, err)
				require.Equal(t, want.ident, ident, name)
				require.Equal(t, want.cols, cols, name)
			}
		})
	}
}
