package queue

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestBlockWrites: on every installed version (8.4 with SKIFF_PG_BINDIRS), the write block of
// skiff switchover refuses INSERT, UPDATE, DELETE and TRUNCATE of a captured table and of the
// children of one captured with its children, with SQLSTATE 25006 and the message; a replica
// session (a worker's) writes through it; unblocking makes the tables writable again.
func TestBlockWrites(t *testing.T) {
	t.Parallel()
	versions := pgtest.Majors()
	if len(versions) == 0 {
		versions = []string{""}
	}
	for _, v := range versions {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			c := p.conn(t)
			exec(t, c, `CREATE TABLE plain (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE TABLE parent (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE TABLE child (CHECK (id > 100)) INHERITS (parent)`)
			exec(t, c, `CREATE TABLE other (id int PRIMARY KEY)`)
			_, err := AddTables(ctx, c, "q", []TableSpec{{Name: "plain"}, {Name: "parent", KeyNotUnique: true}})
			require.NoError(t, err)

			var blocked []change.Table
			require.NoError(t, pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				var err error
				blocked, err = BlockWrites(ctx, tx, "q", "this database moved to new-host:5432/app")
				return err
			}))
			require.Equal(t, []change.Table{{Schema: "public", Name: "child"}, {Schema: "public", Name: "parent"}, {Schema: "public", Name: "plain"}}, blocked)
			again, err := BlockedTables(ctx, c, "q")
			require.NoError(t, err)
			require.Equal(t, blocked, again)

			for _, sql := range []string{
				`INSERT INTO plain VALUES (1, 'x')`, `UPDATE plain SET v = 'y'`, `DELETE FROM plain`, `TRUNCATE plain`,
				`INSERT INTO parent VALUES (1, 'x')`, `INSERT INTO child VALUES (101, 'x')`, `UPDATE parent SET v = 'y'`,
				`TRUNCATE child`,
			} {
				_, err := c.Exec(ctx, sql)
				var pgErr *pgconn.PgError
				require.True(t, errors.As(err, &pgErr), "%s: %v", sql, err)
				require.Equal(t, "25006", pgErr.Code, sql)
				require.Contains(t, pgErr.Message, "is blocked for writes by skiff switchover: this database moved to new-host:5432/app", sql)
			}
			exec(t, c, `INSERT INTO other VALUES (1)`) // not in the queue

			// A worker's session: neither the block nor the capture fires.
			require.NoError(t, pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO plain VALUES (2, 'replica'); INSERT INTO child VALUES (102, 'replica')`)
				return err
			}))

			done, err := UnblockWrites(ctx, c, "q")
			require.NoError(t, err)
			require.Equal(t, blocked, done)
			exec(t, c, `INSERT INTO plain VALUES (3, 'x'); INSERT INTO child VALUES (103, 'x'); TRUNCATE plain`)
			done, err = UnblockWrites(ctx, c, "q")
			require.NoError(t, err)
			require.Empty(t, done)
		})
	}
}
