package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Errors AddTable and RemoveTable return (wrapped, with the table's name) for callers that
// branch on them.
var (
	ErrNoTable      = errors.New("no such table")
	ErrNoPrimaryKey = errors.New("table has no primary key")
	ErrAlreadyAdded = errors.New("table is already captured by this queue")
	ErrNotCaptured  = errors.New("table is not captured by this queue")
	// ErrDeferrableKey: the primary key is DEFERRABLE, so a transaction may swap keys (a→b,
	// b→a) through a transient duplicate, which no replay by key can reproduce.
	ErrDeferrableKey = errors.New("primary key is DEFERRABLE")
)

// TableSpec says how to capture one table or sequence.
type TableSpec struct {
	// Name is the table or sequence as SQL would name it: table, schema.table or quoted
	// parts ("My Schema"."Odd Table"); an unqualified name follows search_path.
	Name string
	// Where, when set, is a boolean SQL expression over the table's columns: only rows for
	// which it is true are captured. An UPDATE that moves a row into or out of it becomes an
	// INSERT or a DELETE.
	Where string
	// Key names the columns that identify a row when the table has no primary key (or to use
	// instead of it).
	Key []string
	// Refresh regenerates the trigger and layout of a table already captured (after DDL);
	// Where and Key, when empty, keep their previous values.
	Refresh bool
}

// AddResult says what AddTable did.
type AddResult struct {
	Table        change.Table
	Sequence     bool  // a sequence: recorded, no trigger
	Refreshed    bool  // a capture existed and was regenerated
	Layout       int32 // the new layout id (tables only)
	QueueCreated bool
}

// Conn is what AddTable and RemoveTable need: a connection that can open a transaction.
type Conn interface {
	DB
	Begin(ctx context.Context) (pgx.Tx, error)
}

// AddTable captures a table (capture triggers and a layout) or a sequence in a queue,
// creating the queue when missing, in one transaction.
func AddTable(ctx context.Context, conn Conn, queue string, spec TableSpec) (*AddResult, error) {
	var res *AddResult
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		res, err = addTable(ctx, tx, queue, spec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// relation is a resolved table or sequence.
type relation struct {
	oid    uint32
	schema string
	name   string
	kind   string
}

func (r relation) table() change.Table { return change.Table{Schema: r.schema, Name: r.name} }

// resolve finds a relation by its SQL name. It runs in a savepoint so that an unknown name
// does not abort the caller's transaction.
func resolve(ctx context.Context, tx pgx.Tx, name string) (relation, error) {
	var r relation
	sp, err := tx.Begin(ctx)
	if err != nil {
		return r, err
	}
	err = sp.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname, c.relkind::text
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = $1::text::regclass`, name).Scan(&r.oid, &r.schema, &r.name, &r.kind)
	if err != nil {
		_ = sp.Rollback(ctx)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000" || pgErr.Code == "42602" || pgErr.Code == "42601") {
			return r, fmt.Errorf("table %s: %w", name, ErrNoTable)
		}
		return r, fmt.Errorf("look up table %s: %w", name, err)
	}
	return r, sp.Commit(ctx)
}

func addTable(ctx context.Context, tx pgx.Tx, queue string, spec TableSpec) (*AddResult, error) {
	created, err := CreateQueue(ctx, tx, queue)
	if err != nil {
		return nil, err
	}
	var qid int32
	if err := tx.QueryRow(ctx, `SELECT skiff.queue_id($1)`, queue).Scan(&qid); err != nil {
		return nil, wrap(err, "queue "+queue, ErrNoQueue)
	}
	rel, err := resolve(ctx, tx, spec.Name)
	if err != nil {
		return nil, err
	}
	res := &AddResult{Table: rel.table(), QueueCreated: created}
	switch rel.kind {
	case "S":
		res.Sequence = true
		return res, addSequence(ctx, tx, qid, queue, rel, spec.Refresh)
	case "r":
	case "p":
		return nil, fmt.Errorf("%s is a partitioned table: add its partitions instead", rel.table())
	default:
		return nil, fmt.Errorf("%s is not a table or a sequence (relkind %q)", rel.table(), rel.kind)
	}

	// The table's lock keeps its columns still while the trigger is made.
	if _, err := tx.Exec(ctx, `LOCK TABLE `+rel.table().String()+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return nil, fmt.Errorf("lock table %s: %w", rel.table(), err)
	}
	var prev struct {
		found    bool
		where    *string
		key      []string
		keyGiven bool
	}
	err = tx.QueryRow(ctx, `SELECT where_sql, key_columns, key_given FROM skiff.captured_table
		WHERE queue_id = $1 AND table_oid = $2`, qid, rel.oid).Scan(&prev.where, &prev.key, &prev.keyGiven)
	switch {
	case err == nil:
		prev.found = true
	case errors.Is(err, pgx.ErrNoRows):
	default:
		return nil, fmt.Errorf("table %s: %w", rel.table(), err)
	}
	if prev.found && !spec.Refresh {
		return nil, fmt.Errorf("table %s in queue %s: %w (use --refresh to regenerate its trigger after DDL)", rel.table(), queue, ErrAlreadyAdded)
	}
	where, key, keyGiven := spec.Where, spec.Key, len(spec.Key) > 0
	if prev.found {
		res.Refreshed = true
		if where == "" && prev.where != nil {
			where = *prev.where
		}
		if !keyGiven && prev.keyGiven {
			key, keyGiven = prev.key, true
		}
	}

	cols, err := tableColumns(ctx, tx, rel.oid)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", rel.table(), err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s has no columns", rel.table())
	}
	if keyGiven {
		for _, k := range key {
			if indexOf(cols, k) < 0 {
				return nil, fmt.Errorf("table %s: key column %q does not exist", rel.table(), k)
			}
		}
	} else {
		key, err = primaryKey(ctx, tx, rel.oid)
		if err != nil {
			return nil, fmt.Errorf("primary key of %s: %w", rel.table(), err)
		}
		if len(key) == 0 {
			return nil, fmt.Errorf("table %s: %w; give its identifying columns with --key col,col", rel.table(), ErrNoPrimaryKey)
		}
		var deferrable bool
		if err := tx.QueryRow(ctx, `SELECT condeferrable FROM pg_catalog.pg_constraint
			WHERE conrelid = $1 AND contype = 'p'`, rel.oid).Scan(&deferrable); err != nil {
			return nil, fmt.Errorf("primary key of %s: %w", rel.table(), err)
		}
		if deferrable {
			return nil, fmt.Errorf("table %s: %w: a transaction can swap keys through a transient duplicate, "+
				"which cannot be replayed by key; recreate the key NOT DEFERRABLE, or give --key columns "+
				"that a non-deferrable unique index keeps unique", rel.table(), ErrDeferrableKey)
		}
	}
	version := pg.ServerVersionOf(tx.Conn().PgConn())
	pins, err := settingPins(ctx, tx, cols, version)
	if err != nil {
		return nil, fmt.Errorf("column types of %s: %w", rel.table(), err)
	}

	var whereNew, whereOld string
	if where != "" {
		whereNew, whereOld, err = compileWhere(ctx, tx, rel, cols, where)
		if err != nil {
			return nil, err
		}
		pins = append(pins, wherePins(where, version)...)
	}

	names, types := make([]string, len(cols)), make([]string, len(cols))
	for i, c := range cols {
		names[i], types[i] = c.name, c.typ
	}
	var layout int32
	err = tx.QueryRow(ctx, `INSERT INTO skiff.table_layout (queue_id, table_oid, table_schema, table_name, columns, key_columns, column_types)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING layout_id`, qid, rel.oid, rel.schema, rel.name, names, key, types).Scan(&layout)
	if err != nil {
		return nil, fmt.Errorf("record layout of %s: %w", rel.table(), err)
	}
	res.Layout = layout

	tg := trigger{
		queueID:   qid,
		layout:    layout,
		table:     rel.table(),
		funcName:  fmt.Sprintf("capture_q%d_t%d", qid, rel.oid),
		rowTrig:   fmt.Sprintf("skiff_capture_q%d", qid),
		truncTrig: fmt.Sprintf("skiff_truncate_q%d", qid),
		key:       key,
		keyText:   keyGiven,
		whereNew:  whereNew,
		whereOld:  whereOld,
		pins:      pins,
	}
	for _, stmt := range tg.ddl() {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create capture trigger on %s: %w", rel.table(), err)
		}
	}
	var whereArg *string
	if where != "" {
		whereArg = &where
	}
	if prev.found {
		_, err = tx.Exec(ctx, `UPDATE skiff.captured_table SET table_schema = $3, table_name = $4, where_sql = $5,
			key_columns = $6, key_given = $7, layout_id = $8, func_name = $9, row_trigger = $10, trunc_trigger = $11
			WHERE queue_id = $1 AND table_oid = $2`,
			qid, rel.oid, rel.schema, rel.name, whereArg, key, keyGiven, layout, tg.funcName, tg.rowTrig, tg.truncTrig)
	} else {
		_, err = tx.Exec(ctx, `INSERT INTO skiff.captured_table (queue_id, table_oid, table_schema, table_name, where_sql,
			key_columns, key_given, layout_id, func_name, row_trigger, trunc_trigger)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			qid, rel.oid, rel.schema, rel.name, whereArg, key, keyGiven, layout, tg.funcName, tg.rowTrig, tg.truncTrig)
	}
	if err != nil {
		return nil, fmt.Errorf("record capture of %s: %w", rel.table(), err)
	}
	return res, nil
}

func addSequence(ctx context.Context, tx pgx.Tx, qid int32, queue string, rel relation, refresh bool) error {
	tag, err := tx.Exec(ctx, `INSERT INTO skiff.captured_sequence (queue_id, seq_oid, seq_schema, seq_name)
		SELECT $1, $2, $3, $4 WHERE NOT EXISTS
		(SELECT 1 FROM skiff.captured_sequence WHERE queue_id = $1 AND seq_oid = $2)`, qid, rel.oid, rel.schema, rel.name)
	if err != nil {
		return fmt.Errorf("record sequence %s: %w", rel.table(), err)
	}
	if tag.RowsAffected() == 0 && !refresh {
		return fmt.Errorf("sequence %s in queue %s: %w", rel.table(), queue, ErrAlreadyAdded)
	}
	return nil
}

// RemoveTable drops the capture of a table (its triggers and function) or of a sequence
// from a queue. Layouts stay: events already queued still decode.
func RemoveTable(ctx context.Context, conn Conn, queue, name string) (change.Table, error) {
	var t change.Table
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var qid int32
		if err := tx.QueryRow(ctx, `SELECT skiff.queue_id($1)`, queue).Scan(&qid); err != nil {
			return wrap(err, "queue "+queue, ErrNoQueue)
		}
		rel, err := resolve(ctx, tx, name)
		if errors.Is(err, ErrNoTable) {
			// The table may have been dropped: find its capture by name.
			var found bool
			rel, found, err = droppedCapture(ctx, tx, qid, name)
			if err == nil && !found {
				err = fmt.Errorf("table %s: %w", name, ErrNoTable)
			}
		}
		if err != nil {
			return err
		}
		t = rel.table()
		if rel.kind == "S" {
			tag, err := tx.Exec(ctx, `DELETE FROM skiff.captured_sequence WHERE queue_id = $1 AND seq_oid = $2`, qid, rel.oid)
			if err != nil {
				return fmt.Errorf("remove sequence %s: %w", t, err)
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("sequence %s in queue %s: %w", t, queue, ErrNotCaptured)
			}
			return nil
		}
		var fn, rowTrig, truncTrig string
		err = tx.QueryRow(ctx, `DELETE FROM skiff.captured_table WHERE queue_id = $1 AND table_oid = $2
			RETURNING func_name, row_trigger, trunc_trigger`, qid, rel.oid).Scan(&fn, &rowTrig, &truncTrig)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("table %s in queue %s: %w", t, queue, ErrNotCaptured)
		}
		if err != nil {
			return fmt.Errorf("remove table %s: %w", t, err)
		}
		stmts := []string{`DROP FUNCTION IF EXISTS skiff.` + change.QuoteIdent(fn) + `()`}
		if rel.kind != "dropped" {
			stmts = append([]string{
				`DROP TRIGGER IF EXISTS ` + change.QuoteIdent(rowTrig) + ` ON ` + t.String(),
				`DROP TRIGGER IF EXISTS ` + change.QuoteIdent(truncTrig) + ` ON ` + t.String(),
			}, stmts...)
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("remove capture of %s: %w", t, err)
			}
		}
		return nil
	})
	return t, err
}

// droppedCapture finds the capture of a table that no longer exists by the name it had:
// name, schema.name or their quoted forms.
func droppedCapture(ctx context.Context, tx pgx.Tx, qid int32, name string) (relation, bool, error) {
	var r relation
	err := tx.QueryRow(ctx, `SELECT table_oid, table_schema, table_name FROM skiff.captured_table
		WHERE queue_id = $1
		  AND $2 IN (table_name, quote_ident(table_name), table_schema || '.' || table_name,
		             quote_ident(table_schema) || '.' || quote_ident(table_name))
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = table_oid)
		ORDER BY table_schema LIMIT 1`, qid, name).Scan(&r.oid, &r.schema, &r.name)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("look up capture of %s: %w", name, err)
	}
	r.kind = "dropped"
	return r, true, nil
}

// CapturedTable is a table a queue captures.
type CapturedTable struct {
	Table  change.Table
	Where  string // "" when unfiltered
	Key    []string
	Layout int32 // current layout
}

// Tables lists the tables a queue captures, by schema and name.
func Tables(ctx context.Context, db DB, queue string) ([]CapturedTable, error) {
	rows, err := db.Query(ctx, `SELECT table_schema, table_name, coalesce(where_sql, ''), key_columns, layout_id
		FROM skiff.captured_table WHERE queue_id = skiff.queue_id($1) ORDER BY 1, 2`, queue)
	if err != nil {
		return nil, wrap(err, "tables of queue "+queue, ErrNoQueue)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CapturedTable, error) {
		var t CapturedTable
		err := r.Scan(&t.Table.Schema, &t.Table.Name, &t.Where, &t.Key, &t.Layout)
		return t, err
	})
	if err != nil {
		return nil, wrap(err, "tables of queue "+queue, ErrNoQueue)
	}
	return out, nil
}

// Sequences lists the sequences a queue captures.
func Sequences(ctx context.Context, db DB, queue string) ([]change.Table, error) {
	rows, err := db.Query(ctx, `SELECT seq_schema, seq_name FROM skiff.captured_sequence
		WHERE queue_id = skiff.queue_id($1) ORDER BY 1, 2`, queue)
	if err != nil {
		return nil, wrap(err, "sequences of queue "+queue, ErrNoQueue)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Table, error) {
		var t change.Table
		err := r.Scan(&t.Schema, &t.Name)
		return t, err
	})
	if err != nil {
		return nil, wrap(err, "sequences of queue "+queue, ErrNoQueue)
	}
	return out, nil
}

type column struct {
	name    string
	typ     string // format_type
	typeOID uint32
}

func tableColumns(ctx context.Context, db DB, oid uint32) ([]column, error) {
	rows, err := db.Query(ctx, `SELECT attname, pg_catalog.format_type(atttypid, atttypmod), atttypid
		FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		err := r.Scan(&c.name, &c.typ, &c.typeOID)
		return c, err
	})
}

func primaryKey(ctx context.Context, db DB, oid uint32) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT a.attname
		FROM pg_catalog.pg_index i
		CROSS JOIN generate_series(0, 31) k
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k]
		WHERE i.indrelid = $1 AND i.indisprimary AND k < i.indnatts
		ORDER BY k`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func indexOf(cols []column, name string) int {
	for i, c := range cols {
		if c.name == name {
			return i
		}
	}
	return -1
}

// pin is a session setting a trigger function fixes with a SET clause.
type pin struct{ name, value string }

// settingPins returns the settings whose value changes the text form of one of the columns'
// types (looking through arrays, domains, composites and ranges), to be fixed on the trigger
// function so that the writing session's settings cannot change the captured text.
//
// They become SET clauses of the function. Measured on 15 (server CPU per captured row): SET
// clauses for datestyle and timezone cost about 2.7 µs a row; checking current_setting() and
// calling set_config() only when a setting differs cost 1.7 µs when none differs but 12 µs when
// one does (a server whose TimeZone is not UTC, extra_float_digits 0 before 12), so the
// unconditional clauses win.
func settingPins(ctx context.Context, db DB, cols []column, version int) ([]pin, error) {
	need := map[string]bool{}
	seen := map[uint32]bool{}
	todo := make([]uint32, 0, len(cols))
	for _, c := range cols {
		todo = append(todo, c.typeOID)
	}
	for len(todo) > 0 {
		oid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[oid] {
			continue
		}
		seen[oid] = true
		var name, nsp, typtype string
		var elem, base, rel uint32
		err := db.QueryRow(ctx, `SELECT t.typname, n.nspname, t.typtype::text, t.typelem, t.typbasetype, t.typrelid
			FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1`, oid).
			Scan(&name, &nsp, &typtype, &elem, &base, &rel)
		if err != nil {
			return nil, fmt.Errorf("type %d: %w", oid, err)
		}
		if elem != 0 {
			todo = append(todo, elem)
		}
		if base != 0 {
			todo = append(todo, base)
		}
		if rel != 0 && typtype == "c" {
			rows, err := db.Query(ctx, `SELECT atttypid FROM pg_catalog.pg_attribute
				WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, rel)
			if err != nil {
				return nil, err
			}
			sub, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
			if err != nil {
				return nil, err
			}
			todo = append(todo, sub...)
		}
		if typtype == "r" && version >= 90200 {
			var sub uint32
			if err := db.QueryRow(ctx, `SELECT rngsubtype FROM pg_catalog.pg_range WHERE rngtypid = $1`, oid).Scan(&sub); err != nil {
				return nil, fmt.Errorf("range type %s: %w", name, err)
			}
			todo = append(todo, sub)
		}
		if nsp != "pg_catalog" {
			continue
		}
		switch name {
		case "date", "time", "timetz", "timestamp", "abstime", "tinterval":
			need["datestyle"] = true
		case "timestamptz":
			need["datestyle"], need["timezone"] = true, true
		case "interval", "reltime":
			need["intervalstyle"] = true
		case "float4", "float8", "point", "lseg", "line", "box", "path", "polygon", "circle":
			need["extra_float_digits"] = true
		case "money":
			need["lc_monetary"] = true
		case "bytea":
			if version >= 90000 {
				need["bytea_output"] = true
			}
		}
	}
	var pins []pin
	if need["datestyle"] {
		pins = append(pins, pin{"datestyle", "ISO, YMD"})
	}
	if need["intervalstyle"] {
		pins = append(pins, pin{"intervalstyle", "postgres"})
	}
	if need["timezone"] {
		pins = append(pins, pin{"timezone", "UTC"})
	}
	if need["extra_float_digits"] {
		digits := "3"
		if version < 90000 {
			// Before 9.0 the maximum is 2: 17 significant digits, exact for float8; float4
			// gets 8 of the 9 digits an exact round trip needs (pg_dump too uses 3 from 9.0).
			digits = "2"
		}
		pins = append(pins, pin{"extra_float_digits", digits})
	}
	if need["bytea_output"] {
		pins = append(pins, pin{"bytea_output", "hex"})
	}
	if need["lc_monetary"] {
		// money's text follows lc_monetary: fix the database's own setting, as this session
		// sees it, so that every writer produces the same text.
		var v string
		if err := db.QueryRow(ctx, `SELECT pg_catalog.current_setting('lc_monetary')`).Scan(&v); err != nil {
			return nil, err
		}
		pins = append(pins, pin{"lc_monetary", v})
	}
	return pins, nil
}

// wherePins returns the settings a --where filter needs fixed in the capture function. Before
// 9.1 standard_conforming_strings is off by default, so a writing session would read the
// filter's backslashes in '...' literals as escapes, unlike the check at table add (skiff's
// sessions have it on): a filter with a backslash gets it pinned on.
func wherePins(where string, version int) []pin {
	if version < 90100 && strings.Contains(where, `\`) {
		return []pin{{"standard_conforming_strings", "on"}}
	}
	return nil
}

// trigger generates the capture function and triggers of one table.
type trigger struct {
	queueID            int32
	layout             int32
	table              change.Table
	funcName           string
	rowTrig, truncTrig string
	key                []string
	keyText            bool // compare key columns by their text (--key columns may lack "=")
	whereNew, whereOld string
	pins               []pin
}

// ddl returns the statements that (re)create the function and the triggers.
func (t trigger) ddl() []string {
	fn := "skiff." + change.QuoteIdent(t.funcName)
	return []string{
		t.function(),
		`DROP TRIGGER IF EXISTS ` + change.QuoteIdent(t.rowTrig) + ` ON ` + t.table.String(),
		`DROP TRIGGER IF EXISTS ` + change.QuoteIdent(t.truncTrig) + ` ON ` + t.table.String(),
		`CREATE TRIGGER ` + change.QuoteIdent(t.rowTrig) + ` AFTER INSERT OR UPDATE OR DELETE ON ` + t.table.String() +
			` FOR EACH ROW EXECUTE PROCEDURE ` + fn + `()`,
		`CREATE TRIGGER ` + change.QuoteIdent(t.truncTrig) + ` AFTER TRUNCATE ON ` + t.table.String() +
			` FOR EACH STATEMENT EXECUTE PROCEDURE ` + fn + `()`,
	}
}

// function returns the CREATE FUNCTION statement of the capture function. Per row it runs
// an IF on TG_OP, a nextval, an IF on the epoch bits of the new id and one static INSERT whose
// values are computed in that INSERT: no lookup of queue state, no dynamic SQL, no catalog
// query, no intermediate variables.
func (t trigger) function() string {
	var b strings.Builder
	q := strconv.Itoa(int(t.queueID))
	seq := "skiff.event_" + q + "_id_seq"
	lay := strconv.Itoa(int(t.layout))

	fmt.Fprintf(&b, "CREATE OR REPLACE FUNCTION skiff.%s() RETURNS trigger\nLANGUAGE plpgsql SECURITY DEFINER\n", change.QuoteIdent(t.funcName))
	for _, p := range t.pins {
		fmt.Fprintf(&b, "SET %s = %s\n", p.name, quoteLiteral(p.value))
	}
	b.WriteString("AS $skiff$\n")
	fmt.Fprintf(&b, "-- Capture of %s into queue %d, layout %d. Generated by skiff table add; do not edit.\n",
		strings.ReplaceAll(t.table.String(), "\n", " "), t.queueID, t.layout)
	b.WriteString("DECLARE\n    id bigint;\nBEGIN\n")

	parts := make([]string, len(t.key))
	oldKey := make([]string, len(t.key))
	for i, k := range t.key {
		c := change.QuoteIdent(k)
		if t.keyText {
			parts[i] = "NEW." + c + "::text IS DISTINCT FROM OLD." + c + "::text"
		} else {
			parts[i] = "NEW." + c + " IS DISTINCT FROM OLD." + c
		}
		oldKey[i] = "OLD." + c
	}
	keyExtra := "CASE WHEN " + strings.Join(parts, " OR ") + " THEN ROW(" + strings.Join(oldKey, ", ") + ")::text END"

	// emit writes the statements that insert one event, indented by depth levels. The xid is
	// assigned by the row write that fired the trigger, before this nextval: the rotation
	// proof in the provider migration relies on that order.
	emit := func(depth int, op, data, extra string) {
		in := strings.Repeat("    ", depth)
		fmt.Fprintf(&b, "%sid := pg_catalog.nextval('%s'::regclass);\n", in, seq)
		for n := 0; n < 3; n++ {
			switch n {
			case 0:
				fmt.Fprintf(&b, "%sIF (id >> 40) %% 3 = 0 THEN\n", in)
			case 1:
				fmt.Fprintf(&b, "%sELSIF (id >> 40) %% 3 = 1 THEN\n", in)
			case 2:
				fmt.Fprintf(&b, "%sELSE\n", in)
			}
			fmt.Fprintf(&b, "%s    INSERT INTO skiff.event_%s_%d (ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra)"+
				" VALUES (id, pg_catalog.now(), pg_catalog.txid_current(), '%s', %s, %s, %s);\n", in, q, n, op, lay, data, extra)
		}
		fmt.Fprintf(&b, "%sEND IF;\n", in)
	}
	filter := func(depth int, expr string) {
		in := strings.Repeat("    ", depth)
		fmt.Fprintf(&b, "%sIF NOT coalesce((%s), false) THEN\n%s    RETURN NULL;\n%sEND IF;\n", in, expr, in, in)
	}

	b.WriteString("    IF TG_OP = 'INSERT' THEN\n")
	if t.whereNew != "" {
		filter(2, t.whereNew)
	}
	emit(2, "I", "NEW::text", "NULL")
	b.WriteString("    ELSIF TG_OP = 'UPDATE' THEN\n")
	if t.whereNew != "" {
		fmt.Fprintf(&b, "        IF coalesce((%s), false) THEN\n", t.whereNew)
		fmt.Fprintf(&b, "            IF coalesce((%s), false) THEN\n", t.whereOld)
		emit(4, "U", "NEW::text", keyExtra)
		b.WriteString("            ELSE\n")
		emit(4, "I", "NEW::text", "NULL") // moved into the filter
		b.WriteString("            END IF;\n")
		fmt.Fprintf(&b, "        ELSIF coalesce((%s), false) THEN\n", t.whereOld)
		emit(3, "D", "OLD::text", "NULL") // moved out of the filter
		b.WriteString("        END IF;\n")
	} else {
		emit(2, "U", "NEW::text", keyExtra)
	}
	b.WriteString("    ELSIF TG_OP = 'DELETE' THEN\n")
	if t.whereOld != "" {
		filter(2, t.whereOld)
	}
	emit(2, "D", "OLD::text", "NULL")
	b.WriteString("    ELSE\n")
	emit(2, "T", "NULL", "NULL")
	b.WriteString("    END IF;\n    RETURN NULL;\nEND;\n$skiff$")
	return b.String()
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
