package skiffcli

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
)

// TestNotInTransaction: what skiff execute refuses before it connects, and what it lets
// through.
func TestNotInTransaction(t *testing.T) {
	t.Parallel()
	for sql, refused := range map[string]bool{
		"CREATE INDEX CONCURRENTLY i ON t (a)":          true,
		"create unique index concurrently i ON t (a)":   true,
		"DROP INDEX CONCURRENTLY i":                     true,
		"REINDEX (VERBOSE) TABLE CONCURRENTLY t":        true,
		"REINDEX DATABASE app":                          true,
		"VACUUM (ANALYZE) t":                            true,
		"CREATE DATABASE x":                             true,
		"ALTER SYSTEM SET work_mem = '1MB'":             true,
		"CLUSTER":                                       true,
		"BEGIN":                                         true,
		"commit":                                        true,
		"ROLLBACK":                                      true,
		"SET search_path = app":                         true,
		"RESET ALL":                                     true,
		"COPY t FROM STDIN":                             true,
		`\i other.sql`:                                  true,
		"CREATE INDEX i ON t (a)":                       false,
		`CREATE INDEX "concurrently" ON t (a)`:          false,
		"ALTER TABLE t ADD COLUMN c int DEFAULT 1":      false,
		"CLUSTER t USING i":                             false,
		"SET LOCAL search_path = app":                   false,
		"SET CONSTRAINTS ALL DEFERRED":                  false,
		"ROLLBACK TO SAVEPOINT s":                       false,
		"/* VACUUM */ CREATE TABLE vacuum_log (id int)": false,
	} {
		why := notInTransaction(pg.Statement{SQL: sql, Line: 1})
		require.Equal(t, refused, why != "", "%s: %q", sql, why)
	}
}
