package tabledef

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// CreateLike creates table t on the target from the definition of table like, in the
// caller's transaction (a handler's child made on demand, handlers.TableMaker): when like is a
// partitioned table, a partition of it, FOR VALUES bound ("FROM (…) TO (…)", "IN (…)",
// "DEFAULT"); otherwise CREATE TABLE t (LIKE like INCLUDING DEFAULTS INCLUDING CONSTRAINTS
// INCLUDING INDEXES), which every version from 8.4 has. An error names both tables.
func CreateLike(ctx context.Context, db pg.DB, t, like change.Table, bound string) error {
	_, err := catalog.Lookup(ctx, db, like, "p")
	partitioned := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("create %s like %s: %w", t, like, err)
	}
	if !partitioned {
		if _, err := catalog.Lookup(ctx, db, like, "r"); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("create %s like %s: table %s does not exist on the target", t, like, like)
			}
			return fmt.Errorf("create %s like %s: %w", t, like, err)
		}
	}
	stmt := "CREATE TABLE " + t.String() + " (LIKE " + like.String() + " INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
	if partitioned {
		if bound == "" {
			return fmt.Errorf("create %s: %s is partitioned and the handler gives no partition bound", t, like)
		}
		stmt = "CREATE TABLE " + t.String() + " PARTITION OF " + like.String() + " FOR VALUES " + bound
		if bound == "DEFAULT" {
			stmt = "CREATE TABLE " + t.String() + " PARTITION OF " + like.String() + " DEFAULT"
		}
	}
	var conn *pgx.Conn
	switch d := db.(type) {
	case *pgx.Conn:
		conn = d
	case pgx.Tx:
		conn = d.Conn()
	default:
		return fmt.Errorf("create %s: a connection or a transaction is needed, not %T", t, db)
	}
	if _, err := pg.Exec(ctx, conn.PgConn(), stmt); err != nil {
		return fmt.Errorf("create %s like %s: %s: %w", t, like, stmt, err)
	}
	return nil
}
