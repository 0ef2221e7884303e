package pg

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is a connection or a transaction: what *pgx.Conn, pgx.Tx and *pgxpool.Pool all have.
// It is skiff's one DB interface: the packages that send SQL take it wherever they need no
// more (a transaction of their own, the wire-level connection).
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

var (
	_ DB = (*pgx.Conn)(nil)
	_ DB = pgx.Tx(nil)
)

// VersionOf returns server_version_num of the server behind db: from the server_version
// parameter of the connection when db is a *pgx.Conn or a pgx.Tx (no round trip), else
// (a pool) by asking the server.
func VersionOf(ctx context.Context, db DB) (int, error) {
	switch c := db.(type) {
	case interface{ PgConn() *pgconn.PgConn }:
		return ServerVersionOf(c.PgConn()), nil
	case interface{ Conn() *pgx.Conn }:
		return ServerVersion(c.Conn()), nil
	}
	var s string
	if err := db.QueryRow(ctx, `SELECT pg_catalog.current_setting('server_version_num')`).Scan(&s); err != nil {
		return 0, fmt.Errorf("server version: %w", err)
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("server version %q: %w", s, err)
	}
	return v, nil
}
