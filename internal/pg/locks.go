package pg

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backend is another session of a server, as pg_stat_activity shows it: what a message names
// when that session holds a lock skiff waits for.
type Backend struct {
	PID         int32
	User        string
	Application string        // "" before 9.0
	State       string        // "" before 9.2
	Mode        string        // the lock mode it holds, e.g. AccessShareLock
	XactAge     time.Duration // age of its transaction, 0 when none
	Query       string        // its current or (9.2+) last statement, cut to 200 characters
}

// String describes the backend in one line, for error messages.
func (b Backend) String() string {
	var parts []string
	if b.User != "" {
		parts = append(parts, "user "+b.User)
	}
	if b.Application != "" {
		parts = append(parts, "application "+b.Application)
	}
	if b.State != "" {
		parts = append(parts, b.State)
	}
	if b.XactAge > 0 {
		parts = append(parts, "transaction open for "+b.XactAge.Round(time.Second).String())
	}
	if b.Mode != "" {
		parts = append(parts, "holds "+b.Mode)
	}
	if b.Query != "" {
		parts = append(parts, "query: "+b.Query)
	}
	return fmt.Sprintf("pid %d (%s)", b.PID, strings.Join(parts, ", "))
}

// RelationLockHolders lists the other sessions of conn's database that hold a lock on table
// schema.name, oldest transaction first, at most 5. pg_stat_activity's columns changed over
// the versions: procpid/current_query before 9.2, application_name from 9.0, state from 9.2.
func RelationLockHolders(ctx context.Context, conn *pgx.Conn, schema, name string) ([]Backend, error) {
	v := ServerVersion(conn)
	pid, app, state, query := "a.pid", "a.application_name", "a.state", "a.query"
	if v < 90200 {
		pid, state, query = "a.procpid", "''", "a.current_query"
	}
	if v < 90000 {
		app = "''"
	}
	rows, err := conn.Query(ctx, `SELECT l.pid, l.mode, coalesce(a.usename::text, ''), coalesce(`+app+`, ''), coalesce(`+state+`, ''),
			coalesce(extract(epoch FROM now() - a.xact_start), 0)::float8, coalesce(`+query+`, '')
		FROM pg_catalog.pg_locks l
		LEFT JOIN pg_catalog.pg_stat_activity a ON `+pid+` = l.pid
		WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
		  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
		  AND l.relation = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2)
		ORDER BY a.xact_start, l.pid
		LIMIT 5`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("lock holders of %s.%s: %w", schema, name, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Backend, error) {
		var b Backend
		var age float64
		err := r.Scan(&b.PID, &b.Mode, &b.User, &b.Application, &b.State, &age, &b.Query)
		b.XactAge = time.Duration(age * float64(time.Second))
		b.Query = strings.Join(strings.Fields(b.Query), " ")
		if r := []rune(b.Query); len(r) > 200 {
			b.Query = string(r[:199]) + "…"
		}
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("lock holders of %s.%s: %w", schema, name, err)
	}
	return out, nil
}
