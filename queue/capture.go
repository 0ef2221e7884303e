package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
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
	// ErrInOtherQueue: another queue captures the table; capturing it again queues every
	// write twice (TableSpec.AlsoInOtherQueue allows it).
	ErrInOtherQueue = errors.New("table is captured by another queue")
	// ErrKeyNotUnique: the --key columns are not kept unique by a non-deferrable unique
	// index over NOT NULL columns, or the table has inheritance children (or is partitioned,
	// before PostgreSQL 11), so that no index can keep its key unique across them
	// (TableSpec.KeyNotUnique takes the responsibility).
	ErrKeyNotUnique = errors.New("is not kept unique")
	// ErrCapturedWithParent: the table is a partition or child of a table the queue captures
	// with its children, or the parent of a table the queue captures on its own: its rows
	// would be captured twice.
	ErrCapturedWithParent = errors.New("its rows would be captured twice")
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
	// NoSequences: do not capture the sequences the table's inserts draw from (see
	// TableSequences), which are captured by default.
	NoSequences bool
	// AlsoInOtherQueue allows capturing a table another queue captures already (each queue
	// then gets its own event for every write); without it that is ErrInOtherQueue.
	AlsoInOtherQueue bool
	// KeyNotUnique accepts Key columns that no unique index keeps unique (the user takes
	// responsibility for their uniqueness); without it that is ErrKeyNotUnique. A table with
	// inheritance children (or a partitioned one, before PostgreSQL 11) needs it whatever its
	// key: no index keeps a key unique across children (an inheritance parent's indexes cover
	// its own rows only); it is remembered for refreshes.
	KeyNotUnique bool
	// Source, when set, is the source the queue must have: SourceLogical creates a missing
	// queue as a logical one (Plugin: PluginPgoutput or PluginTestDecoding; empty: pgoutput
	// on 10+, test_decoding before). An existing queue keeps the source it was created with;
	// asking it for another is ErrWrongSource. Empty: the queue's source (trigger for a new
	// queue).
	Source string
	Plugin string
	// InsertTrigger chooses how a trigger queue captures the table's INSERTs (PostgreSQL 10+):
	// InsertTriggerStatement, one statement-level trigger with a transition table (cheaper
	// per row of a multi-row INSERT or COPY, dearer per one-row INSERT statement; a plain
	// table only: see statementInsert), or InsertTriggerRow, the row trigger. Empty: what
	// the capture has (a refresh keeps it), the row trigger for a new capture.
	InsertTrigger string
}

// The values of TableSpec.InsertTrigger.
const (
	InsertTriggerRow       = "row"
	InsertTriggerStatement = "statement"
)

// AddResult says what AddTable did.
type AddResult struct {
	Table     change.Table
	Sequence  bool  // a sequence: recorded, no trigger
	Refreshed bool  // a capture existed and was regenerated
	Unchanged bool  // captured already with the same settings: nothing changed
	Layout    int32 // the new layout id (tables only; 0 when Unchanged)
	// QueueCreated: the queue did not exist and was created for this table.
	QueueCreated bool
	// Kind is how the queue captures the table: a table of a logical queue gets no trigger
	// (it is decoded from the queue's replication slots).
	Kind Kind
	// Sequences are the sequences of the table (TableSequences) captured now; those captured
	// before are not listed.
	Sequences []change.Table
	// OtherQueues names the other queues that capture the table too (AlsoInOtherQueue).
	OtherQueues []string
	// RenamedFrom is the name the capture knew when the table was renamed (or moved to
	// another schema) since: events written before the refresh carry that name, later ones
	// the new name, which subscriptions must route (skiff subscribe --table NEW:DEST).
	RenamedFrom change.Table
	// WithChildren: the table is partitioned or has inheritance children, and is captured
	// with them (present and future), under its own name.
	WithChildren bool
	// Children lists the partitions or children given capture triggers (with a refresh, those
	// that had none: their rows were queued too).
	Children []Adopted
}

// Conn is what AddTable and RemoveTable need: a connection that can open a transaction.
type Conn interface {
	pg.DB
	Begin(ctx context.Context) (pgx.Tx, error)
}

// AddTable captures a table (capture triggers and a layout) or a sequence in a queue,
// creating the queue when missing, in one transaction. A table already captured by the queue
// with the same settings is left as it is (AddResult.Unchanged).
func AddTable(ctx context.Context, conn Conn, queue string, spec TableSpec) (*AddResult, error) {
	res, err := AddTables(ctx, conn, queue, []TableSpec{spec})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// AddTables captures several tables and sequences in a queue in one transaction: all of them
// or, when one fails (the error names it), none, and no queue is created. The results are in
// the order of specs.
func AddTables(ctx context.Context, conn Conn, queue string, specs []TableSpec) ([]*AddResult, error) {
	var out []*AddResult
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		out = out[:0]
		for _, spec := range specs {
			res, err := addTable(ctx, tx, queue, spec)
			if err != nil {
				return err
			}
			out = append(out, res)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// relation is a resolved table or sequence.
type relation struct {
	oid    uint32
	schema string
	name   string
	kind   string
}

func (r relation) table() change.Table { return change.Table{Schema: r.schema, Name: r.name} }

// resolve finds a relation by its SQL name, read by change.ParseTableName (the one rule for
// table names: unquoted parts fold to lower case) and looked up by the server (a name without
// schema follows the search_path). It runs in a savepoint so that an unknown name does not
// abort the caller's transaction.
func resolve(ctx context.Context, tx pgx.Tx, name string) (relation, error) {
	var r relation
	t, err := change.ParseTableName(name)
	if err != nil {
		return r, err
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return r, err
	}
	err = sp.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname, c.relkind::text
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = $1::text::regclass`, t.String()).Scan(&r.oid, &r.schema, &r.name, &r.kind)
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

// adding is one table's capture being added or refreshed by addTable, in the caller's
// transaction, one method per step.
type adding struct {
	tx      pgx.Tx
	queue   string
	qid     int32
	spec    TableSpec
	rel     relation
	version int // server_version_num
	res     *AddResult
	prev    priorCapture

	// The capture's settings: the spec's, else (a refresh) the previous capture's.
	where        string
	key          []string
	keyGiven     bool
	assumed      bool // the key's uniqueness is the user's word (KeyNotUnique)
	withChildren bool
	fam          family
	cols         []catalog.Column
	kind         Kind // the queue's source
}

// priorCapture is the queue's capture of the table before this add, if any.
type priorCapture struct {
	found        bool
	where        *string
	key          []string
	keyGiven     bool
	withChildren bool
	keyAssumed   bool
	table        change.Table
	names        triggerNames // the trigger names recorded
}

func addTable(ctx context.Context, tx pgx.Tx, queue string, spec TableSpec) (*AddResult, error) {
	a := &adding{tx: tx, queue: queue, spec: spec}
	if err := a.resolve(ctx); err != nil {
		return nil, err
	}
	switch a.rel.kind {
	case "S":
		a.res.Sequence = true
		added, err := addSequence(ctx, tx, a.qid, a.rel)
		a.res.Unchanged = !added
		return a.res, err
	case "r", "p":
	default:
		return nil, fmt.Errorf("%s is not a table or a sequence (relkind %q)", a.rel.table(), a.rel.kind)
	}
	a.version = pg.ServerVersionOf(tx.Conn().PgConn())
	if err := a.checkSource(ctx, a.res.QueueCreated); err != nil {
		return nil, err
	}
	a.res.Kind = a.kind
	steps := []func(context.Context) error{a.lock, a.readPrior, a.checkOtherQueues}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	if a.prev.found && !spec.Refresh {
		if err := a.same(); err != nil {
			return nil, err
		}
		if err := a.sameInsertTrigger(ctx); err != nil {
			return nil, err
		}
		// The same capture again (a second run of the same command): nothing to change.
		a.res.Unchanged = true
		if err := a.sequences(ctx); err != nil {
			return nil, err
		}
		return a.res, nil
	}
	a.settings()
	steps = []func(context.Context) error{a.family, a.columns, a.checkKey, a.install, a.adoptChildren, a.sequences}
	if a.kind.Logical() {
		steps = []func(context.Context) error{a.logicalChecks, a.columns, a.logicalKey, a.checkPartitions, a.install, a.publish, a.sequences}
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return a.res, nil
}

// resolve creates the queue when missing and finds the relation.
func (a *adding) resolve(ctx context.Context) error {
	created, err := CreateQueue(ctx, a.tx, a.queue)
	if err != nil {
		return err
	}
	if err := a.tx.QueryRow(ctx, `SELECT skiff.queue_id($1)`, a.queue).Scan(&a.qid); err != nil {
		return wrap(err, "queue "+a.queue, ErrNoQueue)
	}
	if a.rel, err = resolve(ctx, a.tx, a.spec.Name); err != nil {
		return err
	}
	a.res = &AddResult{Table: a.rel.table(), QueueCreated: created}
	return nil
}

// lock takes the table's lock, which keeps its columns still while the trigger is made.
func (a *adding) lock(ctx context.Context) error {
	if _, err := pg.Exec(ctx, a.tx.Conn().PgConn(), `LOCK TABLE `+a.rel.table().String()+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("lock table %s: %w", a.rel.table(), err)
	}
	return nil
}

// readPrior reads the queue's capture of the table, if any.
func (a *adding) readPrior(ctx context.Context) error {
	prev := &a.prev
	err := a.tx.QueryRow(ctx, `SELECT where_sql, key_columns, key_given, with_children, key_assumed, table_schema, table_name,
			row_trigger, trunc_trigger
		FROM skiff.captured_table WHERE queue_id = $1 AND table_oid = $2`, a.qid, a.rel.oid).Scan(&prev.where, &prev.key, &prev.keyGiven,
		&prev.withChildren, &prev.keyAssumed, &prev.table.Schema, &prev.table.Name, &prev.names.row, &prev.names.trunc)
	switch {
	case err == nil:
		prev.found = true
	case errors.Is(err, pgx.ErrNoRows):
	default:
		return fmt.Errorf("table %s: %w", a.rel.table(), err)
	}
	return nil
}

// checkOtherQueues refuses a first capture of a table another queue captures, unless
// AlsoInOtherQueue.
func (a *adding) checkOtherQueues(ctx context.Context) error {
	if a.prev.found {
		return nil
	}
	// Another queue's capture of the same table: every write would be queued twice, the
	// usual sign of a mistyped --queue.
	var err error
	a.res.OtherQueues, err = otherQueues(ctx, a.tx, a.qid, a.rel.oid)
	if err != nil {
		return fmt.Errorf("table %s: %w", a.rel.table(), err)
	}
	if len(a.res.OtherQueues) > 0 && !a.spec.AlsoInOtherQueue {
		return fmt.Errorf("table %s is already captured by queue %s: %w; capturing it in queue %s too would queue every write twice "+
			"(check --queue, or give --also-in-other-queue if both queues need it)",
			a.rel.table(), strings.Join(a.res.OtherQueues, ", "), ErrInOtherQueue, a.queue)
	}
	return nil
}

// sameInsertTrigger checks that an add without Refresh that names an INSERT trigger
// (TableSpec.InsertTrigger) names the one the capture has.
func (a *adding) sameInsertTrigger(ctx context.Context) error {
	if a.spec.InsertTrigger == "" || a.kind.Logical() || a.version < 100000 {
		return nil
	}
	var has bool
	if err := a.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2 AND tgtype = 4)`,
		a.rel.oid, insertTriggerName(a.qid)).Scan(&has); err != nil {
		return fmt.Errorf("capture triggers of %s: %w", a.rel.table(), err)
	}
	if has == (a.spec.InsertTrigger == InsertTriggerStatement) {
		return nil
	}
	now := InsertTriggerRow
	if has {
		now = InsertTriggerStatement
	}
	return fmt.Errorf("table %s in queue %s: %w, with the %s INSERT trigger; use --refresh to change it",
		a.rel.table(), a.queue, ErrAlreadyAdded, now)
}

// same checks that an add without Refresh of a captured table asks for the capture it has.
func (a *adding) same() error {
	prev, spec := a.prev, a.spec
	prevWhere := ""
	if prev.where != nil {
		prevWhere = *prev.where
	}
	sameKey := !prev.keyGiven && len(spec.Key) == 0 || prev.keyGiven && slices.Equal(prev.key, spec.Key)
	if spec.Where != prevWhere || !sameKey {
		return fmt.Errorf("table %s in queue %s: %w, with other settings (%s); use --refresh to change them",
			a.rel.table(), a.queue, ErrAlreadyAdded, describeCapture(prevWhere, prev.key, prev.keyGiven))
	}
	return nil
}

// settings takes the capture's filter and key from the spec, and on a refresh what the spec
// leaves out from the previous capture.
func (a *adding) settings() {
	prev := a.prev
	a.where, a.key, a.keyGiven = a.spec.Where, a.spec.Key, len(a.spec.Key) > 0
	a.assumed = a.spec.KeyNotUnique
	if !prev.found {
		return
	}
	a.res.Refreshed = true
	if prev.table != a.rel.table() {
		a.res.RenamedFrom = prev.table
	}
	if a.where == "" && prev.where != nil {
		a.where = *prev.where
	}
	if !a.keyGiven && prev.keyGiven {
		a.key, a.keyGiven = prev.key, true
	}
	a.assumed = a.assumed || prev.keyAssumed
}

// family decides whether the table is captured with its partitions or inheritance children.
// A table is captured whole, its partitions or inheritance children with it; a table whose
// rows a capture of this queue already covers (through a parent, or on its own below this
// one) is refused: its rows would be queued twice.
func (a *adding) family(ctx context.Context) error {
	rel := a.rel
	fam, err := readFamily(ctx, a.tx, a.qid, rel.oid)
	if err != nil {
		return fmt.Errorf("table %s: %w", rel.table(), err)
	}
	a.fam = fam
	if fam.parent != nil && !a.prev.found {
		return fmt.Errorf("%s is %s of %s, which queue %s captures with its %s: %w",
			rel.table(), fam.parentWord(), fam.parent.table, a.queue, fam.parent.childrenWord(), ErrCapturedWithParent)
	}
	a.withChildren = rel.kind == "p" || fam.hasChildren
	if len(fam.capturedBelow) > 0 {
		if !a.prev.found {
			below := fam.capturedBelow[0]
			return fmt.Errorf("table %s: %s %s is captured by queue %s on its own; remove that capture first (skiff table remove), "+
				"then add %s: its %s are captured with it (%w)", rel.table(), fam.childWord(rel.kind), below, a.queue, rel.table(),
				childrenWord(rel.kind), ErrCapturedWithParent)
		}
		// A capture made before skiff captured children, beside captures of the children
		// themselves: it goes on covering the parent's own rows.
		a.withChildren = a.prev.withChildren
	}
	if a.prev.found && a.prev.withChildren {
		a.withChildren = true
	}
	a.res.WithChildren = a.withChildren
	return nil
}

// columns reads the table's columns (under its lock).
func (a *adding) columns(ctx context.Context) error {
	var err error
	if a.cols, err = catalog.Columns(ctx, a.tx, a.rel.oid); err != nil {
		return fmt.Errorf("columns of %s: %w", a.rel.table(), err)
	}
	if len(a.cols) == 0 {
		return fmt.Errorf("table %s has no columns", a.rel.table())
	}
	return nil
}

// checkKey checks the key columns given (they exist, and a unique index keeps them unique),
// or takes the primary key (not deferrable); a table captured with its children needs
// KeyNotUnique (or a partitioned one on 11+), as no index covers the whole family.
func (a *adding) checkKey(ctx context.Context) error {
	rel, tx := a.rel, a.tx
	if a.keyGiven {
		for _, k := range a.key {
			if indexOf(a.cols, k) < 0 {
				return fmt.Errorf("table %s: key column %q does not exist", rel.table(), k)
			}
		}
		// A key given now is checked; one kept from an earlier add was checked (or accepted
		// with KeyNotUnique) then. Across children no index can tell (below).
		if len(a.spec.Key) > 0 && !a.spec.KeyNotUnique {
			if err := checkKeyUnique(ctx, tx, rel, a.key); err != nil {
				return err
			}
		}
	} else {
		a.key = catalog.PrimaryKey(a.cols)
		if len(a.key) == 0 {
			hint := ""
			if rel.kind == "p" && a.version < 110000 {
				hint = " (a partitioned table has none before PostgreSQL 11)"
			}
			return fmt.Errorf("table %s: %w%s; give its identifying columns with --key col,col", rel.table(), ErrNoPrimaryKey, hint)
		}
		var deferrable bool
		if err := tx.QueryRow(ctx, `SELECT condeferrable FROM pg_catalog.pg_constraint
			WHERE conrelid = $1 AND contype = 'p'`, rel.oid).Scan(&deferrable); err != nil {
			return fmt.Errorf("primary key of %s: %w", rel.table(), err)
		}
		if deferrable {
			return fmt.Errorf("table %s: %w: a transaction can swap keys through a transient duplicate, "+
				"which cannot be replayed by key; recreate the key NOT DEFERRABLE, or give --key columns "+
				"that a non-deferrable unique index keeps unique", rel.table(), ErrDeferrableKey)
		}
	}
	if a.withChildren && !a.assumed {
		// An index of an inheritance parent covers the parent's own rows only, and a
		// partitioned table has no index at all before PostgreSQL 11.
		switch {
		case rel.kind == "r" && a.fam.hasChildren:
			return fmt.Errorf("table %s has inheritance children: its key (%s) %w across them by any index "+
				"(an inheritance parent's indexes cover its own rows only); give --key-not-unique if you guarantee "+
				"that no two rows of the parent and its children ever share a key", rel.table(), strings.Join(a.key, ","), ErrKeyNotUnique)
		case rel.kind == "p" && a.version < 110000:
			return fmt.Errorf("table %s is partitioned: its key (%s) %w across its partitions by any index "+
				"(a partitioned table has none before PostgreSQL 11); give --key-not-unique if you guarantee "+
				"that no two rows of its partitions ever share a key", rel.table(), strings.Join(a.key, ","), ErrKeyNotUnique)
		}
	}
	return nil
}

// install records the table's layout, (re)creates its capture function and triggers and
// records the capture.
func (a *adding) install(ctx context.Context) error {
	rel, tx := a.rel, a.tx
	names, types := make([]string, len(a.cols)), make([]string, len(a.cols))
	for i, c := range a.cols {
		names[i], types[i] = c.Name, c.Type
	}
	var layout int32
	// The attribute numbers and relnatts are read under the table's lock, as cols was: they
	// describe the same columns (queue/plan.go decodes rows written after later DDL with them).
	err := tx.QueryRow(ctx, `INSERT INTO skiff.table_layout (queue_id, table_oid, table_schema, table_name, columns, key_columns, column_types,
			column_attnums, natts, created_xmin)
		VALUES ($1, $2, $3, $4, $5, $6, $7,
			ARRAY(SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = $2 AND attnum > 0 AND NOT attisdropped ORDER BY attnum),
			(SELECT relnatts FROM pg_catalog.pg_class WHERE oid = $2),
			pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot()))
		RETURNING layout_id`, a.qid, rel.oid, rel.schema, rel.name, names, a.key, types).Scan(&layout)
	if err != nil {
		return fmt.Errorf("record layout of %s: %w", rel.table(), err)
	}
	a.res.Layout = layout
	var tg trigger
	if !a.kind.Logical() {
		if tg, err = installTrigger(ctx, tx, a.qid, layout, rel, a.cols, a.key, a.where, a.withChildren, a.spec.InsertTrigger, a.prev.names); err != nil {
			return err
		}
	} else if tg.truncTrig, err = a.truncateTrigger(ctx); err != nil {
		// A logical queue's tables have no capture function (empty names in captured_table),
		// only a TRUNCATE marker trigger before 11.
		return err
	}
	var whereArg *string
	if a.where != "" {
		whereArg = &a.where
	}
	if a.prev.found {
		_, err = tx.Exec(ctx, `UPDATE skiff.captured_table SET table_schema = $3, table_name = $4, where_sql = $5,
			key_columns = $6, key_given = $7, layout_id = $8, func_name = $9, row_trigger = $10, trunc_trigger = $11,
			capture_version = $12, with_children = $13, key_assumed = $14
			WHERE queue_id = $1 AND table_oid = $2`,
			a.qid, rel.oid, rel.schema, rel.name, whereArg, a.key, a.keyGiven, layout, tg.funcName, tg.rowTrig, tg.truncTrig, captureVersion,
			a.withChildren, a.assumed && a.withChildren)
	} else {
		_, err = tx.Exec(ctx, `INSERT INTO skiff.captured_table (queue_id, table_oid, table_schema, table_name, where_sql,
			key_columns, key_given, layout_id, func_name, row_trigger, trunc_trigger, capture_version, with_children, key_assumed)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			a.qid, rel.oid, rel.schema, rel.name, whereArg, a.key, a.keyGiven, layout, tg.funcName, tg.rowTrig, tg.truncTrig, captureVersion,
			a.withChildren, a.assumed && a.withChildren)
	}
	if err != nil {
		return fmt.Errorf("record capture of %s: %w", rel.table(), err)
	}
	return nil
}

// adoptChildren gives the children there now their triggers in this transaction. Their rows
// are the table's: a first add leaves them to the copy, a refresh queues the rows of children
// that had no trigger (created while no ticker ran).
func (a *adding) adoptChildren(ctx context.Context) error {
	if !a.withChildren {
		return nil
	}
	cp, err := loadCapture(ctx, a.tx, a.qid, a.rel.oid)
	if err != nil {
		return err
	}
	a.res.Children, err = adoptAll(ctx, a.tx, cp, a.prev.found)
	return err
}

// sequences captures the table's sequences too, unless NoSequences.
func (a *adding) sequences(ctx context.Context) error {
	if a.spec.NoSequences {
		return nil
	}
	var err error
	a.res.Sequences, err = addTableSequences(ctx, a.tx, a.qid, a.rel)
	return err
}

// describeCapture says how a table is captured, for messages.
func describeCapture(where string, key []string, keyGiven bool) string {
	w := "no --where"
	if where != "" {
		w = "--where " + where
	}
	if keyGiven {
		return w + ", --key " + strings.Join(key, ",")
	}
	return w + ", keyed by its primary key"
}

// otherQueues names the queues other than qid that capture a table's rows: the table, one of
// its partitions or inheritance children (which a capture of the table with its children
// covers), or a parent of it captured with its children.
func otherQueues(ctx context.Context, tx pgx.Tx, qid int32, oid uint32) ([]string, error) {
	rows, err := tx.Query(ctx, `WITH RECURSIVE
			up(rel) AS (SELECT $1::oid UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i, up WHERE i.inhrelid = up.rel),
			down(rel) AS (SELECT $1::oid UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i, down WHERE i.inhparent = down.rel)
		SELECT DISTINCT q.queue_name FROM skiff.captured_table c JOIN skiff.queue q ON q.queue_id = c.queue_id
		WHERE c.queue_id <> $2
		  AND (c.table_oid IN (SELECT rel FROM down) OR c.with_children AND c.table_oid IN (SELECT rel FROM up))
		ORDER BY 1`, oid, qid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// checkKeyUnique refuses key columns (--key) that the database does not keep unique: a row
// replayed by key must find exactly one row. It takes a unique index that is valid, not
// partial, not DEFERRABLE (a transaction could swap keys through a transient duplicate), and
// whose key columns are all among the given ones, and key columns that are NOT NULL (a NULL
// never equals anything, so the row could not be found by its key).
func checkKeyUnique(ctx context.Context, tx pgx.Tx, rel relation, key []string) error {
	fail := func(why string) error {
		return fmt.Errorf("table %s: --key (%s) %w: %s (a row replayed by its key must find that row alone; "+
			"give --key-not-unique if you guarantee that no two rows ever share a key)",
			rel.table(), strings.Join(key, ","), ErrKeyNotUnique, why)
	}
	// Unique constraints may be DEFERRABLE from 9.0 (Index.Immediate); INCLUDE columns (11)
	// are not part of what is unique.
	idxs, err := catalog.Indexes(ctx, tx, rel.oid)
	if err != nil {
		return fmt.Errorf("unique indexes of %s: %w", rel.table(), err)
	}
	var why []string
	unique := false
	for _, x := range idxs {
		if !x.Unique {
			continue
		}
		covered := true
		for _, c := range x.Columns[:x.NKey] {
			covered = covered && c != "" && slices.Contains(key, c) // an expression ("") is no column
		}
		switch {
		case !covered:
		case !x.Valid:
			why = append(why, "index "+x.Name+" is not valid")
		case x.Partial:
			why = append(why, "index "+x.Name+" is partial")
		case !x.Immediate:
			why = append(why, "index "+x.Name+" is DEFERRABLE")
		default:
			unique = true
		}
	}
	switch {
	case unique:
	case len(why) == 0:
		return fail("no unique index has all its columns among them (CREATE UNIQUE INDEX ... ON " + rel.table().String() + " (...))")
	default:
		return fail(strings.Join(why, ", "))
	}
	cols, err := catalog.Columns(ctx, tx, rel.oid)
	if err != nil {
		return fmt.Errorf("columns of %s: %w", rel.table(), err)
	}
	var nullable []string
	for _, c := range cols {
		if !c.NotNull {
			nullable = append(nullable, c.Name)
		}
	}
	for _, k := range key {
		if slices.Contains(nullable, k) {
			return fail("column " + change.QuoteIdent(k) + " may be NULL (ALTER TABLE ... ALTER COLUMN ... SET NOT NULL)")
		}
	}
	return nil
}

// captureVersion is the version of the capture function's generator, recorded per captured
// table (skiff.captured_table.capture_version). UpgradeCaptures regenerates the functions of
// older versions. 2: search_path pinned, rows and keys through record_out, no name in the
// body, --where checked for what it calls. 3: the row path schema-qualified throughout, and
// no search_path SET clause on a plain table's function without a --where (pinsSearchPath).
// 4: on PostgreSQL 10+, the statement-level INSERT branch (trigger.stmtInsert); new
// captures of plain tables take their INSERTs with a statement trigger, older ones keep
// their row trigger (the regenerated function serves both). 5: an UPDATE's key compared by
// pg_catalog's equality operators when every key column allows it (keyByOperator), instead
// of as the text of two ROW()s. 6: with the statement-level INSERT trigger, an UPDATE or
// DELETE made from a trigger is refused while the table has a trigger of the user's
// (foreignTriggerCheck).
const captureVersion = 6

// installTrigger (re)creates the capture function and triggers of a table for a layout: the
// settings its column types need pinned, the --where compiled and checked, every statement
// sent on its own. The caller holds the table's lock. withChildren makes the capture of a
// partitioned table or inheritance parent (see trigger.withChildren); the children's own
// triggers are the caller's (adoptAll).
//
// insertTrigger is TableSpec.InsertTrigger: empty keeps the INSERT trigger the capture has.
// recorded holds the names of the capture's row and truncate triggers as captured_table
// records them (empty for a new capture, which gets rowTriggerName and truncTriggerName): a
// capture keeps the names it was made with (see rowTriggerName).
func installTrigger(ctx context.Context, tx pgx.Tx, qid, layout int32, rel relation, cols []catalog.Column, key []string, where string, withChildren bool, insertTrigger string, recorded triggerNames) (trigger, error) {
	version := pg.ServerVersionOf(tx.Conn().PgConn())
	pins, err := settingPins(ctx, tx, cols, version)
	if err != nil {
		return trigger{}, fmt.Errorf("column types of %s: %w", rel.table(), err)
	}
	tg := newTrigger(qid, layout, rel, withChildren, version)
	if recorded.row != "" {
		tg.rowTrig = recorded.row
	}
	if recorded.trunc != "" {
		tg.truncTrig = recorded.trunc
	}
	tg.key, tg.pins = key, pins
	tg.keyByOperator = keyByOperator(cols, key)
	if withChildren {
		tg.columns = make([]string, len(cols))
		for i, c := range cols {
			tg.columns[i] = c.Name
		}
		if tg.aligned, err = alignedMembers(ctx, tx, rel.oid, tg.columns); err != nil {
			return trigger{}, fmt.Errorf("children of %s: %w", rel.table(), err)
		}
	}
	if where != "" {
		tg.whereNew, tg.whereOld, err = compileWhere(ctx, tx, rel, cols, where)
		if err != nil {
			return trigger{}, err
		}
		if withChildren {
			names := make(map[string]bool, len(cols))
			for _, c := range cols {
				names[c.Name] = true
			}
			if tg.whereRow, err = qualifyColumns(where, names, "r"); err != nil {
				return trigger{}, fmt.Errorf("table %s: --where %q: %w", rel.table(), where, err)
			}
		}
		tg.pins = append(tg.pins, wherePins(where, version)...)
	}
	allowed, err := statementInsert(ctx, tx, version, rel, withChildren, where)
	if err != nil {
		return trigger{}, fmt.Errorf("triggers of %s: %w", rel.table(), err)
	}
	switch insertTrigger {
	case InsertTriggerStatement:
		if !allowed {
			return trigger{}, fmt.Errorf("table %s: %w", rel.table(), ErrNoStatementInsert)
		}
		tg.stmtInsert = true
	case "":
		if allowed {
			tg.stmtInsert, err = hasStatementInsert(ctx, tx, tg, rel.oid)
			if err != nil {
				return trigger{}, fmt.Errorf("capture triggers of %s: %w", rel.table(), err)
			}
		}
	case InsertTriggerRow:
	default:
		return trigger{}, fmt.Errorf("table %s: insert trigger %q: want %q or %q", rel.table(), insertTrigger, InsertTriggerRow, InsertTriggerStatement)
	}
	if tg.keepTriggers, err = triggersInPlace(ctx, tx, tg, rel.oid); err != nil {
		return trigger{}, fmt.Errorf("capture triggers of %s: %w", rel.table(), err)
	}
	if !tg.keepTriggers {
		names := []string{tg.rowTrig, tg.truncTrig, tg.insTrig, tg.aloneTrig}
		if tg.withChildren {
			names = append(names, tg.guardTrig)
		}
		if err := mayDropTriggers(ctx, tx, rel.oid, rel.table(), names, "run this command again"); err != nil {
			return trigger{}, err
		}
		if !withChildren {
			// Made again: under today's names (rowTriggerName), the recorded ones dropped. A
			// capture with children keeps its names: its children's triggers bear them.
			row, trunc := rowTriggerName(qid), truncTriggerName(qid)
			for _, n := range []string{tg.rowTrig, tg.truncTrig} {
				if n != row && n != trunc {
					tg.legacy = append(tg.legacy, n)
				}
			}
			tg.rowTrig, tg.truncTrig = row, trunc
		}
	}
	for _, stmt := range tg.ddl() {
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), stmt); err != nil {
			return trigger{}, fmt.Errorf("create capture trigger on %s: %w", rel.table(), err)
		}
	}
	return tg, nil
}

// operatorKeyTypes are the types (pg_type OIDs) whose values pg_catalog's = finds equal
// exactly when their text forms are equal, so comparing an UPDATE's old and new key by the
// operator says what comparing their texts says: int2, int4, int8, oid, bool, date, uuid,
// and text and varchar under their type's collation (deterministic: a database's default
// collation always is, where the column's own COLLATE may not be).
var operatorKeyTypes = map[uint32]bool{21: true, 23: true, 20: true, 26: true, 16: true, 1082: true, 2950: true, 25: true, 1043: true}

// keyByOperator reports whether every key column is NOT NULL, of one of operatorKeyTypes, and
// has its type's collation: the capture function then compares an UPDATE's key by
// OPERATOR(pg_catalog.=), column by column, instead of building and comparing two texts
// (record_out of ROW(OLD.k…) and ROW(NEW.k…)): measured on 15 with 100,000 one-row-key
// updates, 1.4 µs of the trigger's 7.7 µs per row. A NULL would make = unknown (the old key
// then sent as if changed), hence NOT NULL.
func keyByOperator(cols []catalog.Column, key []string) bool {
	for _, k := range key {
		i := indexOf(cols, k)
		if i < 0 {
			return false
		}
		c := cols[i]
		if !c.NotNull || !operatorKeyTypes[c.TypeOID] || c.Collation != "" {
			return false
		}
	}
	return len(key) > 0
}

// triggersInPlace reports whether the table already has every capture trigger of the queue
// it should have, enabled as created, calling the capture function. A refresh (table add
// --refresh, or UpgradeCaptures at init provider) then only replaces the function's body:
// dropping a trigger needs the table's ownership, which the role running skiff need not have
// (docs/roles.md), while creating one needs only the TRIGGER privilege. tgtype 29 is a row
// trigger AFTER INSERT OR DELETE OR UPDATE, 25 one AFTER DELETE OR UPDATE, 5 one AFTER
// INSERT (the companion aloneTrig), 4 a statement trigger AFTER INSERT, 32 one AFTER TRUNCATE, 34 one BEFORE TRUNCATE (the guard of an
// inheritance parent). A partitioned table before 11 has no row trigger.
//
// The set in place must be the one the capture gets: the row trigger on INSERT, UPDATE and
// DELETE, or, when tg.stmtInsert (TableSpec.InsertTrigger statement, or that set in place
// and still allowed: installTrigger), the row trigger on UPDATE and DELETE with the
// statement-level INSERT trigger and its companion (aloneTrig). A capture that has the other
// set (a choice changed, a --where or a trigger of the user's since: see statementInsert)
// gets its triggers made again.
func triggersInPlace(ctx context.Context, db pg.DB, tg trigger, tableOID uint32) (bool, error) {
	guard := ""
	if tg.guardOnParent {
		guard = tg.guardTrig
	}
	var rowAll, rowUD, ins, alone, trunc, guarded bool
	err := db.QueryRow(ctx, `SELECT
			coalesce(bool_or(t.tgname = $3 AND t.tgtype = 29), false), coalesce(bool_or(t.tgname = $3 AND t.tgtype = 25), false),
			coalesce(bool_or(t.tgname = $4 AND t.tgtype = 4), false), coalesce(bool_or(t.tgname = $5 AND t.tgtype = 5), false),
			coalesce(bool_or(t.tgname = $6 AND t.tgtype = 32), false), coalesce(bool_or(t.tgname = $7 AND t.tgtype = 34), false)
		FROM pg_catalog.pg_trigger t
		JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
		JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE t.tgrelid = $1 AND n.nspname = 'skiff' AND p.proname = $2 AND t.tgenabled = 'O'`,
		tableOID, tg.funcName, tg.rowTrig, tg.insTrig, tg.aloneTrig, tg.truncTrig, guard).Scan(&rowAll, &rowUD, &ins, &alone, &trunc, &guarded)
	if err != nil || !trunc || tg.guardOnParent && !guarded {
		return false, err
	}
	if !tg.rowOnParent {
		return !rowAll && !rowUD && !ins && !alone, nil
	}
	if tg.stmtInsert {
		return rowUD && ins && alone, nil
	}
	return rowAll && !ins && !alone, nil
}

// ErrNotTableOwner: a capture trigger on a table must be dropped (to be made again, or at
// table remove), and the role running skiff does not own the table. The error wrapping it
// names the owner and the statements for the owner to run.
var ErrNotTableOwner = errors.New("dropping a trigger needs the table's ownership")

// mayDropTriggers checks, before any is dropped, that the role running skiff may drop those of
// the named triggers the table has: it must own the table (be a member of its owner, or a
// superuser). Otherwise the error (ErrNotTableOwner) lists the DROP TRIGGER statements for the
// owner to run first, and then what to do (then): creating a trigger needs only the TRIGGER
// privilege, so once the owner has dropped them the command succeeds (docs/roles.md).
func mayDropTriggers(ctx context.Context, tx pgx.Tx, oid uint32, t change.Table, names []string, then string) error {
	var owner, me string
	var owns bool
	var present []string
	err := tx.QueryRow(ctx, `SELECT pg_catalog.pg_get_userbyid(c.relowner), current_user, pg_catalog.pg_has_role(c.relowner, 'USAGE'),
			ARRAY(SELECT t.tgname::text FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname::text = ANY ($2::text[]) ORDER BY t.tgname)
		FROM pg_catalog.pg_class c WHERE c.oid = $1`, oid, names).Scan(&owner, &me, &owns, &present)
	if err != nil {
		return fmt.Errorf("owner and triggers of %s: %w", t, err)
	}
	if owns || len(present) == 0 {
		return nil
	}
	var b strings.Builder
	for _, name := range present {
		fmt.Fprintf(&b, "\n  DROP TRIGGER %s ON %s;", change.QuoteIdent(name), t)
	}
	return fmt.Errorf("table %s: skiff's triggers on it must be dropped, and role %s does not own it: as its owner %s (or a superuser) run%s\nthen %s: %w",
		t, change.QuoteIdent(me), change.QuoteIdent(owner), b.String(), then, ErrNotTableOwner)
}

// ErrNoStatementInsert: the statement-level INSERT trigger was asked for a table that cannot
// have it (statementInsert).
var ErrNoStatementInsert = errors.New("a statement-level INSERT trigger needs PostgreSQL 10+ and a plain table (not partitioned, no inheritance parent or child) captured without --where, with no trigger of its own")

// hasStatementInsert reports whether the table has the capture's statement-level INSERT
// trigger (a capture made with InsertTriggerStatement, which a refresh without a choice keeps).
func hasStatementInsert(ctx context.Context, db pg.DB, tg trigger, tableOID uint32) (bool, error) {
	var has bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
		JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE t.tgrelid = $1 AND n.nspname = 'skiff' AND p.proname = $2 AND t.tgname = $3 AND t.tgtype = 4)`,
		tableOID, tg.funcName, tg.insTrig).Scan(&has)
	return has, err
}

// statementInsert reports whether a capture may take its INSERTs with a statement-level
// trigger (trigger.stmtInsert, when TableSpec.InsertTrigger asks for it): PostgreSQL 10+
// (transition tables), a plain table (relkind r) that is neither an inheritance or partition
// child nor a parent, captured without --where, and no trigger on the table but skiff's own
// and the server's internal ones (foreign keys).
//
// Why these. A statement trigger fires only for the table a statement names: rows routed to
// a partition through its parent, or deleted through an inheritance parent, would not fire it
// (and the companion trigger aloneTrig makes the server refuse to make the table a partition
// or an inheritance child afterwards). A trigger of the user's could write rows of the table while
// the statement runs (a BEFORE ROW trigger updating rows inserted earlier in the same
// statement, an AFTER ROW trigger updating the row it fired for): their events would come
// before the statement's INSERT events, which hold the rows as inserted, and the replay would
// lose the change. With the row trigger they come in the order they happened. A trigger
// added later is DDL on the captured table: skiff table add --refresh, due after DDL anyway,
// switches the capture back to the row trigger.
func statementInsert(ctx context.Context, db pg.DB, version int, rel relation, withChildren bool, where string) (bool, error) {
	if version >= 100000 && rel.kind == "r" && !withChildren && where == "" {
		var other bool
		err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid = $1 OR inhparent = $1)
			OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgname NOT LIKE 'skiff\_%' AND tgname NOT LIKE '!skiff\_%')`, rel.oid).Scan(&other)
		return !other, err
	}
	return false, nil
}

// insertTriggerName is the statement-level INSERT trigger of queue qid's captures
// (trigger.stmtInsert). Its name is derived, not recorded: the drop paths drop it (IF EXISTS)
// whatever trigger set a capture has.
func insertTriggerName(qid int32) string { return fmt.Sprintf("skiff_insert_q%d", qid) }

// aloneTriggerName is the companion of queue qid's statement-level INSERT trigger: a row
// trigger with a transition table that never fires (WHEN false) and makes the server refuse
// ATTACH PARTITION and INHERIT for the table, naming it ("trigger "skiff_captured_q3" prevents
// table ... from becoming a partition"). Derived, not recorded, like insertTriggerName.
func aloneTriggerName(qid int32) string { return fmt.Sprintf("skiff_captured_q%d", qid) }

// triggerNames are the names of a capture's row and truncate triggers.
type triggerNames struct{ row, trunc string }

// rowTriggerName is the row trigger of queue qid's captures made from capture version 6 on,
// and truncTriggerName their TRUNCATE trigger. The server fires the AFTER triggers of one row
// (and of one TRUNCATE) in the order of their names, and a capture trigger must fire before
// the user's: a trigger of the user's that updates or deletes the row it fired for (or inserts
// rows after a TRUNCATE) writes events of its own, and they must come after the event of the
// change that fired it — the other way round the replica keeps the row as first inserted (or
// truncates the rows inserted after the TRUNCATE). "!" sorts before digits, letters and "_",
// the first characters of every name but quoted oddities (a space, or "!" itself followed by
// a lower byte); the names skiff_capture_q<N> and skiff_truncate_q<N> of captures made before
// sorted after most lowercase names (audit_fix). A capture keeps the names it was made with
// (recorded in captured_table: dropping a trigger to rename it needs the table's ownership,
// which skiff's role need not have); a capture whose triggers are made again (a set that is
// no longer the one in place) gets the new names.
func rowTriggerName(qid int32) string { return fmt.Sprintf("!skiff_capture_q%d", qid) }

// truncTriggerName: see rowTriggerName.
func truncTriggerName(qid int32) string { return fmt.Sprintf("!skiff_truncate_q%d", qid) }

// newTrigger names the function and triggers of a capture and says where its triggers go.
func newTrigger(qid, layout int32, rel relation, withChildren bool, version int) trigger {
	return trigger{
		queueID:      qid,
		layout:       layout,
		table:        rel.table(),
		funcName:     fmt.Sprintf("capture_q%d_t%d", qid, rel.oid),
		rowTrig:      rowTriggerName(qid),
		truncTrig:    truncTriggerName(qid),
		insTrig:      insertTriggerName(qid),
		aloneTrig:    aloneTriggerName(qid),
		guardTrig:    fmt.Sprintf("skiff_guard_q%d", qid),
		withChildren: withChildren,
		parentOID:    rel.oid,
		version:      version,
		// A partitioned table holds no rows: before 11 it cannot have a row trigger at all;
		// from 11 its row trigger is cloned onto every partition, present and future.
		rowOnParent: rel.kind != "p" || version >= 110000,
		// An inheritance parent has rows of its own, which TRUNCATE ONLY removes.
		guardOnParent: withChildren && rel.kind == "r",
	}
}

// Upgraded is a capture UpgradeCaptures regenerated, or could not.
type Upgraded struct {
	Queue string
	Table change.Table
	Err   error // why it could not be regenerated; its old function stays
}

// FiredBefore is a capture whose triggers, under names a skiff before capture version 6
// gave them (rowTriggerName), fire after triggers of the user's on the same table: their
// changes to the row that fired them (or rows inserted after a TRUNCATE) would be queued
// before the change itself.
type FiredBefore struct {
	Queue    string
	Table    change.Table
	Triggers []string // the user's triggers that fire before the capture's, in firing order
	Drop     string   // the capture's trigger the table's owner drops before a refresh
}

// CapturesFiredBefore lists the trigger queues' captures still under the old trigger names
// whose table has an enabled trigger (not the server's, not skiff's) whose name sorts before
// the capture's row or truncate trigger: those whose events can come out of order. A capture
// moves to the new names when its triggers are made again: the table's owner drops the
// truncate trigger (Drop) and skiff table add --refresh makes both again. The server's own
// triggers (foreign keys) are told by their functions, in pg_catalog (pg_trigger.tgisinternal
// is 9.0+), skiff's by theirs, in skiff.
func CapturesFiredBefore(ctx context.Context, db pg.DB) ([]FiredBefore, error) {
	rows, err := db.Query(ctx, `SELECT q.queue_name, n.nspname, r.relname, c.trunc_trigger,
			ARRAY(SELECT t.tgname::text FROM pg_catalog.pg_trigger t
				JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace
				WHERE t.tgrelid = c.table_oid AND fn.nspname NOT IN ('pg_catalog', 'skiff') AND t.tgenabled <> 'D'
				AND (t.tgname < c.row_trigger::name OR t.tgname < c.trunc_trigger::name) ORDER BY t.tgname)
		FROM skiff.captured_table c JOIN skiff.queue q ON q.queue_id = c.queue_id
		JOIN pg_catalog.pg_class r ON r.oid = c.table_oid
		JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		WHERE c.func_name <> '' AND c.row_trigger NOT LIKE '!%'
		ORDER BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("captures whose triggers fire after the user's: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (FiredBefore, error) {
		var f FiredBefore
		err := r.Scan(&f.Queue, &f.Table.Schema, &f.Table.Name, &f.Drop, &f.Triggers)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("captures whose triggers fire after the user's: %w", err)
	}
	var out []FiredBefore
	for _, f := range all {
		if len(f.Triggers) > 0 {
			out = append(out, f)
		}
	}
	return out, nil
}

// UpgradeCaptures regenerates, each in a transaction of its own, the capture functions made
// by an older version of skiff (capture_version below the current one), keeping each table's
// layout, key and --where: `skiff init provider` runs it after the migrations. A capture whose
// --where no longer passes the checks (it calls something a role other than a superuser or
// the current one owns, or a volatile function) keeps its old function, pinned to
// search_path pg_catalog, pg_temp by the migration, and is reported with the reason.
func UpgradeCaptures(ctx context.Context, conn Conn) ([]Upgraded, error) {
	// The table's name now (it may have been renamed since it was added); a dropped table
	// has no trigger to regenerate.
	rows, err := conn.Query(ctx, `SELECT q.queue_name, c.queue_id, c.table_oid, n.nspname, r.relname, r.relkind::text,
			coalesce(c.where_sql, ''), c.key_columns, c.layout_id, c.with_children, c.row_trigger, c.trunc_trigger
		FROM skiff.captured_table c JOIN skiff.queue q ON q.queue_id = c.queue_id
		JOIN pg_catalog.pg_class r ON r.oid = c.table_oid
		JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		WHERE c.capture_version < $1 AND c.func_name <> ''
		ORDER BY 1, 4, 5`, captureVersion)
	if err != nil {
		return nil, fmt.Errorf("list captures to upgrade: %w", err)
	}
	type capture struct {
		queue        string
		qid          int32
		rel          relation
		where        string
		key          []string
		layout       int32
		withChildren bool
		names        triggerNames
	}
	todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (capture, error) {
		var c capture
		err := r.Scan(&c.queue, &c.qid, &c.rel.oid, &c.rel.schema, &c.rel.name, &c.rel.kind, &c.where, &c.key, &c.layout, &c.withChildren, &c.names.row, &c.names.trunc)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("list captures to upgrade: %w", err)
	}
	var out []Upgraded
	for _, c := range todo {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `LOCK TABLE `+c.rel.table().String()+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
				return fmt.Errorf("lock table %s: %w", c.rel.table(), err)
			}
			cols, err := catalog.Columns(ctx, tx, c.rel.oid)
			if err != nil {
				return fmt.Errorf("columns of %s: %w", c.rel.table(), err)
			}
			if _, err := installTrigger(ctx, tx, c.qid, c.layout, c.rel, cols, c.key, c.where, c.withChildren, "", c.names); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE skiff.captured_table SET capture_version = $3 WHERE queue_id = $1 AND table_oid = $2`,
				c.qid, c.rel.oid, captureVersion)
			return err
		})
		out = append(out, Upgraded{Queue: c.queue, Table: c.rel.table(), Err: err})
	}
	return out, nil
}

// addSequence records a sequence in a queue; it reports false when the queue had it already.
func addSequence(ctx context.Context, tx pgx.Tx, qid int32, rel relation) (bool, error) {
	tag, err := tx.Exec(ctx, `INSERT INTO skiff.captured_sequence (queue_id, seq_oid, seq_schema, seq_name)
		SELECT $1, $2, $3, $4 WHERE NOT EXISTS
		(SELECT 1 FROM skiff.captured_sequence WHERE queue_id = $1 AND seq_oid = $2)`, qid, rel.oid, rel.schema, rel.name)
	if err != nil {
		return false, fmt.Errorf("record sequence %s: %w", rel.table(), err)
	}
	return tag.RowsAffected() == 1, nil
}

// addTableSequences records the sequences of a table (tableSequences) in a queue and returns
// those it had not yet.
func addTableSequences(ctx context.Context, tx pgx.Tx, qid int32, rel relation) ([]change.Table, error) {
	seqs, err := tableSequences(ctx, tx, rel.oid)
	if err != nil {
		return nil, fmt.Errorf("sequences of %s: %w", rel.table(), err)
	}
	var out []change.Table
	for _, sq := range seqs {
		added, err := addSequence(ctx, tx, qid, sq)
		if err != nil {
			return nil, err
		}
		if added {
			out = append(out, sq.table())
		}
	}
	return out, nil
}

// tableSequences returns the sequences a table's inserts draw from (catalog.Sequences).
func tableSequences(ctx context.Context, db pg.DB, oid uint32) ([]relation, error) {
	seqs, err := catalog.Sequences(ctx, db, oid)
	if err != nil {
		return nil, err
	}
	out := make([]relation, len(seqs))
	for i, sq := range seqs {
		out[i] = relation{oid: sq.OID, schema: sq.Name.Schema, name: sq.Name.Name, kind: "S"}
	}
	return out, nil
}

// TableSequences returns the sequences a table's inserts draw from (owned by its serial or
// identity columns, or called by its column defaults); none when the table does not exist.
func TableSequences(ctx context.Context, db pg.DB, t change.Table) ([]change.Table, error) {
	oid, err := catalog.Lookup(ctx, db, t, "")
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", t, err)
	}
	seqs, err := tableSequences(ctx, db, oid)
	if err != nil {
		return nil, fmt.Errorf("sequences of %s: %w", t, err)
	}
	out := make([]change.Table, len(seqs))
	for i, s := range seqs {
		out[i] = s.table()
	}
	return out, nil
}

// SequenceUsers maps each sequence that tables of a queue draw from (TableSequences) to those
// tables. With SequenceBelongs it says which of the queue's sequences go to which target.
func SequenceUsers(ctx context.Context, db pg.DB, queue string) (map[change.Table][]change.Table, error) {
	tables, err := Tables(ctx, db, queue)
	if err != nil {
		return nil, err
	}
	used := map[change.Table][]change.Table{}
	for _, ct := range tables {
		seqs, err := TableSequences(ctx, db, ct.Table)
		if err != nil {
			return nil, err
		}
		for _, sq := range seqs {
			used[sq] = append(used[sq], ct.Table)
		}
	}
	return used, nil
}

// SequenceBelongs reports whether a sequence the queue captures belongs on a target whose
// subscription replicates sources, given users, the queue's tables that draw from it (its
// entry of SequenceUsers): a sequence no table of the queue draws from stands alone and goes
// to every target; one that tables draw from goes where one of them goes, and is another
// subscription's otherwise.
func SequenceBelongs(users, sources []change.Table) bool {
	return len(users) == 0 || slices.ContainsFunc(users, func(u change.Table) bool { return slices.Contains(sources, u) })
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
		var withChildren bool
		err = tx.QueryRow(ctx, `DELETE FROM skiff.captured_table WHERE queue_id = $1 AND table_oid = $2
			RETURNING func_name, row_trigger, trunc_trigger, with_children`, qid, rel.oid).Scan(&fn, &rowTrig, &truncTrig, &withChildren)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("table %s in queue %s: %w", t, queue, ErrNotCaptured)
		}
		if err != nil {
			return fmt.Errorf("remove table %s: %w", t, err)
		}
		if fn == "" {
			// A logical queue's table: no capture trigger (a TRUNCATE marker trigger before
			// 11); it leaves the queue's publication.
			if rel.kind == "dropped" {
				return nil
			}
			if err := dropTruncateTrigger(ctx, tx, t, truncTrig); err != nil {
				return err
			}
			return unpublish(ctx, tx, qid, t, rel.oid)
		}
		c := dropping{t: t, oid: rel.oid, present: rel.kind != "dropped", withChildren: withChildren, fn: fn, rowTrig: rowTrig, truncTrig: truncTrig}
		return c.drop(ctx, tx, qid, "run skiff table remove again")
	})
	return t, err
}

// dropping is a capture being dropped (table remove, queue drop).
type dropping struct {
	t                      change.Table // the table's current name (its recorded one when it is gone)
	oid                    uint32
	present, withChildren  bool // present: the table still exists
	fn, rowTrig, truncTrig string
}

// drop drops the capture triggers of a table (by its current name; none when the table is
// gone) and its capture function, each statement on its own. The triggers a capture with
// children gave the table's partitions or children call the function too: they go with it
// (CASCADE). The statement-level INSERT trigger of captures made since capture version 4
// (trigger.stmtInsert) and its companion are dropped if the table has them. A role that does
// not own the table gets ErrNotTableOwner, with the statements for the owner and then what to
// do after them.
func (c dropping) drop(ctx context.Context, tx pgx.Tx, qid int32, then string) error {
	t, fn, withChildren := c.t, c.fn, c.withChildren
	drop := `DROP FUNCTION IF EXISTS skiff.` + change.QuoteIdent(fn) + `()`
	if withChildren {
		drop += ` CASCADE`
	}
	stmts := []string{drop}
	if c.present {
		names := []string{c.rowTrig, c.truncTrig}
		if pg.ServerVersionOf(tx.Conn().PgConn()) >= 100000 {
			names = append(names, insertTriggerName(qid), aloneTriggerName(qid))
		}
		if err := mayDropTriggers(ctx, tx, c.oid, t, names, then); err != nil {
			return err
		}
		var triggers []string
		for _, name := range names {
			triggers = append(triggers, `DROP TRIGGER IF EXISTS `+change.QuoteIdent(name)+` ON `+t.String())
		}
		stmts = append(triggers, stmts...)
	}
	for _, stmt := range stmts {
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), stmt); err != nil {
			return fmt.Errorf("remove capture of %s: %w", t, err)
		}
	}
	return nil
}

// ErrHasConsumers is returned (wrapped, naming them) by DropQueue without force when
// consumers are registered on the queue.
var ErrHasConsumers = errors.New("queue has consumers")

// Dropped says what DropQueue removed.
type Dropped struct {
	Tables    []change.Table // tables no longer captured (current names; a dropped table by its recorded one)
	Sequences []change.Table // sequences no longer captured
	Consumers []string       // consumers unregistered (force)
}

// DropQueue drops a queue in one transaction: the capture triggers and functions of its
// tables (found by oid: a table renamed since it was captured is found too), its captured
// sequences (the sequences themselves stay), consumers, ticks, layouts, event tables and
// event sequence. Without force it refuses while consumers are registered (ErrHasConsumers).
// A missing queue is ErrNoQueue.
func DropQueue(ctx context.Context, conn Conn, queue string, force bool) (*Dropped, error) {
	d := &Dropped{}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var qid int32
		// The queue row's lock orders this against register_consumer, the ticker and rotation.
		err := tx.QueryRow(ctx, `SELECT queue_id FROM skiff.queue WHERE queue_name = $1 FOR UPDATE`, queue).Scan(&qid)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("queue %s: %w", queue, ErrNoQueue)
		}
		if err != nil {
			return wrap(err, "drop queue "+queue, nil)
		}
		rows, err := tx.Query(ctx, `SELECT sub_consumer FROM skiff.consumer WHERE queue_id = $1 ORDER BY 1`, qid)
		if err != nil {
			return fmt.Errorf("consumers of queue %s: %w", queue, err)
		}
		if d.Consumers, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return fmt.Errorf("consumers of queue %s: %w", queue, err)
		}
		if len(d.Consumers) > 0 && !force {
			return fmt.Errorf("queue %s has consumers: %s: %w; unsubscribe them first (skiff unsubscribe --provider URL --target URL --queue %s --consumer NAME), "+
				"or give --force (their workers then fail)", queue, strings.Join(d.Consumers, ", "), ErrHasConsumers, queue)
		}
		rows, err = tx.Query(ctx, `SELECT coalesce(n.nspname, c.table_schema), coalesce(r.relname, c.table_name), c.table_oid, r.oid IS NOT NULL,
				c.with_children, c.func_name, c.row_trigger, c.trunc_trigger
			FROM skiff.captured_table c
			LEFT JOIN pg_catalog.pg_class r ON r.oid = c.table_oid
			LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
			WHERE c.queue_id = $1 ORDER BY 1, 2`, qid)
		if err != nil {
			return fmt.Errorf("tables of queue %s: %w", queue, err)
		}
		captures, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dropping, error) {
			var c dropping
			err := r.Scan(&c.t.Schema, &c.t.Name, &c.oid, &c.present, &c.withChildren, &c.fn, &c.rowTrig, &c.truncTrig)
			return c, err
		})
		if err != nil {
			return fmt.Errorf("tables of queue %s: %w", queue, err)
		}
		// A logical queue's publication and its subscriptions' slots go first: a slot in use
		// (a worker streaming) makes the whole drop fail, nothing dropped.
		if err := dropLogical(ctx, tx, qid); err != nil {
			return fmt.Errorf("drop queue %s: %w", queue, err)
		}
		for _, c := range captures {
			if c.fn == "" {
				// A logical queue's: no capture trigger, a TRUNCATE marker trigger before 11.
				if c.present {
					if err := dropTruncateTrigger(ctx, tx, c.t, c.truncTrig); err != nil {
						return err
					}
				}
				d.Tables = append(d.Tables, c.t)
				continue
			}
			if err := c.drop(ctx, tx, qid, "run skiff queue drop again"); err != nil {
				return err
			}
			d.Tables = append(d.Tables, c.t)
		}
		rows, err = tx.Query(ctx, `SELECT coalesce(n.nspname, s.seq_schema), coalesce(r.relname, s.seq_name)
			FROM skiff.captured_sequence s
			LEFT JOIN pg_catalog.pg_class r ON r.oid = s.seq_oid
			LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
			WHERE s.queue_id = $1 ORDER BY 1, 2`, qid)
		if err != nil {
			return fmt.Errorf("sequences of queue %s: %w", queue, err)
		}
		d.Sequences, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Table, error) {
			var t change.Table
			err := r.Scan(&t.Schema, &t.Name)
			return t, err
		})
		if err != nil {
			return fmt.Errorf("sequences of queue %s: %w", queue, err)
		}
		// The rest (event tables and sequence, ticks, consumers, layouts) is the schema's
		// own: skiff.drop_queue, with the captures already gone.
		if _, err := tx.Exec(ctx, `DELETE FROM skiff.captured_table WHERE queue_id = $1`, qid); err != nil {
			return fmt.Errorf("drop queue %s: %w", queue, err)
		}
		if _, err := intResult(ctx, tx, "drop queue "+queue, nil, `SELECT skiff.drop_queue($1, true)`, queue); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// droppedCapture finds the capture of a table that no longer exists by the name it had (read
// by change.ParseTableName; without schema, in any schema, the first by name).
func droppedCapture(ctx context.Context, tx pgx.Tx, qid int32, name string) (relation, bool, error) {
	var r relation
	t, err := change.ParseTableName(name)
	if err != nil {
		return r, false, err
	}
	err = tx.QueryRow(ctx, `SELECT table_oid, table_schema, table_name FROM skiff.captured_table
		WHERE queue_id = $1 AND table_name = $3 AND ($2 = '' OR table_schema = $2)
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = table_oid)
		ORDER BY table_schema LIMIT 1`, qid, t.Schema, t.Name).Scan(&r.oid, &r.schema, &r.name)
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
	// WithChildren: the capture covers the table's partitions or inheritance children, whose
	// rows are the table's; without it (a plain table, or a capture made before skiff captured
	// children) only the table's own rows are captured, and readers must use ONLY.
	WithChildren bool
}

// Tables lists the tables a queue captures, by schema and name.
func Tables(ctx context.Context, db pg.DB, queue string) ([]CapturedTable, error) {
	rows, err := db.Query(ctx, `SELECT table_schema, table_name, coalesce(where_sql, ''), key_columns, layout_id, with_children
		FROM skiff.captured_table WHERE queue_id = skiff.queue_id($1) ORDER BY 1, 2`, queue)
	if err != nil {
		return nil, wrap(err, "tables of queue "+queue, ErrNoQueue)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CapturedTable, error) {
		var t CapturedTable
		err := r.Scan(&t.Table.Schema, &t.Table.Name, &t.Where, &t.Key, &t.Layout, &t.WithChildren)
		return t, err
	})
	if err != nil {
		return nil, wrap(err, "tables of queue "+queue, ErrNoQueue)
	}
	return out, nil
}

// Sequences lists the sequences a queue captures.
func Sequences(ctx context.Context, db pg.DB, queue string) ([]change.Table, error) {
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

func indexOf(cols []catalog.Column, name string) int {
	for i, c := range cols {
		if c.Name == name {
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
func settingPins(ctx context.Context, db pg.DB, cols []catalog.Column, version int) ([]pin, error) {
	need, err := settingsNeeded(ctx, db, cols, version)
	if err != nil {
		return nil, err
	}
	return pinsFor(ctx, db, need, version)
}

// settingsNeeded walks the columns' types and the types they are made of, and returns the
// settings that change the text form of one of the built-in ones among them.
func settingsNeeded(ctx context.Context, db pg.DB, cols []catalog.Column, version int) (map[string]bool, error) {
	need := map[string]bool{}
	seen := map[uint32]bool{}
	todo := make([]uint32, 0, len(cols))
	for _, c := range cols {
		todo = append(todo, c.TypeOID)
	}
	for len(todo) > 0 {
		oid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[oid] {
			continue
		}
		seen[oid] = true
		name, builtin, parts, err := typeParts(ctx, db, oid, version)
		if err != nil {
			return nil, err
		}
		todo = append(todo, parts...)
		if builtin {
			for _, setting := range typeSettings(name, version) {
				need[setting] = true
			}
		}
	}
	return need, nil
}

// typeParts reads a type: its name, whether it is pg_catalog's, and the types its text form
// is made of (an array's element, a domain's base, a composite's attributes, a range's
// subtype).
func typeParts(ctx context.Context, db pg.DB, oid uint32, version int) (name string, builtin bool, parts []uint32, err error) {
	var nsp, typtype string
	var elem, base, rel uint32
	err = db.QueryRow(ctx, `SELECT t.typname, n.nspname, t.typtype::text, t.typelem, t.typbasetype, t.typrelid
		FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1`, oid).
		Scan(&name, &nsp, &typtype, &elem, &base, &rel)
	if err != nil {
		return "", false, nil, fmt.Errorf("type %d: %w", oid, err)
	}
	if elem != 0 {
		parts = append(parts, elem)
	}
	if base != 0 {
		parts = append(parts, base)
	}
	if rel != 0 && typtype == "c" {
		rows, err := db.Query(ctx, `SELECT atttypid FROM pg_catalog.pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, rel)
		if err != nil {
			return "", false, nil, err
		}
		sub, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return "", false, nil, err
		}
		parts = append(parts, sub...)
	}
	if typtype == "r" && version >= 90200 {
		var sub uint32
		if err := db.QueryRow(ctx, `SELECT rngsubtype FROM pg_catalog.pg_range WHERE rngtypid = $1`, oid).Scan(&sub); err != nil {
			return "", false, nil, fmt.Errorf("range type %s: %w", name, err)
		}
		parts = append(parts, sub)
	}
	return name, nsp == "pg_catalog", parts, nil
}

// typeSettings returns the settings that change the text form of the built-in type name.
func typeSettings(name string, version int) []string {
	switch name {
	case "date", "time", "timetz", "timestamp", "abstime", "tinterval":
		return []string{"datestyle"}
	case "timestamptz":
		return []string{"datestyle", "timezone"}
	case "interval", "reltime":
		return []string{"intervalstyle"}
	case "float4", "float8", "point", "lseg", "line", "box", "path", "polygon", "circle":
		return []string{"extra_float_digits"}
	case "money":
		return []string{"lc_monetary"}
	case "bytea":
		if version >= 90000 {
			return []string{"bytea_output"}
		}
	}
	return nil
}

// pinsFor returns the pins of the settings needed, in a fixed order (the function's text does
// not depend on the order the types were met).
func pinsFor(ctx context.Context, db pg.DB, need map[string]bool, version int) ([]pin, error) {
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
	legacy             []string // earlier names of the row and truncate triggers, dropped by ddl
	insTrig            string   // the statement-level INSERT trigger (stmtInsert)
	aloneTrig          string   // its companion that keeps the table alone (stmtInsert)
	key                []string
	whereNew, whereOld string
	pins               []pin
	// keyByOperator: an UPDATE's old and new keys are compared column by column with
	// pg_catalog's equality operator (keyByOperator says when that is safe), not as text.
	keyByOperator bool

	// withChildren: the capture of a partitioned table or inheritance parent. The function
	// also serves the triggers of its partitions or children (one function, one layout: the
	// parent's). A row of the parent, or of a child whose live columns carry the parent's
	// names in the parent's order (aligned: a partition made with PARTITION OF, a child made
	// with INHERITS and no column of its own — DDL on the parent keeps them so), is written as
	// record_out(NEW), as a plain table's: rows written between a DDL on the parent and the
	// refresh follow the new columns and decode like a plain table's (queue/plan.go). Any
	// other child's row (a table attached with another column order, a child with columns of
	// its own, or a child the function does not list yet) is built in the parent's column
	// order by name, ROW(NEW."a", NEW."b", ...). A BEFORE TRUNCATE trigger (guardTrig) on
	// each child, and on an inheritance parent, turns a TRUNCATE that empties part of the
	// table (a partition, a child, the parent ONLY) into one delete per row; the AFTER
	// TRUNCATE trigger writes the TRUNCATE event only when the whole table is emptied.
	withChildren  bool
	parentOID     uint32
	columns       []string // the parent's live columns (withChildren)
	aligned       []uint32 // the parent and its aligned descendants (withChildren)
	whereRow      string   // the --where over the guard's loop record r (withChildren)
	guardTrig     string
	rowOnParent   bool // the row trigger goes on the table itself (not on a partitioned one before 11)
	version       int  // server_version_num
	guardOnParent bool // the table has rows of its own and children: a guard on it too

	// keepTriggers: the table's triggers exist and call the function (triggersInPlace); only
	// the function is replaced.
	keepTriggers bool

	// stmtInsert: the capture of a plain table on PostgreSQL 10+ (statementInsert says when)
	// takes its INSERTs with a statement-level trigger (insTrig, AFTER INSERT REFERENCING NEW
	// TABLE) instead of the row trigger, which then fires on UPDATE and DELETE only: one
	// INSERT … SELECT per statement writes the events of all its rows. The function keeps its
	// row-level INSERT branch too, so a capture made before (its row trigger fires on
	// INSERT) goes on working with the regenerated function.
	stmtInsert bool
}

// ddl returns the statements that (re)create the function and the table's own triggers,
// one statement each (they are sent with pg.Exec, which refuses more). The triggers of a
// capture's children are childDDL's.
func (t trigger) ddl() []string {
	fn := "skiff." + change.QuoteIdent(t.funcName)
	stmts := []string{
		t.function(),
		`REVOKE ALL ON FUNCTION ` + fn + `() FROM PUBLIC`,
	}
	if t.keepTriggers {
		return stmts
	}
	stmts = append(stmts,
		`DROP TRIGGER IF EXISTS `+change.QuoteIdent(t.rowTrig)+` ON `+t.table.String(),
		`DROP TRIGGER IF EXISTS `+change.QuoteIdent(t.truncTrig)+` ON `+t.table.String(),
	)
	for _, n := range t.legacy {
		stmts = append(stmts, `DROP TRIGGER IF EXISTS `+change.QuoteIdent(n)+` ON `+t.table.String())
	}
	if t.version >= 100000 {
		// A statement-level INSERT trigger and its companion (capture version 4) go whatever
		// set comes now.
		stmts = append(stmts, `DROP TRIGGER IF EXISTS `+change.QuoteIdent(t.insTrig)+` ON `+t.table.String(),
			`DROP TRIGGER IF EXISTS `+change.QuoteIdent(t.aloneTrig)+` ON `+t.table.String())
	}
	if t.withChildren {
		stmts = append(stmts, `DROP TRIGGER IF EXISTS `+change.QuoteIdent(t.guardTrig)+` ON `+t.table.String())
	}
	switch {
	case t.stmtInsert:
		stmts = append(stmts,
			`CREATE TRIGGER `+change.QuoteIdent(t.rowTrig)+` AFTER UPDATE OR DELETE ON `+t.table.String()+
				` FOR EACH ROW EXECUTE PROCEDURE `+fn+`()`,
			`CREATE TRIGGER `+change.QuoteIdent(t.insTrig)+` AFTER INSERT ON `+t.table.String()+
				` REFERENCING NEW TABLE AS `+newRowsTable+` FOR EACH STATEMENT EXECUTE PROCEDURE `+fn+`()`,
			// Never fires (WHEN false): a row-level trigger with a transition table is what
			// the server refuses on a partition or an inheritance child, on every version
			// from 10 (ATTACH PARTITION and INHERIT fail naming it); the statement trigger
			// alone stops them on 10 to 12 only. It reads the transition table the statement
			// trigger collects anyway.
			`CREATE TRIGGER `+change.QuoteIdent(t.aloneTrig)+` AFTER INSERT ON `+t.table.String()+
				` REFERENCING NEW TABLE AS `+newRowsTable+` FOR EACH ROW WHEN (false) EXECUTE PROCEDURE `+fn+`()`)
	case t.rowOnParent:
		stmts = append(stmts, `CREATE TRIGGER `+change.QuoteIdent(t.rowTrig)+` AFTER INSERT OR UPDATE OR DELETE ON `+t.table.String()+
			` FOR EACH ROW EXECUTE PROCEDURE `+fn+`()`)
	}
	stmts = append(stmts, `CREATE TRIGGER `+change.QuoteIdent(t.truncTrig)+` AFTER TRUNCATE ON `+t.table.String()+
		` FOR EACH STATEMENT EXECUTE PROCEDURE `+fn+`()`)
	if t.guardOnParent {
		stmts = append(stmts, `CREATE TRIGGER `+change.QuoteIdent(t.guardTrig)+` BEFORE TRUNCATE ON `+t.table.String()+
			` FOR EACH STATEMENT EXECUTE PROCEDURE `+fn+`()`)
	}
	return stmts
}

// childDDL returns the statements that give a partition or child of the table the capture's
// row trigger (row) and its truncate guard (guard).
func (t trigger) childDDL(child change.Table, row, guard bool) []string {
	fn := "skiff." + change.QuoteIdent(t.funcName)
	var stmts []string
	if row {
		stmts = append(stmts, `CREATE TRIGGER `+change.QuoteIdent(t.rowTrig)+` AFTER INSERT OR UPDATE OR DELETE ON `+child.String()+
			` FOR EACH ROW EXECUTE PROCEDURE `+fn+`()`)
	}
	if guard {
		stmts = append(stmts, `CREATE TRIGGER `+change.QuoteIdent(t.guardTrig)+` BEFORE TRUNCATE ON `+child.String()+
			` FOR EACH STATEMENT EXECUTE PROCEDURE `+fn+`()`)
	}
	return stmts
}

// alignedTest is the condition that the trigger fires on the parent or an aligned child:
// its rows are record_out of the record itself.
func (t trigger) alignedTest() string {
	ids := make([]string, len(t.aligned))
	for i, o := range t.aligned {
		ids[i] = strconv.FormatUint(uint64(o), 10)
	}
	return "TG_RELID = ANY ('{" + strings.Join(ids, ",") + "}'::pg_catalog.oid[])"
}

// rowOf returns the row of a record variable as the layout orders it: the variable itself
// for a plain table, ROW(v."a", v."b", ...) in the parent's column order for a capture with
// children, for the rows of a child that is not aligned (its row type orders its columns
// otherwise, or has more).
func (t trigger) rowOf(v string) string {
	if !t.withChildren {
		return v
	}
	fields := make([]string, len(t.columns))
	for i, c := range t.columns {
		fields[i] = v + "." + change.QuoteIdent(c)
	}
	return "ROW(" + strings.Join(fields, ", ") + ")"
}

// lockedByUs is the condition that this backend holds an ACCESS EXCLUSIVE lock on the
// relation rel (an SQL expression of type oid), as TRUNCATE takes on every table it empties.
func lockedByUs(rel string) string {
	return "EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.locktype = 'relation' AND l.relation = " + rel +
		" AND l.pid = pg_catalog.pg_backend_pid() AND l.mode = 'AccessExclusiveLock' AND l.granted)"
}

// wholeTruncate is the condition, inside a TRUNCATE trigger, that the statement empties the
// whole captured table: the table and each of its direct children are locked by this backend
// (TRUNCATE of the parent locks all of them first; TRUNCATE of one child, or ONLY of the
// parent, leaves some unlocked). A child truncated in a transaction that had already locked
// the parent and all its siblings in ACCESS EXCLUSIVE mode would pass for the whole.
func (t trigger) wholeTruncate() string {
	p := "'" + strconv.FormatUint(uint64(t.parentOID), 10) + "'"
	return "(" + lockedByUs(p) + "\n            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = " + p +
		" AND NOT " + lockedByUs("i.inhrelid") + "))"
}

// underParent is the condition that the trigger's table is the captured table or one of its
// descendants still: a guard left on a table detached since does nothing.
func (t trigger) underParent() string {
	p := "'" + strconv.FormatUint(uint64(t.parentOID), 10) + "'"
	return "(EXISTS (WITH RECURSIVE up(rel) AS (SELECT TG_RELID UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i, up WHERE i.inhrelid = up.rel)" +
		"\n            SELECT 1 FROM up WHERE up.rel = " + p + "))"
}

// recordText is the text form of a composite value, as the capture function writes it: the
// type's own output function, called by its catalog name. A ::text cast would do the same
// unless the composite's owner created a cast of its own (CREATE CAST is open to a type's
// owner, and a table's row type belongs to the table's owner): that cast would run as the
// capture function's owner.
func recordText(expr string) string {
	return "pg_catalog.textin(pg_catalog.record_out(" + expr + "))"
}

// function returns the CREATE FUNCTION statement of the capture function. Per row it runs
// an IF on TG_OP, a nextval, an IF on the epoch bits of the new id and one static INSERT whose
// values are computed in that INSERT: no lookup of queue state, no dynamic SQL, no catalog
// query.
//
// It is SECURITY DEFINER (writers need no rights on skiff's tables, and nobody else can forge
// events), so it must not run anything a writer or a table's owner chose (docs/security.md):
// every function, operator and type of the row path is named with its schema (pg_catalog or
// skiff), so it resolves the same under any search_path; rows and keys become text through
// record_out, not a cast; keys are compared as that text. When the body holds more than
// generated code (a --where, or the guard of a capture with children: see pinsSearchPath),
// search_path is also pinned to pg_catalog, pg_temp with a SET clause. No name or user text
// appears in the body outside quoted identifiers and the --where (checked by
// checkWhereSyntax), and the dollar-quote tag is one that does not occur in it.
func (t trigger) function() string {
	var b strings.Builder
	q := strconv.Itoa(int(t.queueID))
	seq := "skiff.event_" + q + "_id_seq"
	lay := strconv.Itoa(int(t.layout))

	b.WriteString("DECLARE\n    id pg_catalog.int8;\n    okey pg_catalog.text;\n")
	if t.stmtInsert {
		b.WriteString("    cnt pg_catalog.int8;\n")
	}
	if t.withChildren {
		b.WriteString("    r record;\n    nrow pg_catalog.text;\n    orow pg_catalog.text;\n")
	}
	b.WriteString("BEGIN\n")
	if t.withChildren {
		// NEW and OLD by the trigger's table: record_out of an aligned one; another is read by
		// column name, in a statement of its own (a name is looked up when its statement
		// runs first). NEW is unassigned in a DELETE, OLD in an INSERT.
		fmt.Fprintf(&b, "    IF TG_LEVEL = 'ROW' THEN\n        IF %s THEN\n", t.alignedTest())
		fmt.Fprintf(&b, "            IF TG_OP <> 'DELETE' THEN\n                nrow := %s;\n            END IF;\n", recordText("NEW"))
		fmt.Fprintf(&b, "            IF TG_OP <> 'INSERT' THEN\n                orow := %s;\n            END IF;\n", recordText("OLD"))
		b.WriteString("        ELSE\n")
		fmt.Fprintf(&b, "            IF TG_OP <> 'DELETE' THEN\n                nrow := %s;\n            END IF;\n", recordText(t.rowOf("NEW")))
		fmt.Fprintf(&b, "            IF TG_OP <> 'INSERT' THEN\n                orow := %s;\n            END IF;\n", recordText(t.rowOf("OLD")))
		b.WriteString("        END IF;\n    END IF;\n")
	}
	if t.stmtInsert && t.version >= 100000 {
		foreignTriggerCheck(&b)
	}

	newKey := make([]string, len(t.key))
	oldKey := make([]string, len(t.key))
	for i, k := range t.key {
		c := change.QuoteIdent(k)
		newKey[i], oldKey[i] = "NEW."+c, "OLD."+c
	}

	// emit writes the statements that insert one event, indented by depth levels. The xid is
	// assigned by the row write that fired the trigger, before this nextval: the rotation
	// proof in the provider migration relies on that order.
	emit := func(depth int, op, data, extra string) {
		in := strings.Repeat("    ", depth)
		fmt.Fprintf(&b, "%sid := pg_catalog.nextval('%s'::pg_catalog.regclass);\n", in, seq)
		for n := 0; n < 3; n++ {
			switch n {
			case 0:
				fmt.Fprintf(&b, "%sIF ((id OPERATOR(pg_catalog.>>) 40) OPERATOR(pg_catalog.%%) 3) OPERATOR(pg_catalog.=) 0 THEN\n", in)
			case 1:
				fmt.Fprintf(&b, "%sELSIF ((id OPERATOR(pg_catalog.>>) 40) OPERATOR(pg_catalog.%%) 3) OPERATOR(pg_catalog.=) 1 THEN\n", in)
			case 2:
				fmt.Fprintf(&b, "%sELSE\n", in)
			}
			fmt.Fprintf(&b, "%s    INSERT INTO skiff.event_%s_%d (ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra)"+
				" VALUES (id, pg_catalog.now(), pg_catalog.txid_current(), '%s', %s, %s, %s);\n", in, q, n, op, lay, data, extra)
		}
		fmt.Fprintf(&b, "%sEND IF;\n", in)
	}
	// test returns a --where expression as a condition; the expression stands on lines of its
	// own so that a -- comment in it ends before the condition's closing parentheses.
	test := func(expr string) string { return "coalesce((\n" + expr + "\n), false)" }
	filter := func(depth int, expr string) {
		in := strings.Repeat("    ", depth)
		fmt.Fprintf(&b, "%sIF NOT %s THEN\n%s    RETURN NULL;\n%sEND IF;\n", in, test(expr), in, in)
	}
	newRow, oldRow := recordText("NEW"), recordText("OLD")
	if t.withChildren {
		newRow, oldRow = "nrow", "orow"
	}
	// update emits an UPDATE event: ev_extra holds the old key when the update changed it.
	update := func(depth int) {
		in := strings.Repeat("    ", depth)
		oldText := recordText("ROW(" + strings.Join(oldKey, ", ") + ")")
		if t.keyByOperator {
			same := make([]string, len(t.key))
			for i := range t.key {
				same[i] = oldKey[i] + " OPERATOR(pg_catalog.=) " + newKey[i]
			}
			fmt.Fprintf(&b, "%sIF %s THEN\n%s    okey := NULL;\n%sELSE\n%s    okey := %s;\n%sEND IF;\n", in,
				strings.Join(same, " AND "), in, in, in, oldText, in)
		} else {
			fmt.Fprintf(&b, "%sokey := %s;\n", in, oldText)
			fmt.Fprintf(&b, "%sIF okey OPERATOR(pg_catalog.=) %s THEN\n%s    okey := NULL;\n%sEND IF;\n", in,
				recordText("ROW("+strings.Join(newKey, ", ")+")"), in, in)
		}
		emit(depth, "U", newRow, "okey")
	}

	b.WriteString("    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN\n")
	if t.stmtInsert {
		t.statementInsert(&b, q, seq, lay)
	}
	if t.whereNew != "" {
		filter(2, t.whereNew)
	}
	emit(2, "I", newRow, "NULL")
	b.WriteString("    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN\n")
	if t.whereNew != "" {
		fmt.Fprintf(&b, "        IF %s THEN\n", test(t.whereNew))
		fmt.Fprintf(&b, "            IF %s THEN\n", test(t.whereOld))
		update(4)
		b.WriteString("            ELSE\n")
		emit(4, "I", newRow, "NULL") // moved into the filter
		b.WriteString("            END IF;\n")
		fmt.Fprintf(&b, "        ELSIF %s THEN\n", test(t.whereOld))
		emit(3, "D", oldRow, "NULL") // moved out of the filter
		b.WriteString("        END IF;\n")
	} else {
		update(2)
	}
	b.WriteString("    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN\n")
	if t.whereOld != "" {
		filter(2, t.whereOld)
	}
	emit(2, "D", oldRow, "NULL")
	if t.withChildren {
		// BEFORE TRUNCATE (the guard) of a child, or of an inheritance parent: when the
		// statement empties only part of the table, each row it removes is a delete. The
		// table is named by the trigger's variables, quoted: no name in the body.
		b.WriteString("    ELSIF TG_WHEN = 'BEFORE' THEN\n")
		fmt.Fprintf(&b, "        IF NOT %s\n            OR %s THEN\n            RETURN NULL;\n        END IF;\n", t.underParent(), t.wholeTruncate())
		b.WriteString("        FOR r IN EXECUTE 'SELECT * FROM ONLY ' || pg_catalog.quote_ident(TG_TABLE_SCHEMA) || '.' || pg_catalog.quote_ident(TG_TABLE_NAME) LOOP\n")
		if t.whereRow != "" {
			fmt.Fprintf(&b, "            IF NOT %s THEN\n                CONTINUE;\n            END IF;\n", test(t.whereRow))
		}
		fmt.Fprintf(&b, "            IF %s THEN\n                orow := %s;\n            ELSE\n                orow := %s;\n            END IF;\n",
			t.alignedTest(), recordText("r"), recordText(t.rowOf("r")))
		emit(3, "D", "orow", "NULL")
		b.WriteString("        END LOOP;\n")
		// AFTER TRUNCATE of the table itself: one event when it emptied the whole table.
		b.WriteString("    ELSE\n")
		fmt.Fprintf(&b, "        IF NOT %s THEN\n            RETURN NULL;\n        END IF;\n", t.wholeTruncate())
	} else {
		b.WriteString("    ELSE\n")
	}
	emit(2, "T", "NULL", "NULL")
	b.WriteString("    END IF;\n    RETURN NULL;\nEND;\n")
	body := b.String()

	var h strings.Builder
	fmt.Fprintf(&h, "CREATE OR REPLACE FUNCTION skiff.%s() RETURNS trigger\nLANGUAGE plpgsql SECURITY DEFINER\n", change.QuoteIdent(t.funcName))
	if t.pinsSearchPath() {
		h.WriteString("SET search_path = pg_catalog, pg_temp\n")
	}
	for _, p := range t.pins {
		fmt.Fprintf(&h, "SET %s = %s\n", p.name, quoteLiteral(p.value))
	}
	tag := dollarTag(body)
	fmt.Fprintf(&h, "AS %s\n-- Capture into queue %d, layout %d. Generated by skiff table add; do not edit.\n", tag, t.queueID, t.layout)
	h.WriteString(body)
	h.WriteString(tag)
	return h.String()
}

// newRowsTable is the name of the transition table of the statement-level INSERT trigger.
// The function reads it unqualified: a transition table is found before any relation of the
// search_path, temporary ones included.
const newRowsTable = "skiff_new_rows"

// statementInsert writes the function's statement-level INSERT branch (stmtInsert): the
// events of every row of the statement in one INSERT … SELECT, ids drawn in the transition
// table's order (the order the rows were inserted, as the row trigger would have drawn them).
//
// The event table is chosen by the epoch of each id, (id >> 40) % 3, and a rotation can
// switch the sequence to the next epoch while the statement draws its ids, so one INSERT
// cannot know its table beforehand. The branch guesses the epoch from the sequence's last
// value (pg_sequence_last_value, 10+: no lock wait, no id drawn), inserts every event into the
// guessed epoch's table, then compares the epoch of the last id it drew (currval) with the
// guess: ids only grow, so when the two agree every id of the statement is of that epoch.
// When they differ (a switch during the statement, or a first statement after a switch), the
// events of other epochs move, in the same statement, to their tables: so, when the statement
// ends, every event is in the table its id names, as the row trigger leaves them. Readers see
// none of it before the transaction commits.
//
// The xid: the statement's row writes assigned the transaction's xid before this AFTER
// STATEMENT trigger runs, so before its nextval (a statement that inserted no row has an empty
// transition table and draws no id). The rotation proof (maint_rotate_tables in
// sql/provider/00002_rotation_bound.sql) relies on that order; and the guessed table is the
// table of an epoch this transaction's xid belongs to, not one a rotation could truncate
// while it runs.
func (t trigger) statementInsert(b *strings.Builder, q, seq, lay string) {
	// Transition tables and pg_sequence_last_value are 10+ (stmtInsert is never set before).
	if t.version >= 100000 {
		cols := "ev_id, ev_time, ev_txid, ev_op, ev_layout, ev_data, ev_extra"
		epochIs := func(v string, n int) string {
			return fmt.Sprintf("((%s OPERATOR(pg_catalog.>>) 40) OPERATOR(pg_catalog.%%) 3) OPERATOR(pg_catalog.=) %d", v, n)
		}
		b.WriteString("        IF TG_LEVEL OPERATOR(pg_catalog.=) 'STATEMENT' THEN\n")
		fmt.Fprintf(b, "            id := coalesce(pg_catalog.pg_sequence_last_value('%s'::pg_catalog.regclass), 0);\n", seq)
		for n := 0; n < 3; n++ {
			switch n {
			case 0:
				fmt.Fprintf(b, "            IF %s THEN\n", epochIs("id", 0))
			case 1:
				fmt.Fprintf(b, "            ELSIF %s THEN\n", epochIs("id", 1))
			case 2:
				b.WriteString("            ELSE\n")
			}
			fmt.Fprintf(b, "                INSERT INTO skiff.event_%s_%d (%s)\n", q, n, cols)
			fmt.Fprintf(b, "                    SELECT pg_catalog.nextval('%s'::pg_catalog.regclass), pg_catalog.now(), pg_catalog.txid_current(), 'I', %s,\n", seq, lay)
			fmt.Fprintf(b, "                        %s, NULL FROM %s;\n", recordText(newRowsTable+".*"), newRowsTable)
			b.WriteString("                GET DIAGNOSTICS cnt := ROW_COUNT;\n")
			fmt.Fprintf(b, "                IF cnt OPERATOR(pg_catalog.>) 0 AND (pg_catalog.currval('%s'::pg_catalog.regclass) OPERATOR(pg_catalog.>>) 40)"+
				" OPERATOR(pg_catalog.<>) (id OPERATOR(pg_catalog.>>) 40) THEN\n", seq)
			a, c := (n+1)%3, (n+2)%3
			fmt.Fprintf(b, "                    WITH moved AS (DELETE FROM skiff.event_%s_%d WHERE ev_txid OPERATOR(pg_catalog.=) pg_catalog.txid_current()\n", q, n)
			fmt.Fprintf(b, "                            AND NOT (%s) RETURNING %s),\n", epochIs("ev_id", n), cols)
			fmt.Fprintf(b, "                        other AS (INSERT INTO skiff.event_%s_%d (%s) SELECT %s FROM moved WHERE %s)\n", q, a, cols, cols, epochIs("ev_id", a))
			fmt.Fprintf(b, "                    INSERT INTO skiff.event_%s_%d (%s) SELECT %s FROM moved WHERE %s;\n", q, c, cols, cols, epochIs("ev_id", c))
			b.WriteString("                END IF;\n")
		}
		b.WriteString("            END IF;\n            RETURN NULL;\n        END IF;\n")
	}
}

// foreignTriggerCheck writes the first step of a capture function with the statement-level
// INSERT trigger (stmtInsert): an UPDATE or DELETE of the table made from inside a trigger
// (pg_trigger_depth() above 1) is refused while the table has an enabled trigger that is
// neither the server's own nor skiff's.
//
// Why. statementInsert allows the statement trigger only on a table without such a trigger,
// but one can be created later, and the refresh (which goes back to the row trigger) may not
// follow. The user's trigger could then change rows of an INSERT before the capture's AFTER
// STATEMENT trigger writes their events — an AFTER ROW trigger updating the row it fired for,
// a BEFORE ROW trigger updating a row inserted earlier in the statement — and the events of
// those changes would come first in the queue: the replica would keep the rows as inserted, a
// silent divergence. Such a change is always made inside a trigger that the INSERT fired on
// this table, which is why only the nested changes are checked: the check costs the common
// path one pg_trigger_depth() call per updated or deleted row, the INSERT path nothing, and
// only a nested change (a trigger of another table updating this one, say) an index probe of
// pg_trigger. Refused, the statement writes nothing; the error names the table, the
// triggers and the fix. The names are compared with substr, not LIKE, whose pattern's
// backslash would depend on the session's standard_conforming_strings.
func foreignTriggerCheck(b *strings.Builder) {
	b.WriteString("    IF pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1 AND TG_LEVEL OPERATOR(pg_catalog.=) 'ROW' THEN\n" +
		"        okey := pg_catalog.array_to_string(ARRAY(SELECT pg_catalog.quote_ident(tgname::pg_catalog.text)\n" +
		"            FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) TG_RELID AND NOT tgisinternal\n" +
		"            AND tgenabled OPERATOR(pg_catalog.<>) 'D' AND pg_catalog.substr(tgname::pg_catalog.text, 1, 6) OPERATOR(pg_catalog.<>) 'skiff_'\n" +
		"            AND pg_catalog.substr(tgname::pg_catalog.text, 1, 7) OPERATOR(pg_catalog.<>) '!skiff_'\n" +
		"            ORDER BY 1), ', ');\n" +
		"        IF okey OPERATOR(pg_catalog.<>) '' THEN\n" +
		"            RAISE EXCEPTION 'skiff: % of %.% from a trigger refused: the table is captured with a statement-level INSERT trigger and has trigger(s) of its own since (%), whose changes to rows an INSERT is inserting would reach the replica before the rows',\n" +
		"                TG_OP, pg_catalog.quote_ident(TG_TABLE_SCHEMA), pg_catalog.quote_ident(TG_TABLE_NAME), okey\n" +
		"                USING ERRCODE = 'object_not_in_prerequisite_state',\n" +
		"                HINT = 'Run skiff table add --refresh ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(TG_TABLE_SCHEMA) OPERATOR(pg_catalog.||) '.'\n" +
		"                    OPERATOR(pg_catalog.||) pg_catalog.quote_ident(TG_TABLE_NAME) OPERATOR(pg_catalog.||)\n" +
		"                    ' on the provider (it captures the table''s INSERTs row by row again), or drop or disable the trigger.';\n" +
		"        END IF;\n" +
		"        okey := NULL;\n" +
		"    END IF;\n")
}

// pinsSearchPath reports whether the function needs search_path pinned by a SET clause: its
// body holds a --where (user text, whose unqualified operators and functions must resolve in
// pg_catalog only) or serves a capture with children (its guard and truncate tests are not
// all written schema-qualified). Without it, the row path of a plain table's capture is
// schema-qualified throughout, and the clause would only cost every call a save, set and
// restore of search_path (and a recomputation of the search path behind it): measured on 15
// with queue.TestTriggerCostBreakdown. The settings of the pins stay SET clauses.
func (t trigger) pinsSearchPath() bool {
	return t.whereNew != "" || t.withChildren
}

// dollarTag returns a dollar-quote tag that does not occur in body.
func dollarTag(body string) string {
	tag := "$skiff$"
	for n := 1; strings.Contains(body, tag); n++ {
		tag = "$skiff" + strconv.Itoa(n) + "$"
	}
	return tag
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
