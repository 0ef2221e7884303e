package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Script is one SQL file for Execute.
type Script struct {
	// Name is where the SQL came from (the file name), for messages and the event.
	Name string
	// SQL is the script's text; Statements is what pg.SplitStatements makes of it.
	SQL        string
	Statements []pg.Statement
}

// Executed is what Execute did with one script.
type Executed struct {
	Script string
	// EventID is the id of the Execute event queued for it.
	EventID int64
	// Changed are the captured tables whose definition it changed (by their names before);
	// Refreshed those whose capture (trigger and layout) was made again: columns or name
	// changed. Dropped are captured tables it dropped (their capture stays until table remove).
	Changed, Refreshed, Dropped []change.Table
}

// ScriptError is a statement of a script that failed: the file, its line and the statement.
type ScriptError struct {
	Script string
	Line   int
	SQL    string
	Err    error
}

func (e *ScriptError) Error() string {
	sql := e.SQL
	if len(sql) > 300 {
		sql = sql[:300] + "…"
	}
	return fmt.Sprintf("%s line %d: %v (statement: %s)", e.Script, e.Line, e.Err, sql)
}

func (e *ScriptError) Unwrap() error { return e.Err }

// ErrWritesRows: a script changed rows of a table the queue captures (DML). Its row events
// and the SQL run on the target would both change those rows: execute is for DDL.
var ErrWritesRows = errors.New("the SQL changes rows of tables the queue captures")

// Execute runs scripts on the provider in one transaction (all or nothing) and, after each,
// in the same transaction: refreshes the capture of the queue's tables whose columns or name
// it changed (a new layout: rows written before decode with the old one, rows after with the
// new), and queues an Execute event carrying the script. The event's id is taken after the
// script's statements, which hold their tables' locks to the end of the transaction: every
// row event of those tables committed before has a smaller id, every one after a larger, so
// each target runs the script at that point of the stream. A script that queued row events
// of captured tables (DML) is refused with ErrWritesRows; a failing statement with a
// *ScriptError (file, line, statement). Statements are sent one at a time (pg.Exec).
func Execute(ctx context.Context, conn Conn, queue string, scripts []Script) ([]Executed, error) {
	var out []Executed
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		out = out[:0]
		var qid int32
		if err := tx.QueryRow(ctx, `SELECT skiff.queue_id($1)`, queue).Scan(&qid); err != nil {
			return wrap(err, "queue "+queue, ErrNoQueue)
		}
		kind, err := QueueKind(ctx, tx, queue)
		if err != nil {
			return err
		}
		if kind.Logical() {
			// Its subscriptions stream from slots: an event in its event tables reaches nobody.
			return fmt.Errorf("queue %s is a logical queue: skiff execute needs the trigger source (its events travel in the queue); "+
				"run the DDL on the provider and on each target yourself, the worker picks the new columns up from the stream: %w", queue, ErrWrongSource)
		}
		var tables []string
		rows, err := tx.Query(ctx, `SELECT skiff.event_table_name($1, n) FROM generate_series(0, 2) n`, qid)
		if err != nil {
			return wrap(err, "event tables of queue "+queue, ErrNoQueue)
		}
		if tables, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return wrap(err, "event tables of queue "+queue, ErrNoQueue)
		}
		for _, s := range scripts {
			done, err := executeOne(ctx, tx, queue, qid, tables, s)
			if err != nil {
				return err
			}
			out = append(out, done)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// tableDef fingerprints a captured table's definition: its name, its columns (cols) and
// the rest a script may change (indexes, constraints, triggers, defaults).
type tableDef struct {
	name        change.Table // as the capture records it
	now         *change.Table
	cols, other string
}

func captureDefs(ctx context.Context, tx pgx.Tx, qid int32) (map[uint32]tableDef, error) {
	rows, err := tx.Query(ctx, `SELECT c.table_oid, c.table_schema, c.table_name, n.nspname, r.relname,
		md5(array_to_string(ARRAY(SELECT a.attnum || ':' || a.attname || ':' || a.atttypid || ':' || a.atttypmod || ':' || a.attisdropped
			FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.table_oid AND a.attnum > 0 ORDER BY a.attnum), ',')),
		md5(array_to_string(ARRAY(SELECT 'i' || i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid = c.table_oid
			UNION ALL SELECT 'c' || o.oid FROM pg_catalog.pg_constraint o WHERE o.conrelid = c.table_oid
			UNION ALL SELECT 't' || g.oid FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.table_oid
			UNION ALL SELECT 'd' || d.oid FROM pg_catalog.pg_attrdef d WHERE d.adrelid = c.table_oid
			ORDER BY 1), ','))
		FROM skiff.captured_table c
		LEFT JOIN pg_catalog.pg_class r ON r.oid = c.table_oid
		LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		WHERE c.queue_id = $1`, qid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uint32]tableDef{}
	for rows.Next() {
		var oid uint32
		var d tableDef
		var schema, name *string
		if err := rows.Scan(&oid, &d.name.Schema, &d.name.Name, &schema, &name, &d.cols, &d.other); err != nil {
			return nil, err
		}
		if schema != nil && name != nil {
			d.now = &change.Table{Schema: *schema, Name: *name}
		}
		out[oid] = d
	}
	return out, rows.Err()
}

func executeOne(ctx context.Context, tx pgx.Tx, queue string, qid int32, eventTables []string, s Script) (Executed, error) {
	done := Executed{Script: s.Name}
	var searchPath string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.current_setting('search_path')`).Scan(&searchPath); err != nil {
		return done, fmt.Errorf("%s: %w", s.Name, err)
	}
	before, err := captureDefs(ctx, tx, qid)
	if err != nil {
		return done, wrap(err, "captured tables of queue "+queue, ErrNoQueue)
	}
	for _, st := range s.Statements {
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), st.SQL); err != nil {
			return done, &ScriptError{Script: s.Name, Line: st.ErrorLine(err), SQL: st.SQL, Err: err}
		}
	}
	// Back to the search_path the session had (the script may have changed it).
	if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, true)`, searchPath); err != nil {
		return done, fmt.Errorf("%s: %w", s.Name, err)
	}
	// Row events of this transaction: DML on captured tables.
	for _, et := range eventTables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+et+` WHERE ev_txid = txid_current()`).Scan(&n); err != nil {
			return done, fmt.Errorf("%s: count its row events: %w", s.Name, err)
		}
		if n > 0 {
			return done, fmt.Errorf("%s: %w (%d row events): execute runs DDL, run the DML as usual, replicated row by row (nothing changed)", s.Name, ErrWritesRows, n)
		}
	}
	after, err := captureDefs(ctx, tx, qid)
	if err != nil {
		return done, fmt.Errorf("%s: %w", s.Name, err)
	}
	for oid, b := range before {
		a := after[oid]
		switch {
		case a.now == nil:
			done.Changed = append(done.Changed, b.name)
			done.Dropped = append(done.Dropped, b.name)
		case a.cols != b.cols || *a.now != *b.now:
			done.Changed = append(done.Changed, b.name)
			// A new capture trigger and layout, keeping --where and --key.
			if _, err := AddTables(ctx, tx, queue, []TableSpec{{Name: a.now.String(), Refresh: true, AlsoInOtherQueue: true}}); err != nil {
				return done, fmt.Errorf("%s: refresh the capture of %s: %w", s.Name, a.now, err)
			}
			done.Refreshed = append(done.Refreshed, *a.now)
		case a.other != b.other:
			done.Changed = append(done.Changed, b.name)
		}
	}
	names := make([]string, len(done.Changed))
	for i, t := range done.Changed {
		names[i] = t.String()
	}
	data := RecordLiteral(s.Name, searchPath, strings.Join(names, "\n"), s.SQL)
	if err := tx.QueryRow(ctx, `SELECT skiff.insert_event($1, 'X', 0, $2)`, qid, data).Scan(&done.EventID); err != nil {
		return done, wrap(err, s.Name+": queue the execute event", ErrNoQueue)
	}
	return done, nil
}

// RecordLiteral writes fields as a record literal (the text form of ROW(…)), every field
// quoted: what parseRecord reads back.
func RecordLiteral(fields ...string) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(f))
		b.WriteByte('"')
	}
	b.WriteByte(')')
	return b.String()
}

// decodeExecute makes the Execute event of an 'X' row (ev_data: name, search_path, the
// changed tables one per line, the SQL).
func decodeExecute(id, txid int64, data string) (change.Event, error) {
	vals, err := parseRecord(data, nil)
	if err != nil || len(vals) != 4 {
		return change.Event{}, fmt.Errorf("event %d: execute event data does not decode (%v)", id, err)
	}
	x := &change.Exec{Name: vals[0].Text, SearchPath: vals[1].Text, SQL: vals[3].Text}
	for _, line := range strings.Split(vals[2].Text, "\n") {
		if line == "" {
			continue
		}
		t, err := change.ParseTableName(line)
		if err != nil {
			return change.Event{}, fmt.Errorf("event %d: execute event table %q: %w", id, line, err)
		}
		x.Tables = append(x.Tables, t)
	}
	return change.Event{ID: id, TxID: txid, Op: change.Execute, Exec: x}, nil
}
