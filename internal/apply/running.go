package apply

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// WorkerRunning reports whether a worker holds subscription subID's lock on the target conn
// is connected to (the session advisory lock Open takes, held as long as the worker runs, in
// retry backoff too), and describes the holder (backend pid, application, worker host:pid).
func WorkerRunning(ctx context.Context, conn *pgx.Conn, subID int32) (bool, string, error) {
	var held bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
		WHERE l.locktype = 'advisory' AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid AND l.objsubid = 2 AND l.granted
		  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))`,
		int64(LockClass), int64(subID)).Scan(&held)
	if err != nil || !held {
		return false, "", err
	}
	return true, lockHolder(ctx, conn, subID), nil
}
