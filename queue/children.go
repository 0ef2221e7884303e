package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// A partitioned table (PostgreSQL 10 on) or a table with inheritance children (any version)
// is captured as one table: events name it and carry its layout, whichever partition or child
// the row is in, so that the target may partition otherwise or not at all. Its capture
// function serves the triggers of its children too. From PostgreSQL 11 the row trigger of a
// partitioned table is cloned onto every partition, present and future, by the server; before
// 11, and for inheritance children on every version, each child needs a trigger of its own,
// and so does every child's truncate guard. table add gives them to the children there are;
// AdoptChildren, which the ticker runs with its maintenance, to the children that come later,
// and takes them back from tables that left the parent.

// family is where a table stands among the captures of one queue.
type family struct {
	// parent: an ancestor the queue captures with its children (nil: none).
	parent *capturedAncestor
	// capturedBelow: descendants the queue captures on their own.
	capturedBelow []change.Table
	// hasChildren: the table has partitions or inheritance children.
	hasChildren bool
}

type capturedAncestor struct {
	table change.Table
	kind  string // relkind of the ancestor
}

// parentWord names what the table is to its captured ancestor.
func (f family) parentWord() string {
	if f.parent.kind == "p" {
		return "a partition"
	}
	return "a child"
}

// childrenWord names the children of the captured ancestor.
func (a capturedAncestor) childrenWord() string { return childrenWord(a.kind) }

// childWord names one child of a table of relkind kind.
func (family) childWord(kind string) string {
	if kind == "p" {
		return "partition"
	}
	return "child"
}

// childrenWord names the children of a table of relkind kind.
func childrenWord(kind string) string {
	if kind == "p" {
		return "partitions"
	}
	return "children"
}

// readFamily finds the table's captured ancestors and descendants in queue qid.
func readFamily(ctx context.Context, db pg.DB, qid int32, oid uint32) (family, error) {
	var f family
	var a capturedAncestor
	err := db.QueryRow(ctx, `WITH RECURSIVE up(rel) AS (
			SELECT inhparent FROM pg_catalog.pg_inherits WHERE inhrelid = $2
			UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i, up WHERE i.inhrelid = up.rel)
		SELECT n.nspname, r.relname, r.relkind::text
		FROM up JOIN skiff.captured_table c ON c.table_oid = up.rel AND c.queue_id = $1 AND c.with_children
		JOIN pg_catalog.pg_class r ON r.oid = up.rel JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		ORDER BY 1, 2 LIMIT 1`, qid, oid).Scan(&a.table.Schema, &a.table.Name, &a.kind)
	switch {
	case err == nil:
		f.parent = &a
	case !errors.Is(err, pgx.ErrNoRows):
		return f, fmt.Errorf("look for a captured parent: %w", err)
	}
	rows, err := db.Query(ctx, `WITH RECURSIVE down(rel) AS (
			SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = $2
			UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i, down WHERE i.inhparent = down.rel)
		SELECT n.nspname, r.relname
		FROM down JOIN skiff.captured_table c ON c.table_oid = down.rel AND c.queue_id = $1
		JOIN pg_catalog.pg_class r ON r.oid = down.rel JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		ORDER BY 1, 2`, qid, oid)
	if err != nil {
		return f, fmt.Errorf("look for captured children: %w", err)
	}
	f.capturedBelow, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Table, error) {
		var t change.Table
		err := r.Scan(&t.Schema, &t.Name)
		return t, err
	})
	if err != nil {
		return f, fmt.Errorf("look for captured children: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits WHERE inhparent = $1)`, oid).Scan(&f.hasChildren); err != nil {
		return f, fmt.Errorf("look for children: %w", err)
	}
	return f, nil
}

// capture is one capture with children, as adoption needs it.
type capture struct {
	queue     string
	qid       int32
	parent    relation
	layout    int32
	where     string
	funcName  string
	rowTrig   string
	truncTrig string
	key       []string
}

// trigger returns the generator of the capture's triggers (enough of it for childDDL).
func (c capture) trigger(version int) trigger {
	tg := newTrigger(c.qid, c.layout, c.parent, true, version)
	tg.funcName, tg.rowTrig, tg.truncTrig = c.funcName, c.rowTrig, c.truncTrig
	return tg
}

const captureColumns = `q.queue_name, c.queue_id, c.table_oid, n.nspname, r.relname, r.relkind::text,
	c.layout_id, coalesce(c.where_sql, ''), c.func_name, c.row_trigger, c.trunc_trigger, c.key_columns
	FROM skiff.captured_table c JOIN skiff.queue q ON q.queue_id = c.queue_id
	JOIN pg_catalog.pg_class r ON r.oid = c.table_oid JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace`

func scanCapture(row pgx.CollectableRow) (capture, error) {
	var c capture
	err := row.Scan(&c.queue, &c.qid, &c.parent.oid, &c.parent.schema, &c.parent.name, &c.parent.kind,
		&c.layout, &c.where, &c.funcName, &c.rowTrig, &c.truncTrig, &c.key)
	return c, err
}

// loadCapture reads the capture with children of one table, locking its row (FOR SHARE) so
// that it is not removed or refreshed meanwhile.
func loadCapture(ctx context.Context, db pg.DB, qid int32, oid uint32) (capture, error) {
	rows, err := db.Query(ctx, `SELECT `+captureColumns+`
		WHERE c.queue_id = $1 AND c.table_oid = $2 AND c.with_children FOR SHARE OF c`, qid, oid)
	if err != nil {
		return capture{}, fmt.Errorf("read capture: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanCapture)
	if err != nil {
		return capture{}, fmt.Errorf("read capture: %w", err)
	}
	return c, nil
}

// member is a partition or child of a captured table, and the capture's triggers it has.
type member struct {
	rel            relation
	hasRow, hasGrd bool
}

// needs says which triggers a child lacks: the row trigger on a table that holds rows, unless
// the server clones the partitioned parent's (11 on), and the truncate guard on every table.
// Foreign tables are left alone (their rows live elsewhere).
func (c capture) needs(m member, version int) (row, guard bool) {
	if m.rel.kind != "r" && m.rel.kind != "p" {
		return false, false
	}
	row = m.rel.kind == "r" && (c.parent.kind == "r" || version < 110000) && !m.hasRow
	return row, !m.hasGrd
}

// members lists the descendants of the capture's table with the capture's triggers they have.
func (c capture) members(ctx context.Context, db pg.DB) ([]member, error) {
	rows, err := db.Query(ctx, `WITH RECURSIVE down(rel) AS (
			SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = $1
			UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i, down WHERE i.inhparent = down.rel)
		SELECT r.oid, n.nspname, r.relname, r.relkind::text,
			EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.oid AND t.tgname = $2 AND t.tgfoid = f.oid),
			EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.oid AND t.tgname = $3 AND t.tgfoid = f.oid)
		FROM down JOIN pg_catalog.pg_class r ON r.oid = down.rel JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace,
			pg_catalog.pg_proc f
		WHERE f.proname = $4 AND f.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'skiff')
		ORDER BY 2, 3`, c.parent.oid, c.rowTrig, fmt.Sprintf("skiff_guard_q%d", c.qid), c.funcName)
	if err != nil {
		return nil, fmt.Errorf("children of %s: %w", c.parent.table(), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (member, error) {
		var m member
		err := r.Scan(&m.rel.oid, &m.rel.schema, &m.rel.name, &m.rel.kind, &m.hasRow, &m.hasGrd)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("children of %s: %w", c.parent.table(), err)
	}
	return out, nil
}

// Adopted is a partition or child that got the capture triggers of its captured parent, or
// a table that left the parent and lost them.
type Adopted struct {
	Queue  string
	Parent change.Table
	Child  change.Table
	// Triggers names the triggers created (or, Released, dropped).
	Triggers []string
	// Rows is how many rows the child held when it got its row trigger, queued as a delete
	// and an insert each (the copy of a subscription may hold them already, or not).
	Rows int64
	// Released: the table is no longer a descendant of Parent; its triggers were dropped.
	Released bool
	// Uncovered: Parent is captured without its children (it had none when added, or it was
	// added before skiff captured children) and Child, an inheritance child of it that the
	// queue does not capture, has rows that are not replicated. Nothing was done:
	// `skiff table add --refresh` of the parent captures it with its children.
	Uncovered bool
	Err       error // why it could not be done (it is tried again at the next run)
}

// adoptAll gives every child of the capture lacking them the capture's triggers, in the
// caller's transaction. queueRows queues the rows of a child that had no row trigger.
func adoptAll(ctx context.Context, tx pgx.Tx, c capture, queueRows bool) ([]Adopted, error) {
	ms, err := c.members(ctx, tx)
	if err != nil {
		return nil, err
	}
	version := pg.ServerVersionOf(tx.Conn().PgConn())
	var out []Adopted
	for _, m := range ms {
		row, guard := c.needs(m, version)
		if !row && !guard {
			continue
		}
		a, err := adopt(ctx, tx, c, m.rel, row, guard, queueRows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// adopt gives one child the triggers it lacks, under a lock that holds its writers back, and
// with queueRows queues the rows it holds when it gets its row trigger: they were written
// while it had none.
func adopt(ctx context.Context, tx pgx.Tx, c capture, child relation, row, guard, queueRows bool) (Adopted, error) {
	a := Adopted{Queue: c.queue, Parent: c.parent.table(), Child: child.table()}
	pc := tx.Conn().PgConn()
	version := pg.ServerVersionOf(pc)
	tg := c.trigger(version)
	if row {
		a.Triggers = append(a.Triggers, tg.rowTrig)
	}
	if guard {
		a.Triggers = append(a.Triggers, tg.guardTrig)
	}
	for _, stmt := range tg.childDDL(child.table(), row, guard) {
		if _, err := pg.Exec(ctx, pc, stmt); err != nil {
			return a, fmt.Errorf("capture triggers of %s (%s of %s): %w", child.table(), family{}.childWord(c.parent.kind), c.parent.table(), err)
		}
	}
	if !row || !queueRows {
		return a, nil
	}
	n, err := queueChildRows(ctx, tx, c, child)
	if err != nil {
		return a, fmt.Errorf("queue the rows of %s (a child of %s): %w", child.table(), c.parent.table(), err)
	}
	a.Rows = n
	return a, nil
}

// queueChildRows queues each row of the child (ONLY) that passes the capture's --where as a
// removal (a delete that may find nothing: change.Remove) and then an insert, under the
// parent's layout, with the settings the capture function pins: the target ends up with the
// row whether a copy already brought it or not.
func queueChildRows(ctx context.Context, tx pgx.Tx, c capture, child relation) (int64, error) {
	var cols []string
	if err := tx.QueryRow(ctx, `SELECT columns FROM skiff.table_layout WHERE layout_id = $1`, c.layout).Scan(&cols); err != nil {
		return 0, fmt.Errorf("layout %d: %w", c.layout, err)
	}
	live, err := catalog.Columns(ctx, tx, c.parent.oid)
	if err != nil {
		return 0, err
	}
	names := make([]string, len(live))
	for i, col := range live {
		names[i] = col.Name
	}
	if !slices.Equal(names, cols) {
		return 0, fmt.Errorf("layout columns %v, %s now has %v: run `skiff table add --refresh %s`", cols, c.parent.table(), names, c.parent.table())
	}
	pc := tx.Conn().PgConn()
	pins, err := settingPins(ctx, tx, live, pg.ServerVersionOf(pc))
	if err != nil {
		return 0, err
	}
	pins = append(pins, wherePins(c.where, pg.ServerVersionOf(pc))...)
	for _, p := range pins {
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config($1, $2, true)`, p.name, p.value); err != nil {
			return 0, fmt.Errorf("set %s: %w", p.name, err)
		}
	}
	// The --where resolves as in the capture function (until the transaction ends, as the
	// settings above).
	if _, err := pg.Exec(ctx, pc, `SET LOCAL search_path = pg_catalog, pg_temp`); err != nil {
		return 0, err
	}
	fields := make([]string, len(cols))
	inFilter := make(map[string]bool, len(cols))
	for i, col := range cols {
		fields[i] = "c." + change.QuoteIdent(col)
		inFilter[col] = true
	}
	cond := ""
	if c.where != "" {
		w, err := qualifyColumns(c.where, inFilter, "c")
		if err != nil {
			return 0, err
		}
		cond = " WHERE coalesce((\n" + w + "\n), false)"
	}
	var n int64
	// The delete is a Remove ('R'): the target may not hold the row, and the worker must not
	// take its missing for a capture's misorder (apply.ErrMisordered).
	for _, op := range []string{"R", "I"} {
		q := `SELECT count(skiff.insert_event($1, $2, $3, ` + recordText("ROW("+strings.Join(fields, ", ")+")") + `))
			FROM ONLY ` + child.table().String() + ` c` + cond
		if err := tx.QueryRow(ctx, q, c.qid, op, c.layout).Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// AdoptChildren gives the partitions and inheritance children of every table captured with
// its children the capture triggers they lack (tables created or attached since), each in a
// transaction of its own, and queues the rows a child held before it had a row trigger (a
// partition before PostgreSQL 11, an inheritance child); it drops the capture's triggers from
// tables that left their parent (DETACH PARTITION, NO INHERIT). The ticker runs it with its
// maintenance. The error is for what stopped the whole run; each child's own is in its
// Adopted.
func AdoptChildren(ctx context.Context, conn Conn) ([]Adopted, error) {
	// A logical queue's captures have no triggers (func_name ''): its publication reaches
	// every partition by itself.
	rows, err := conn.Query(ctx, `SELECT `+captureColumns+` WHERE c.with_children AND c.func_name <> '' ORDER BY 1, 4, 5`)
	if err != nil {
		return nil, wrap(err, "captures with children", ErrNotInstalled)
	}
	caps, err := pgx.CollectRows(rows, scanCapture)
	if err != nil {
		return nil, fmt.Errorf("captures with children: %w", err)
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.current_setting('server_version_num')::integer`).Scan(&version); err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	}
	out, err := uncovered(ctx, conn)
	if err != nil {
		return nil, err
	}
	for _, c := range caps {
		ms, err := c.members(ctx, conn)
		if err != nil {
			return out, err
		}
		adopted := false
		for _, m := range ms {
			if row, guard := c.needs(m, version); !row && !guard {
				continue
			}
			var a Adopted
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				var err error
				a, err = adoptLocked(ctx, tx, c, m.rel)
				return err
			})
			if err != nil {
				a = Adopted{Queue: c.queue, Parent: c.parent.table(), Child: m.rel.table(), Err: err}
			}
			if a.Child != (change.Table{}) {
				out = append(out, a)
				adopted = adopted || a.Err == nil
			}
		}
		if adopted {
			// The function lists the aligned children, whose rows follow DDL on the parent
			// (trigger.withChildren): the new ones join it.
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return relistChildren(ctx, tx, c) }); err != nil {
				out = append(out, Adopted{Queue: c.queue, Parent: c.parent.table(), Child: c.parent.table(),
					Err: fmt.Errorf("list new children in the capture function (their rows are read by column name meanwhile): %w", err)})
			}
		}
		gone, err := c.leftovers(ctx, conn)
		if err != nil {
			return out, err
		}
		for _, l := range gone {
			a := Adopted{Queue: c.queue, Parent: c.parent.table(), Child: l.table, Triggers: l.triggers, Released: true}
			a.Err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				for _, name := range l.triggers {
					if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `DROP TRIGGER IF EXISTS `+change.QuoteIdent(name)+` ON `+l.table.String()); err != nil {
						return fmt.Errorf("drop trigger %s of %s (no longer a child of %s): %w", name, l.table, c.parent.table(), err)
					}
				}
				return nil
			})
			out = append(out, a)
		}
	}
	return out, nil
}

// adoptLocked adopts one child in a transaction of its own: it takes the capture's row (FOR
// SHARE) and the child's lock, looks again at what the child lacks (a table add or another
// ticker may have done it meanwhile), and adopts it, queueing the rows it held. A zero
// Adopted means there was nothing left to do.
func adoptLocked(ctx context.Context, tx pgx.Tx, c capture, child relation) (Adopted, error) {
	c, err := loadCapture(ctx, tx, c.qid, c.parent.oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return Adopted{}, nil // no longer captured
	}
	if err != nil {
		return Adopted{}, err
	}
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `LOCK TABLE `+child.table().String()+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return Adopted{}, fmt.Errorf("lock table %s: %w", child.table(), err)
	}
	ms, err := c.members(ctx, tx)
	if err != nil {
		return Adopted{}, err
	}
	for _, m := range ms {
		if m.rel.oid != child.oid {
			continue
		}
		row, guard := c.needs(m, pg.ServerVersionOf(tx.Conn().PgConn()))
		if !row && !guard {
			return Adopted{}, nil
		}
		return adopt(ctx, tx, c, m.rel, row, guard, true)
	}
	return Adopted{}, nil // no longer a child
}

// leftover is a table outside the captured table's family that still has triggers calling
// its capture function.
type leftover struct {
	table    change.Table
	triggers []string
}

// leftovers lists the tables that left the captured table (DETACH PARTITION, NO INHERIT) with
// the capture's triggers still on them. Triggers the server cloned go with the detach.
func (c capture) leftovers(ctx context.Context, db pg.DB) ([]leftover, error) {
	rows, err := db.Query(ctx, `WITH RECURSIVE down(rel) AS (
			SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = $1
			UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i, down WHERE i.inhparent = down.rel)
		SELECT n.nspname, r.relname, t.tgname
		FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
		JOIN pg_catalog.pg_class r ON r.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		WHERE f.proname = $2 AND f.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'skiff')
		  AND t.tgrelid <> $1 AND t.tgrelid NOT IN (SELECT rel FROM down)
		ORDER BY 1, 2, 3`, c.parent.oid, c.funcName)
	if err != nil {
		return nil, fmt.Errorf("triggers left on former children of %s: %w", c.parent.table(), err)
	}
	var out []leftover
	for rows.Next() {
		var t change.Table
		var name string
		if err := rows.Scan(&t.Schema, &t.Name, &name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("triggers left on former children of %s: %w", c.parent.table(), err)
		}
		if len(out) == 0 || out[len(out)-1].table != t {
			out = append(out, leftover{table: t})
		}
		out[len(out)-1].triggers = append(out[len(out)-1].triggers, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("triggers left on former children of %s: %w", c.parent.table(), err)
	}
	return out, nil
}

// uncovered lists the inheritance children, not captured by the queue, of tables a queue
// captures without their children.
func uncovered(ctx context.Context, db pg.DB) ([]Adopted, error) {
	rows, err := db.Query(ctx, `SELECT q.queue_name, n.nspname, r.relname, cn.nspname, cr.relname
		FROM skiff.captured_table c JOIN skiff.queue q ON q.queue_id = c.queue_id
		JOIN pg_catalog.pg_class r ON r.oid = c.table_oid JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		JOIN pg_catalog.pg_inherits i ON i.inhparent = c.table_oid
		JOIN pg_catalog.pg_class cr ON cr.oid = i.inhrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = cr.relnamespace
		WHERE NOT c.with_children AND c.func_name <> ''
		  AND NOT EXISTS (SELECT 1 FROM skiff.captured_table o WHERE o.queue_id = c.queue_id AND o.table_oid = i.inhrelid)
		ORDER BY 1, 2, 3, 4, 5`)
	if err != nil {
		return nil, fmt.Errorf("children of tables captured without them: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Adopted, error) {
		a := Adopted{Uncovered: true}
		err := r.Scan(&a.Queue, &a.Parent.Schema, &a.Parent.Name, &a.Child.Schema, &a.Child.Name)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("children of tables captured without them: %w", err)
	}
	return out, nil
}

// alignedMembers lists the table and those of its descendants whose live columns carry the
// table's column names (cols), in the same order: their rows are the table's rows as
// record_out writes them (see trigger.withChildren).
func alignedMembers(ctx context.Context, db pg.DB, oid uint32, cols []string) ([]uint32, error) {
	rows, err := db.Query(ctx, `WITH RECURSIVE down(rel) AS (
			SELECT $1::oid
			UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i, down WHERE i.inhparent = down.rel)
		SELECT down.rel FROM down
		WHERE ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
			WHERE a.attrelid = down.rel AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) = $2::text[]
		ORDER BY 1`, oid, cols)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uint32])
}

// relistChildren regenerates the capture function of a table captured with its children, with
// its layout, key and --where, so that it lists the children aligned now. The table's columns
// must still be the layout's (else `skiff table add --refresh` is due, and does it).
func relistChildren(ctx context.Context, tx pgx.Tx, c capture) error {
	// Keeps the parent's columns still (ALTER TABLE locks the parent before its children).
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `LOCK TABLE ONLY `+c.parent.table().String()+` IN ACCESS SHARE MODE`); err != nil {
		return fmt.Errorf("lock table %s: %w", c.parent.table(), err)
	}
	c, err := loadCapture(ctx, tx, c.qid, c.parent.oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // no longer captured
	}
	if err != nil {
		return err
	}
	var layoutCols []string
	if err := tx.QueryRow(ctx, `SELECT columns FROM skiff.table_layout WHERE layout_id = $1`, c.layout).Scan(&layoutCols); err != nil {
		return fmt.Errorf("layout %d: %w", c.layout, err)
	}
	cols, err := catalog.Columns(ctx, tx, c.parent.oid)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", c.parent.table(), err)
	}
	names := make([]string, len(cols))
	for i, col := range cols {
		names[i] = col.Name
	}
	if !slices.Equal(names, layoutCols) {
		return fmt.Errorf("layout columns %v, %s now has %v: run `skiff table add --refresh %s`", layoutCols, c.parent.table(), names, c.parent.table())
	}
	_, err = installTrigger(ctx, tx, c.qid, c.layout, c.parent, cols, c.key, c.where, true, "", triggerNames{c.rowTrig, c.truncTrig})
	return err
}

// ErrChildNotCaptured: a partition or inheritance child of a table captured with its
// children lacks a capture trigger it needs (it was created or attached after the ticker's
// last `children` step): its changes are not all queued yet.
var ErrChildNotCaptured = errors.New("has no capture trigger yet")

// CheckChildren returns ErrChildNotCaptured (wrapped, naming the children) when a partition
// or inheritance child of table, which queueName captures with its children, lacks a capture
// trigger it needs; nil when none does or the table is captured otherwise. It reads the
// catalog in the caller's snapshot and locks nothing (a READ ONLY transaction may call it):
// an initial copy calls it under its own snapshot, whose rows of such a child could be
// changed later without an event (a delete, a TRUNCATE) and stay on the target for good.
func CheckChildren(ctx context.Context, db pg.DB, queueName string, table change.Table) error {
	rows, err := db.Query(ctx, `SELECT `+captureColumns+`
		WHERE q.queue_name = $1 AND n.nspname = $2 AND r.relname = $3 AND c.with_children AND c.func_name <> ''`, queueName, table.Schema, table.Name)
	if err != nil {
		return wrap(err, "captures with children", ErrNotInstalled)
	}
	caps, err := pgx.CollectRows(rows, scanCapture)
	if err != nil || len(caps) == 0 {
		return err
	}
	var version int
	if err := db.QueryRow(ctx, `SELECT pg_catalog.current_setting('server_version_num')::integer`).Scan(&version); err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	c := caps[0]
	ms, err := c.members(ctx, db)
	if err != nil {
		return err
	}
	var missing []string
	for _, m := range ms {
		if row, guard := c.needs(m, version); row || guard {
			missing = append(missing, m.rel.table().String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s %s of %s %w (the ticker's next maintenance run, or `skiff table add --refresh %s`, gives it its triggers)",
		family{}.childWord(c.parent.kind), strings.Join(missing, ", "), c.parent.table(), ErrChildNotCaptured, c.parent.table())
}
