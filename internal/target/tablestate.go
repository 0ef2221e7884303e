package target

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// TableState is a row of skiff.table_state as skiff status shows it.
type TableState struct {
	SubID int32
	// Source and Dest are the provider's and the target's table, quoted by the server
	// (quote_ident(schema) || '.' || quote_ident(name)).
	Source, Dest string
	State        string // copying, catching-up or in-sync
	Since        time.Time
	CopySnapshot string // "" when none
	// CopyRows and CopyBytes are the copy's progress (0 before version 2).
	CopyRows, CopyBytes int64
	// CopyBacklog counts the events held for the table while it copies (0 before version 3).
	CopyBacklog int64
	// CopyError is the error of the table's last failed copy, "" when none (version 5).
	CopyError   string
	CopyErrorAt *time.Time
	// Handler is the table's handler, "" for none ("skip": the table is skipped).
	Handler string
}

// subWhere selects the table states of the subscription named by $1 (queue) and $2
// (consumer), table_state aliased ts.
const subWhere = `ts.sub_id = (SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2)`

// TableStates lists the table states of every subscription, by subscription id and source
// table. v says which columns the schema has.
func TableStates(ctx context.Context, db pg.DB, v Version) ([]TableState, error) {
	progress := "0::bigint, 0::bigint"
	if v.HasCopyProgress() {
		progress = "coalesce(copy_rows, 0), coalesce(copy_bytes, 0)"
	}
	backlog := "0::bigint" // target schema before version 3
	if v.HasBacklog() {
		backlog = `(SELECT count(*) FROM skiff.copy_backlog b
			WHERE b.sub_id = ts.sub_id AND b.source_schema = ts.source_schema AND b.source_name = ts.source_name)`
	}
	copyError := "'', NULL::timestamptz" // target schema before version 5
	if v.HasCopyError() {
		copyError = "coalesce(copy_error, ''), copy_error_at"
	}
	rows, err := db.Query(ctx, `SELECT sub_id, quote_ident(source_schema) || '.' || quote_ident(source_name),
		quote_ident(dest_schema) || '.' || quote_ident(dest_name), state, state_changed_at, coalesce(copy_snapshot, ''), `+progress+`, `+backlog+`,
		`+copyError+`, coalesce(handler, '')
		FROM skiff.table_state ts ORDER BY sub_id, source_schema, source_name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (TableState, error) {
		var t TableState
		err := r.Scan(&t.SubID, &t.Source, &t.Dest, &t.State, &t.Since, &t.CopySnapshot, &t.CopyRows, &t.CopyBytes, &t.CopyBacklog,
			&t.CopyError, &t.CopyErrorAt, &t.Handler)
		return t, err
	})
}

// Routes returns the tables of subscription id, by source table: every field of change.Route.
func Routes(ctx context.Context, db pg.DB, id int32) ([]change.Route, error) {
	rows, err := db.Query(ctx, routesSQL, id)
	if err != nil {
		return nil, err
	}
	return scanRoutes(rows)
}

const routesSQL = `SELECT source_schema, source_name, dest_schema, dest_name, state,
			coalesce(handler, ''), coalesce(handler_config, ''), coalesce(copy_snapshot, '')
		FROM skiff.table_state WHERE sub_id = $1 ORDER BY source_schema, source_name`

func scanRoutes(rows pgx.Rows) ([]change.Route, error) {
	var out []change.Route
	for rows.Next() {
		var r change.Route
		var state string
		if err := rows.Scan(&r.Source.Schema, &r.Source.Name, &r.Dest.Schema, &r.Dest.Name, &state, &r.Handler, &r.Config, &r.CopyPoint); err != nil {
			rows.Close()
			return nil, err
		}
		r.State = change.TableState(state)
		out = append(out, r)
	}
	return out, rows.Err()
}

// RoutesOf returns the tables of subscription k, by source table: Source, Dest, Handler and
// Config of each.
func RoutesOf(ctx context.Context, db pg.DB, k Key) ([]change.Route, error) {
	rows, err := db.Query(ctx, `SELECT t.source_schema, t.source_name, t.dest_schema, t.dest_name,
			coalesce(t.handler, ''), coalesce(t.handler_config, '')
		FROM skiff.table_state t JOIN skiff.subscription s ON s.sub_id = t.sub_id
		WHERE s.queue = $1 AND s.consumer = $2 ORDER BY 1, 2`, k.Queue, k.Consumer)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Route, error) {
		var rt change.Route
		err := r.Scan(&rt.Source.Schema, &rt.Source.Name, &rt.Dest.Schema, &rt.Dest.Name, &rt.Handler, &rt.Config)
		return rt, err
	})
}

// DestSharer is another subscription writing a destination table (DestSharers).
type DestSharer struct {
	Key
	Source string // the source table it replicates into the destination, quoted
	Merge  string // its --on-conflict mode, "" when it is not merged (always before version 8)
}

// DestSharers lists the subscriptions other than id, of any queue, that write table dest.
func DestSharers(ctx context.Context, db pg.DB, v Version, id int32, dest change.Table) ([]DestSharer, error) {
	mode := "''"
	if v.HasMerge() {
		mode = "coalesce(s.on_conflict, '')"
	}
	rows, err := db.Query(ctx, `SELECT s.queue, s.consumer, quote_ident(t.source_schema) || '.' || quote_ident(t.source_name), `+mode+`
		FROM skiff.table_state t JOIN skiff.subscription s ON s.sub_id = t.sub_id
		WHERE t.sub_id <> $1 AND t.dest_schema = $2 AND t.dest_name = $3 ORDER BY 1, 2`, id, dest.Schema, dest.Name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DestSharer, error) {
		var d DestSharer
		err := r.Scan(&d.Queue, &d.Consumer, &d.Source, &d.Merge)
		return d, err
	})
}

// AddTable records a table of subscription id with its route (destination, state, handler
// and its configuration, copy snapshot).
func AddTable(ctx context.Context, db pg.DB, id int32, r change.Route) error {
	_, err := db.Exec(ctx, `INSERT INTO skiff.table_state
		(sub_id, source_schema, source_name, dest_schema, dest_name, state, handler, handler_config, copy_snapshot)
		VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), NULLIF($9, ''))`,
		id, r.Source.Schema, r.Source.Name, r.Dest.Schema, r.Dest.Name, string(r.State), r.Handler, r.Config, r.CopyPoint)
	return err
}

// CountTables returns how many tables subscription id has.
func CountTables(ctx context.Context, db pg.DB, id int32) (int, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT count(*) FROM skiff.table_state WHERE sub_id = $1`, id).Scan(&n)
	return n, err
}

// Sources lists the source tables of subscription k, whatever their state, but for the
// skipped ones (handler "skip", handlers.SkipName: the target takes nothing of them, not
// even the sequences they draw from).
func Sources(ctx context.Context, db pg.DB, k Key) ([]change.Table, error) {
	rows, err := db.Query(ctx, `SELECT DISTINCT source_schema, source_name FROM skiff.table_state ts
		WHERE `+subWhere+` AND coalesce(ts.handler, '') <> 'skip' ORDER BY 1, 2`, k.Queue, k.Consumer)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanTable)
}

// ToCopy lists the tables of subscription k in state copying, by source table: Source, Dest,
// Handler and Config of each.
func ToCopy(ctx context.Context, db pg.DB, k Key) ([]change.Route, error) {
	rows, err := db.Query(ctx, `SELECT source_schema, source_name, dest_schema, dest_name,
			coalesce(handler, ''), coalesce(handler_config, '') FROM skiff.table_state ts
		WHERE `+subWhere+` AND ts.state = 'copying' ORDER BY 1, 2`, k.Queue, k.Consumer)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Route, error) {
		var t change.Route
		err := r.Scan(&t.Source.Schema, &t.Source.Name, &t.Dest.Schema, &t.Dest.Name, &t.Handler, &t.Config)
		return t, err
	})
}

// CopyingSince returns when each table of subscription k in state copying entered it.
func CopyingSince(ctx context.Context, db pg.DB, k Key) (map[change.Table]time.Time, error) {
	rows, err := db.Query(ctx, `SELECT source_schema, source_name, state_changed_at FROM skiff.table_state ts
		WHERE `+subWhere+` AND ts.state = 'copying'`, k.Queue, k.Consumer)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[change.Table]time.Time{}
	for rows.Next() {
		var t change.Table
		var at time.Time
		if err := rows.Scan(&t.Schema, &t.Name, &at); err != nil {
			return nil, err
		}
		out[t] = at
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// CatchingUp lists the tables of subscription k in state catching-up: Source and
// CopyPoint (the copy_snapshot column) of each.
func CatchingUp(ctx context.Context, db pg.DB, k Key) ([]change.Route, error) {
	rows, err := db.Query(ctx, `SELECT source_schema, source_name, coalesce(copy_snapshot, '') FROM skiff.table_state ts
		WHERE `+subWhere+` AND ts.state = 'catching-up'`, k.Queue, k.Consumer)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Route, error) {
		var c change.Route
		err := r.Scan(&c.Source.Schema, &c.Source.Name, &c.CopyPoint)
		return c, err
	})
}

// Promote moves table t of subscription k from catching-up under copy snapshot snap to
// in-sync, unless it has a copy backlog left (in-sync means every event is on the
// destination). It returns the rows changed: 0 or 1.
func Promote(ctx context.Context, db pg.DB, k Key, t change.Table, snap string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET state = 'in-sync', state_changed_at = now()
			WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'catching-up' AND ts.copy_snapshot = $5
			  AND NOT EXISTS (SELECT 1 FROM skiff.copy_backlog b
				WHERE b.sub_id = ts.sub_id AND b.source_schema = ts.source_schema AND b.source_name = ts.source_name)`,
		k.Queue, k.Consumer, t.Schema, t.Name, snap)
	return tag.RowsAffected(), err
}

// RecordSnapshot stores the copy snapshot of table t of subscription k, in state copying, and
// resets its progress. It returns the rows changed: 0 when the table is not copying.
func RecordSnapshot(ctx context.Context, db pg.DB, k Key, t change.Table, snap string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET copy_snapshot = $5, copy_rows = 0, copy_bytes = 0, copy_progress_at = now()
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		k.Queue, k.Consumer, t.Schema, t.Name, snap)
	return tag.RowsAffected(), err
}

// ClearSnapshot clears the copy snapshot of table t of subscription k, in state copying. It
// returns the rows changed: 0 when the table is not copying.
func ClearSnapshot(ctx context.Context, db pg.DB, k Key, t change.Table) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET copy_snapshot = NULL
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		k.Queue, k.Consumer, t.Schema, t.Name)
	return tag.RowsAffected(), err
}

// RecordProgress stores how far the copy of table t of subscription k has come.
func RecordProgress(ctx context.Context, db pg.DB, k Key, t change.Table, rows, bytes int64) error {
	_, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET copy_rows = $5, copy_bytes = $6, copy_progress_at = now()
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		k.Queue, k.Consumer, t.Schema, t.Name, rows, bytes)
	return err
}

// RecordCopyError keeps the error of a failed copy of table t of subscription k (in state
// copying; version 5).
func RecordCopyError(ctx context.Context, db pg.DB, k Key, t change.Table, msg string) error {
	_, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET copy_error = $5, copy_error_at = now()
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		k.Queue, k.Consumer, t.Schema, t.Name, msg)
	return err
}

// MarkCopied moves table t of subscription k from copying under copy snapshot snap to
// catching-up, records the rows and bytes copied and clears its copy error. It returns the
// rows changed: 0 when the table is no longer copying under snap.
func MarkCopied(ctx context.Context, db pg.DB, k Key, t change.Table, snap string, rows, bytes int64) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET state = 'catching-up', state_changed_at = now(),
			copy_rows = $6, copy_bytes = $7, copy_progress_at = now(), copy_error = NULL, copy_error_at = NULL
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying' AND ts.copy_snapshot = $5`,
		k.Queue, k.Consumer, t.Schema, t.Name, snap, rows, bytes)
	return tag.RowsAffected(), err
}

// Resync puts table t of subscription k back to copying, without snapshot or copy error. It
// returns the rows changed: 0 when the subscription does not have the table.
func Resync(ctx context.Context, db pg.DB, k Key, t change.Table) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE skiff.table_state ts SET state = 'copying', copy_snapshot = NULL, state_changed_at = now(),
			copy_error = NULL, copy_error_at = NULL
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4`,
		k.Queue, k.Consumer, t.Schema, t.Name)
	return tag.RowsAffected(), err
}

func scanTable(r pgx.CollectableRow) (change.Table, error) {
	var t change.Table
	err := r.Scan(&t.Schema, &t.Name)
	return t, err
}
