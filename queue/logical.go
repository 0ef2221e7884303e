package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// The sources a queue can have (skiff.queue.queue_source), chosen when it is created.
const (
	// SourceTrigger: capture triggers write events into the queue's event tables; the
	// ticker cuts batches.
	SourceTrigger = "trigger"
	// SourceLogical: no trigger; each subscription streams the queue's tables from a logical
	// replication slot of its own (PostgreSQL 9.4+). The ticker leaves the queue alone.
	SourceLogical = "logical"
)

// The output plugins a logical queue decodes with.
const (
	// PluginPgoutput is PostgreSQL's own (10+): the queue's tables are the members of its
	// publication.
	PluginPgoutput = "pgoutput"
	// PluginTestDecoding is the contrib module shipped with every server from 9.4 (text
	// output; every table of the database is decoded, skiff keeps the queue's).
	PluginTestDecoding = "test_decoding"
)

// logicalVersion is the provider schema version that knows logical queues.
const logicalVersion = 8

// ErrWrongSource is returned (wrapped) when a command asks a queue for a source other than
// the one it was created with.
var ErrWrongSource = errors.New("the queue has another source")

// ErrNoReplicaIdentity is returned (wrapped) when a table added to a logical queue has no
// replica identity that identifies its rows in decoded updates and deletes.
var ErrNoReplicaIdentity = errors.New("no replica identity identifies its rows")

// Kind is how a queue captures its tables.
type Kind struct {
	Source string // SourceTrigger or SourceLogical
	// Logical queues only: the output plugin, and the publication (pgoutput) holding the
	// queue's tables.
	Plugin      string
	Publication string
}

// Logical says whether the queue streams from replication slots.
func (k Kind) Logical() bool { return k.Source == SourceLogical }

// QueueKind reads how a queue captures its tables. A provider schema older than the one
// that knows logical queues has trigger queues only.
func QueueKind(ctx context.Context, db pg.DB, queue string) (Kind, error) {
	ok, err := knowsLogical(ctx, db)
	if err != nil {
		return Kind{}, err
	}
	if !ok {
		if _, err := queueID(ctx, db, queue); err != nil {
			return Kind{}, err
		}
		return Kind{Source: SourceTrigger}, nil
	}
	var k Kind
	var plugin, pub *string
	err = db.QueryRow(ctx, `SELECT queue_source, queue_plugin, queue_publication FROM skiff.queue WHERE queue_name = $1`, queue).
		Scan(&k.Source, &plugin, &pub)
	if errors.Is(err, pgx.ErrNoRows) {
		return Kind{}, fmt.Errorf("queue %s: %w", queue, ErrNoQueue)
	}
	if err != nil {
		return Kind{}, wrap(err, "queue "+queue, ErrNoQueue)
	}
	if plugin != nil {
		k.Plugin = *plugin
	}
	if pub != nil {
		k.Publication = *pub
	}
	return k, nil
}

// LogicalQueues names the logical queues of the provider (none on a provider schema that
// predates them).
func LogicalQueues(ctx context.Context, db pg.DB) (map[string]bool, error) {
	ok, err := knowsLogical(ctx, db)
	if err != nil || !ok {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT queue_name FROM skiff.queue WHERE queue_source = 'logical'`)
	if err != nil {
		return nil, wrap(err, "logical queues", nil)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap(err, "logical queues", nil)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// knowsLogical says whether the provider schema has the columns of logical queues.
func knowsLogical(ctx context.Context, db pg.DB) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'skiff' AND c.relname = 'queue' AND a.attname = 'queue_source' AND NOT a.attisdropped)`).Scan(&ok)
	if err != nil {
		return false, wrap(err, "provider schema", nil)
	}
	return ok, nil
}

func queueID(ctx context.Context, db pg.DB, queue string) (int32, error) {
	var qid int32
	if err := db.QueryRow(ctx, `SELECT skiff.queue_id($1)`, queue).Scan(&qid); err != nil {
		return 0, wrap(err, "queue "+queue, ErrNoQueue)
	}
	return qid, nil
}

// PublicationName is the publication of a pgoutput queue: named by the queue's id, which
// keeps it a short, plain identifier whatever the queue's name.
func PublicationName(queueID int32) string { return "skiff_q" + strconv.Itoa(int(queueID)) }

// SlotName is the replication slot of a subscription (consumer sub_id) to a logical queue of
// the database with oid dbOID: slot names allow only lower-case letters, digits and
// underscores, and are one namespace for the whole server (every database's queue 1 would
// otherwise name the same slot).
func SlotName(dbOID uint32, queueID, subID int32) string {
	return "skiff_d" + strconv.FormatUint(uint64(dbOID), 10) + "_q" + strconv.Itoa(int(queueID)) + "_s" + strconv.Itoa(int(subID))
}

// Slot is a subscription's replication slot as the provider records it.
type Slot struct {
	Queue, Consumer string
	QueueID, SubID  int32
	Name            string // "" until skiff subscribe created it
	// Unsettled is set by EnsureSlot when it created the slot but could not make the catalog
	// change that settles it (see settleSlot): why, for a warning.
	Unsettled error
}

// ConsumerSlot reads the slot recorded for a consumer of a logical queue, and the ids its
// name derives from (SlotName). A consumer not registered is ErrNotRegistered.
func ConsumerSlot(ctx context.Context, db pg.DB, queue, consumer string) (Slot, error) {
	s := Slot{Queue: queue, Consumer: consumer}
	var name *string
	err := db.QueryRow(ctx, `SELECT c.queue_id, c.sub_id, c.sub_slot FROM skiff.consumer c JOIN skiff.queue q ON q.queue_id = c.queue_id
		WHERE q.queue_name = $1 AND c.sub_consumer = $2`, queue, consumer).Scan(&s.QueueID, &s.SubID, &name)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("consumer %s of queue %s: %w", consumer, queue, ErrNotRegistered)
	}
	if err != nil {
		return s, wrap(err, "slot of consumer "+consumer, nil)
	}
	if name != nil {
		s.Name = *name
	}
	return s, nil
}

// SetConsumerSlot records (or, with "", forgets) a consumer's replication slot.
func SetConsumerSlot(ctx context.Context, db pg.DB, queue, consumer, slot string) error {
	var arg *string
	if slot != "" {
		arg = &slot
	}
	tag, err := db.Exec(ctx, `UPDATE skiff.consumer c SET sub_slot = $3 FROM skiff.queue q
		WHERE q.queue_id = c.queue_id AND q.queue_name = $1 AND c.sub_consumer = $2`, queue, consumer, arg)
	if err != nil {
		return wrap(err, "record the slot of consumer "+consumer, nil)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("consumer %s of queue %s: %w", consumer, queue, ErrNotRegistered)
	}
	return nil
}

// checkLogicalServer says why the provider cannot have a logical queue with this plugin, if
// it cannot.
func checkLogicalServer(ctx context.Context, db pg.DB, version int, plugin string) error {
	if version < 90400 {
		return fmt.Errorf("a logical queue needs PostgreSQL 9.4 or later (logical decoding); this server is %s: use the trigger source",
			versionText(version))
	}
	if plugin == PluginPgoutput && version < 100000 {
		return fmt.Errorf("plugin pgoutput needs PostgreSQL 10 or later; this server is %s: use --plugin test_decoding",
			versionText(version))
	}
	var level string
	if err := db.QueryRow(ctx, `SELECT pg_catalog.current_setting('wal_level')`).Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("a logical queue needs wal_level = logical on the provider (it is %s): set it in postgresql.conf and restart the server", level)
	}
	return nil
}

// makeLogical turns the queue the current add just created into a logical one, creating its
// publication (pgoutput). An empty plugin is pgoutput on 10+, test_decoding before.
func (a *adding) makeLogical(ctx context.Context) error {
	plugin := a.spec.Plugin
	if plugin == "" {
		plugin = PluginPgoutput
		if a.version < 100000 {
			plugin = PluginTestDecoding
		}
	}
	if plugin != PluginPgoutput && plugin != PluginTestDecoding {
		return fmt.Errorf("queue %s: unknown plugin %q (pgoutput or test_decoding)", a.queue, plugin)
	}
	if err := checkLogicalServer(ctx, a.tx, a.version, plugin); err != nil {
		return fmt.Errorf("queue %s: %w", a.queue, err)
	}
	var pub *string
	if plugin == PluginPgoutput {
		name := PublicationName(a.qid)
		pub = &name
		// A publication left by a queue of the same id dropped by hand would hold other
		// tables: refuse rather than adopt it.
		var exists bool
		if err := a.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, name).Scan(&exists); err != nil {
			return fmt.Errorf("queue %s: look up publication %s: %w", a.queue, name, err)
		}
		if exists {
			return fmt.Errorf("queue %s: publication %s exists already (left by a queue dropped by hand?): drop it first", a.queue, name)
		}
		if _, err := pg.Exec(ctx, a.tx.Conn().PgConn(), `CREATE PUBLICATION `+change.QuoteIdent(name)); err != nil {
			return fmt.Errorf("queue %s: create publication %s: %w", a.queue, name, err)
		}
		if a.version < truncateDecoded {
			// The TRUNCATE markers (truncateTrigger) travel in the publication too.
			if _, err := pg.Exec(ctx, a.tx.Conn().PgConn(), `ALTER PUBLICATION `+change.QuoteIdent(name)+` ADD TABLE skiff.logical_truncate`); err != nil {
				return fmt.Errorf("queue %s: add skiff.logical_truncate to publication %s: %w", a.queue, name, err)
			}
		}
	}
	if _, err := a.tx.Exec(ctx, `UPDATE skiff.queue SET queue_source = 'logical', queue_plugin = $2, queue_publication = $3
		WHERE queue_id = $1`, a.qid, plugin, pub); err != nil {
		return fmt.Errorf("queue %s: make it logical: %w", a.queue, err)
	}
	a.kind = Kind{Source: SourceLogical, Plugin: plugin}
	if pub != nil {
		a.kind.Publication = *pub
	}
	return nil
}

// checkSource reads the queue's kind and refuses an add that asks for another source.
func (a *adding) checkSource(ctx context.Context, created bool) error {
	want := a.spec.Source
	if want != "" && want != SourceTrigger && want != SourceLogical {
		return fmt.Errorf("unknown source %q (trigger or logical)", want)
	}
	if created && want == SourceLogical {
		return a.makeLogical(ctx)
	}
	k, err := QueueKind(ctx, a.tx, a.queue)
	if err != nil {
		return err
	}
	a.kind = k
	if want != "" && want != k.Source {
		return fmt.Errorf("queue %s was created with the %s source, not %s (a queue's source is chosen when it is created): %w",
			a.queue, k.Source, want, ErrWrongSource)
	}
	if a.spec.Plugin != "" && a.spec.Plugin != k.Plugin {
		return fmt.Errorf("queue %s decodes with %s, not %s (chosen when it was created): %w", a.queue, orNone(k.Plugin), a.spec.Plugin, ErrWrongSource)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no plugin (trigger queue)"
	}
	return s
}

// viaRoot is the first version whose pgoutput publishes a partitioned table's changes under
// its own name (the publication option publish_via_partition_root).
const viaRoot = 130000

// logicalChecks refuses what a logical queue cannot capture: a --where (no trigger
// evaluates it: filter on the target, with the filter handler), a table with inheritance
// children (their changes are decoded under each child's name), and a partitioned table
// unless pgoutput on 13+ decodes its partitions' changes under its name
// (publish_via_partition_root): it is then captured with its partitions, present and future,
// as the trigger source captures it. A partition of a table the queue captures that way, or the
// parent of a partition the queue captures on its own, is refused: its rows would come twice.
func (a *adding) logicalChecks(ctx context.Context) error {
	if a.where != "" {
		return fmt.Errorf("table %s: --where needs the trigger source (a logical queue captures every row); "+
			"filter rows on the target instead (skiff subscribe --table %s --handler filter)", a.rel.table(), a.rel.table())
	}
	fam, err := readFamily(ctx, a.tx, a.qid, a.rel.oid)
	if err != nil {
		return fmt.Errorf("table %s: %w", a.rel.table(), err)
	}
	a.fam = fam
	if fam.parent != nil && !a.prev.found {
		return fmt.Errorf("%s is %s of %s, which queue %s captures with its %s: %w",
			a.rel.table(), fam.parentWord(), fam.parent.table, a.queue, fam.parent.childrenWord(), ErrCapturedWithParent)
	}
	if a.rel.kind == "p" {
		if a.kind.Plugin != PluginPgoutput || a.version < viaRoot {
			return fmt.Errorf("table %s is partitioned: a logical queue captures a partitioned table whole only with pgoutput on PostgreSQL 13 or later "+
				"(publish_via_partition_root; this queue decodes with %s on %s): add its partitions instead, or use the trigger source",
				a.rel.table(), a.kind.Plugin, versionText(a.version))
		}
		if len(fam.capturedBelow) > 0 {
			return fmt.Errorf("table %s: partition %s is captured by queue %s on its own; remove that capture first (skiff table remove), "+
				"then add %s: its partitions are captured with it (%w)", a.rel.table(), fam.capturedBelow[0], a.queue, a.rel.table(), ErrCapturedWithParent)
		}
		a.withChildren = true
		a.res.WithChildren = true
		return nil
	}
	if fam.hasChildren {
		return fmt.Errorf("table %s has inheritance children: a logical queue decodes each child's changes under the child's name; "+
			"add the children too, or use the trigger source", a.rel.table())
	}
	return nil
}

// checkPartitions checks, for a partitioned table, that each partition's replica identity
// carries the key the table's events are keyed by (a partition's own identity decides what
// its decoded updates and deletes carry): FULL, or a primary key or identity index of exactly
// the key's columns. Partitions attached later are not checked: their updates and deletes fail
// to apply (named) when their identity lacks the key.
func (a *adding) checkPartitions(ctx context.Context) error {
	if a.rel.kind != "p" || a.version < viaRoot { // refused before 13 (logicalChecks)
		return nil
	}
	var rows pgx.Rows
	var err error
	if a.version >= 130000 { // viaRoot; pg_partition_tree is 12+
		rows, err = a.tx.Query(ctx, `SELECT n.nspname, c.relname, c.relreplident::text,
			coalesce((SELECT array_agg(att.attname::text) FROM pg_catalog.pg_index i
				JOIN pg_catalog.pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = ANY (i.indkey)
				WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END),
				'{}')
		FROM pg_catalog.pg_partition_tree($1::oid::regclass) t
		JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE t.isleaf ORDER BY 1, 2`, a.rel.oid)
	}
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", a.rel.table(), err)
	}
	type part struct {
		table change.Table
		ident string
		cols  []string
	}
	parts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (part, error) {
		var p part
		err := r.Scan(&p.table.Schema, &p.table.Name, &p.ident, &p.cols)
		slices.Sort(p.cols)
		return p, err
	})
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", a.rel.table(), err)
	}
	key := slices.Sorted(slices.Values(a.key))
	for _, p := range parts {
		if p.ident == "f" || slicesEqual(p.cols, key) {
			continue
		}
		return fmt.Errorf("table %s: its partition %s has a replica identity without the key (%s): its decoded updates and deletes "+
			"would not say which row they change: %w; ALTER TABLE %s REPLICA IDENTITY FULL, or give it a primary key on those columns",
			a.rel.table(), p.table, strings.Join(a.key, ","), ErrNoReplicaIdentity, p.table)
	}
	return nil
}

// logicalKey decides the key of a table of a logical queue from its replica identity, which
// is what decoded updates and deletes carry of the old row: the primary key (DEFAULT), the
// columns of the identity index (USING INDEX), or the whole old row (FULL; the key is then the
// primary key, or the --key columns a unique index keeps unique).
func (a *adding) logicalKey(ctx context.Context) error {
	rel := a.rel
	var ident string
	if err := a.tx.QueryRow(ctx, `SELECT relreplident::text FROM pg_catalog.pg_class WHERE oid = $1`, rel.oid).Scan(&ident); err != nil {
		return fmt.Errorf("replica identity of %s: %w", rel.table(), err)
	}
	pk := catalog.PrimaryKey(a.cols)
	hint := "; ALTER TABLE " + rel.table().String() + " REPLICA IDENTITY USING INDEX <unique index> (or REPLICA IDENTITY FULL with --key)"
	switch ident {
	case "d":
		if len(pk) == 0 {
			return fmt.Errorf("table %s has no primary key: %w%s", rel.table(), ErrNoReplicaIdentity, hint)
		}
		if a.keyGiven && !slicesEqual(a.key, pk) {
			return fmt.Errorf("table %s: decoded updates and deletes carry its primary key (%s), not --key %s: %w%s",
				rel.table(), strings.Join(pk, ","), strings.Join(a.key, ","), ErrNoReplicaIdentity, hint)
		}
		a.key = pk
	case "i":
		cols, err := identityIndexColumns(ctx, a.tx, rel.oid)
		if err != nil {
			return fmt.Errorf("replica identity index of %s: %w", rel.table(), err)
		}
		if a.keyGiven && !slicesEqual(a.key, cols) {
			return fmt.Errorf("table %s: its replica identity index has columns %s, not --key %s: %w",
				rel.table(), strings.Join(cols, ","), strings.Join(a.key, ","), ErrNoReplicaIdentity)
		}
		a.key = cols
	case "f":
		if !a.keyGiven {
			if len(pk) == 0 {
				return fmt.Errorf("table %s has REPLICA IDENTITY FULL and no primary key: give the columns that identify a row with --key col,col", rel.table())
			}
			a.key = pk
			break
		}
		for _, k := range a.key {
			if indexOf(a.cols, k) < 0 {
				return fmt.Errorf("table %s: key column %q does not exist", rel.table(), k)
			}
		}
		if !a.spec.KeyNotUnique {
			if err := checkKeyUnique(ctx, a.tx, rel, a.key); err != nil {
				return err
			}
		}
	default: // 'n': NOTHING
		return fmt.Errorf("table %s has REPLICA IDENTITY NOTHING: its updates and deletes cannot be decoded: %w%s",
			rel.table(), ErrNoReplicaIdentity, hint)
	}
	return nil
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// identityIndexColumns lists the columns of a table's replica identity index, in index order.
func identityIndexColumns(ctx context.Context, db pg.DB, oid uint32) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT a.attname FROM pg_catalog.pg_index i
		JOIN pg_catalog.generate_series(0, 31) AS s(n) ON s.n < i.indnatts
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[s.n]
		WHERE i.indrelid = $1 AND i.indisreplident ORDER BY s.n`, oid)
	if err != nil {
		return nil, err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, errors.New("the index is gone")
	}
	return cols, nil
}

// publish adds the table to the queue's publication (pgoutput), unless it is there already.
func (a *adding) publish(ctx context.Context) error {
	if a.kind.Publication == "" {
		return nil
	}
	var in bool
	if err := a.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
		WHERE p.pubname = $1 AND pr.prrelid = $2)`, a.kind.Publication, a.rel.oid).Scan(&in); err != nil {
		return fmt.Errorf("table %s: publication %s: %w", a.rel.table(), a.kind.Publication, err)
	}
	if in {
		return nil
	}
	if a.rel.kind == "p" {
		// The partitions' changes under the partitioned table's name (13+, logicalChecks): a
		// publication option, which changes nothing for the queue's other tables.
		if _, err := pg.Exec(ctx, a.tx.Conn().PgConn(), `ALTER PUBLICATION `+change.QuoteIdent(a.kind.Publication)+
			` SET (publish_via_partition_root = true)`); err != nil {
			return fmt.Errorf("table %s: publication %s: publish via the partition root: %w", a.rel.table(), a.kind.Publication, err)
		}
	}
	if _, err := pg.Exec(ctx, a.tx.Conn().PgConn(), `ALTER PUBLICATION `+change.QuoteIdent(a.kind.Publication)+` ADD TABLE ONLY `+a.rel.table().String()); err != nil {
		return fmt.Errorf("table %s: add it to publication %s: %w", a.rel.table(), a.kind.Publication, err)
	}
	return nil
}

// unpublish drops a table from a queue's publication, if the queue has one and holds it.
func unpublish(ctx context.Context, tx pgx.Tx, qid int32, t change.Table, oid uint32) error {
	var pub *string
	if ok, err := knowsLogical(ctx, tx); err != nil || !ok {
		return err
	}
	if err := tx.QueryRow(ctx, `SELECT queue_publication FROM skiff.queue WHERE queue_id = $1`, qid).Scan(&pub); err != nil {
		return fmt.Errorf("table %s: publication: %w", t, err)
	}
	if pub == nil {
		return nil
	}
	var in bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
		WHERE p.pubname = $1 AND pr.prrelid = $2)`, *pub, oid).Scan(&in); err != nil {
		return fmt.Errorf("table %s: publication %s: %w", t, *pub, err)
	}
	if !in {
		return nil
	}
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `ALTER PUBLICATION `+change.QuoteIdent(*pub)+` DROP TABLE ONLY `+t.String()); err != nil {
		return fmt.Errorf("table %s: drop it from publication %s: %w", t, *pub, err)
	}
	return nil
}

// dropLogical drops what a logical queue made on the provider: its publication, and the
// replication slots of its subscriptions (a slot in use by a running worker cannot be
// dropped: the error says so, and nothing is dropped).
func dropLogical(ctx context.Context, tx pgx.Tx, qid int32) error {
	if ok, err := knowsLogical(ctx, tx); err != nil || !ok {
		return err
	}
	var pub *string
	if err := tx.QueryRow(ctx, `SELECT queue_publication FROM skiff.queue WHERE queue_id = $1`, qid).Scan(&pub); err != nil {
		return fmt.Errorf("publication: %w", err)
	}
	if pub != nil {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, *pub).Scan(&exists); err != nil {
			return fmt.Errorf("publication %s: %w", *pub, err)
		}
		if exists {
			if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `DROP PUBLICATION `+change.QuoteIdent(*pub)); err != nil {
				return fmt.Errorf("drop publication %s: %w", *pub, err)
			}
		}
	}
	rows, err := tx.Query(ctx, `SELECT sub_slot FROM skiff.consumer WHERE queue_id = $1 AND sub_slot IS NOT NULL ORDER BY 1`, qid)
	if err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	for _, s := range slots {
		if err := DropSlot(ctx, tx, s); err != nil {
			return err
		}
	}
	return nil
}

// DropSlot drops a replication slot if it exists. A slot a worker is streaming from cannot
// be dropped: stop the worker first.
func DropSlot(ctx context.Context, db pg.DB, slot string) error {
	version, err := pg.VersionOf(ctx, db)
	if err != nil {
		return fmt.Errorf("replication slot %s: %w", slot, err)
	}
	var active *bool
	if version >= 90400 { // no replication slots before 9.4
		err = db.QueryRow(ctx, `SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
	} else {
		err = pgx.ErrNoRows
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("replication slot %s: %w", slot, err)
	}
	if active != nil && *active {
		return fmt.Errorf("replication slot %s is in use (a worker streams from it): stop the worker first", slot)
	}
	if _, err := db.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, slot); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	return nil
}

// versionText writes a server_version_num as users know it: 90400 is 9.4, 150002 is 15.
func versionText(v int) string {
	if v >= 100000 {
		return strconv.Itoa(v / 10000)
	}
	return strconv.Itoa(v/10000) + "." + strconv.Itoa(v/100%100)
}

// dropConsumerSlot drops the replication slot recorded for a consumer, if any.
func dropConsumerSlot(ctx context.Context, db pg.DB, queue, consumer string) error {
	if ok, err := knowsLogical(ctx, db); err != nil || !ok {
		return err
	}
	s, err := ConsumerSlot(ctx, db, queue, consumer)
	if errors.Is(err, ErrNotRegistered) {
		return nil
	}
	if err != nil || s.Name == "" {
		return err
	}
	return DropSlot(ctx, db, s.Name)
}

// ErrSlotLost is returned (wrapped) when the replication slot recorded for a subscription no
// longer exists: the changes since its last confirmed position are gone, and the subscription
// must be made again (skiff unsubscribe, then skiff subscribe copies the tables anew).
var ErrSlotLost = errors.New("replication slot is gone")

// EnsureSlot gives a consumer of a logical queue its replication slot, created now (decoding
// from this moment on) or the one it has; created says which. A slot recorded but gone is
// ErrSlotLost: a new one would silently skip what was written in between. Creating a slot
// waits for the transactions running now to end (the slot's consistent point), and needs the
// REPLICATION attribute (or superuser).
func EnsureSlot(ctx context.Context, db pg.DB, queue, consumer string) (slot Slot, created bool, err error) {
	k, err := QueueKind(ctx, db, queue)
	if err != nil {
		return Slot{}, false, err
	}
	if !k.Logical() {
		return Slot{}, false, fmt.Errorf("queue %s is a %s queue: it has no replication slots", queue, k.Source)
	}
	if slot, err = ConsumerSlot(ctx, db, queue, consumer); err != nil {
		return slot, false, err
	}
	version, err := pg.VersionOf(ctx, db)
	if err != nil {
		return slot, false, err
	}
	if slot.Name != "" {
		var exists bool
		if version >= 90400 {
			err = db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)`, slot.Name).Scan(&exists)
		}
		if err != nil {
			return slot, false, fmt.Errorf("replication slot %s: %w", slot.Name, err)
		}
		if !exists {
			return slot, false, fmt.Errorf("consumer %s of queue %s: replication slot %s: %w (dropped by hand, or the provider was restored): "+
				"changes since its last confirmed position are lost; unsubscribe and subscribe again to copy the tables anew",
				consumer, queue, slot.Name, ErrSlotLost)
		}
		return slot, false, nil
	}
	var dbOID uint32
	if err := db.QueryRow(ctx, `SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()`).Scan(&dbOID); err != nil {
		return slot, false, fmt.Errorf("database oid: %w", err)
	}
	name := SlotName(dbOID, slot.QueueID, slot.SubID)
	if version < 90400 {
		return slot, false, fmt.Errorf("create replication slot %s for consumer %s: no logical decoding before PostgreSQL 9.4", name, consumer)
	}
	for attempt := 1; ; attempt++ {
		if _, err = db.Exec(ctx, `SELECT pg_catalog.pg_create_logical_replication_slot($1, $2)`, name, k.Plugin); err != nil {
			return slot, false, fmt.Errorf("create replication slot %s (plugin %s) for consumer %s: %w", name, k.Plugin, consumer, err)
		}
		slot.Unsettled, err = settleSlot(ctx, db, name, k, version)
		if err == nil {
			break
		}
		// Dropped: nothing was copied against it yet. A slot that could not decode its
		// first transactions is made again (9.4–10 only, see settleSlot).
		err = fmt.Errorf("replication slot %s (plugin %s) for consumer %s: %w", name, k.Plugin, consumer, err)
		if derr := DropSlot(context.WithoutCancel(ctx), db, name); derr != nil {
			return slot, false, errors.Join(err, derr)
		}
		if !errors.Is(err, errSlotUndecodable) || attempt == 3 {
			return slot, false, err
		}
	}
	if err := SetConsumerSlot(ctx, db, queue, consumer, name); err != nil {
		// The slot would hold WAL for nobody.
		return slot, false, errors.Join(err, DropSlot(context.WithoutCancel(ctx), db, name))
	}
	slot.Name = name
	return slot, true, nil
}

// errSlotUndecodable marks a new slot whose first transactions its server could not decode.
var errSlotUndecodable = errors.New("its first transactions could not be decoded")

// settleSlot works around a flaw of PostgreSQL's logical decoding (9.4 to 18 at least),
// for a slot just created. A slot's snapshot builder tracks no transaction that commits
// before its snapshot is full; the first catalog snapshot it builds once full (at the first
// change it decodes) has for xmin the oldest transaction running then, and is kept until a
// transaction that changes the catalog commits. So a catalog change committed while the
// slot was being created, by a transaction younger than one still running when the snapshot
// turned full, is missing from the snapshot the slot decodes with: a row later written to a
// table that was truncated then cannot be decoded ("could not map filenode … to relation
// OID"), at every restart of the stream (the subscription is stuck), and a column added then
// would be missing from the rows decoded. tests.TestSlotCreatedAcrossATruncate orders
// transactions around a slot's creation this way.
//
// The settling: a catalog change of skiff's own, committed now that the slot is consistent
// (the builder makes a new snapshot from its current xmin, past every transaction that
// committed while the slot was created); then a wait for the transactions running at that
// point to end (they may have written with the old snapshot); then the slot's confirmed
// position is moved past them: every transaction the slot will send committed later and
// started after the catalog change. Copies are taken after this, so what the slot skips
// is in them. On 11+ the slot moves without decoding (pg_replication_slot_advance). On
// 9.4–10 its changes up to that point are read and dropped, which decodes them: a failure
// there is errSlotUndecodable, and EnsureSlot makes the slot again.
//
// The catalog change is a temporary table created and dropped in one statement. A role
// without the TEMPORARY privilege cannot: the slot is kept unsettled, and that is returned
// as unsettled (not an error).
func settleSlot(ctx context.Context, db pg.DB, name string, k Kind, version int) (unsettled error, err error) {
	if _, err := db.Exec(ctx, `CREATE TEMPORARY TABLE skiff_settle_slot (x integer) ON COMMIT DROP`); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("no catalog change settled replication slot %s (a temporary table: %w): "+
				"a catalog change committed while it was created may be missing from what it decodes", name, err), nil
		}
		return nil, fmt.Errorf("settle the new slot (a temporary table): %w", err)
	}
	var snap string
	if err := db.QueryRow(ctx, `SELECT pg_catalog.txid_current_snapshot()::text`).Scan(&snap); err != nil {
		return nil, fmt.Errorf("settle the new slot: %w", err)
	}
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		var running int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.txid_snapshot_xip($1::pg_catalog.txid_snapshot) x
			WHERE NOT pg_catalog.txid_visible_in_snapshot(x, pg_catalog.txid_current_snapshot())`, snap).Scan(&running); err != nil {
			return nil, fmt.Errorf("settle the new slot: transactions running: %w", err)
		}
		if running == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("settle the new slot: waiting for %d transactions running on the provider to end: %w", running, ctx.Err())
		case <-time.After(wait):
		}
	}
	current := `pg_catalog.pg_current_wal_lsn()`
	if version < 100000 {
		current = `pg_catalog.pg_current_xlog_location()`
	}
	var target string
	if err := db.QueryRow(ctx, `SELECT `+current+`::text`).Scan(&target); err != nil {
		return nil, fmt.Errorf("settle the new slot: WAL position: %w", err)
	}
	// A slot moves only up to the WAL flushed: an asynchronous commit may not be yet.
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		var reached bool
		var err error
		if version >= 110000 {
			err = db.QueryRow(ctx, `SELECT end_lsn >= $2::pg_catalog.pg_lsn FROM pg_catalog.pg_replication_slot_advance($1, $2::pg_catalog.pg_lsn)`,
				name, target).Scan(&reached)
		} else {
			opts := []string{}
			if k.Plugin == PluginPgoutput {
				opts = []string{"proto_version", "1", "publication_names", change.QuoteIdent(k.Publication)}
			}
			_, err = db.Exec(ctx, `SELECT count(*) FROM pg_catalog.pg_logical_slot_get_binary_changes($1, $2::pg_catalog.pg_lsn, NULL, VARIADIC $3::text[])`,
				name, target, opts)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "XX000" { // internal_error: "could not map filenode …"
				return nil, fmt.Errorf("settle the new slot: decode up to %s: %w (%w)", target, err, errSlotUndecodable)
			}
			if err != nil {
				return nil, fmt.Errorf("settle the new slot: decode up to %s: %w", target, err)
			}
			reached = true
			if version >= 90600 { // confirmed_flush_lsn
				err = db.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_catalog.pg_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`,
					name, target).Scan(&reached)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("settle the new slot: move it to %s: %w", target, err)
		}
		if reached {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("settle the new slot: waiting for the provider to flush its WAL to %s: %w", target, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// SlotState is a replication slot as the provider reports it.
type SlotState struct {
	Name     string
	Database string
	Plugin   string
	Active   bool
	// ActivePID is the walsender streaming from it, 0 when inactive (9.5+).
	ActivePID int
	// ConfirmedLSN is the position its consumer confirmed (9.6+; restart_lsn before).
	ConfirmedLSN string
	// RetainedBytes is the WAL the slot keeps on the provider's disk (from its restart_lsn);
	// LagBytes the WAL written since its confirmed position.
	RetainedBytes, LagBytes int64
	// ReplayLag is the walsender's replay lag (10+, while streaming), nil when unknown.
	ReplayLag *time.Duration
}

// SlotStates lists the logical replication slots of the provider's database whose name
// skiff gives (SlotName), by name; none before 9.4.
func SlotStates(ctx context.Context, db pg.DB) ([]SlotState, error) {
	version, err := pg.VersionOf(ctx, db)
	if err != nil {
		return nil, err
	}
	var q string
	switch {
	case version >= 100000:
		q = `SELECT s.slot_name::text, s.database::text, s.plugin::text, s.active, coalesce(s.active_pid, 0),
			coalesce(coalesce(s.confirmed_flush_lsn, s.restart_lsn)::text, ''),
			coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn), 0)::bigint,
			coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), coalesce(s.confirmed_flush_lsn, s.restart_lsn)), 0)::bigint,
			(SELECT extract(epoch FROM r.replay_lag)::float8 FROM pg_catalog.pg_stat_replication r WHERE r.pid = s.active_pid)
			FROM pg_catalog.pg_replication_slots s`
	case version >= 90600:
		q = `SELECT s.slot_name::text, s.database::text, s.plugin::text, s.active, coalesce(s.active_pid, 0),
			coalesce(coalesce(s.confirmed_flush_lsn, s.restart_lsn)::text, ''),
			coalesce(pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), s.restart_lsn), 0)::bigint,
			coalesce(pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), coalesce(s.confirmed_flush_lsn, s.restart_lsn)), 0)::bigint,
			NULL::float8
			FROM pg_catalog.pg_replication_slots s`
	case version >= 90500:
		q = `SELECT s.slot_name::text, s.database::text, s.plugin::text, s.active, coalesce(s.active_pid, 0),
			coalesce(s.restart_lsn::text, ''),
			coalesce(pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), s.restart_lsn), 0)::bigint,
			coalesce(pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), s.restart_lsn), 0)::bigint,
			NULL::float8
			FROM pg_catalog.pg_replication_slots s`
	case version >= 90400:
		q = `SELECT s.slot_name::text, s.database::text, s.plugin::text, s.active, 0,
			coalesce(s.restart_lsn::text, ''),
			coalesce(pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), s.restart_lsn), 0)::bigint,
			coalesce(pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_location(), s.restart_lsn), 0)::bigint,
			NULL::float8
			FROM pg_catalog.pg_replication_slots s`
	default:
		return nil, nil
	}
	rows, err := db.Query(ctx, q+` WHERE s.slot_type = 'logical' AND s.database = pg_catalog.current_database()
		AND s.slot_name LIKE 'skiff\_d%\_q%\_s%' ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("replication slots: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SlotState, error) {
		var s SlotState
		var lag *float64
		err := r.Scan(&s.Name, &s.Database, &s.Plugin, &s.Active, &s.ActivePID, &s.ConfirmedLSN, &s.RetainedBytes, &s.LagBytes, &lag)
		if lag != nil {
			d := time.Duration(*lag * float64(time.Second))
			s.ReplayLag = &d
		}
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("replication slots: %w", err)
	}
	return out, nil
}

// ConsumerSlots maps queue and consumer to the slot recorded for it, for the provider's
// logical queues.
func ConsumerSlots(ctx context.Context, db pg.DB) (map[[2]string]string, error) {
	if ok, err := knowsLogical(ctx, db); err != nil || !ok {
		return nil, err
	}
	rows, err := db.Query(ctx, `SELECT q.queue_name, c.sub_consumer, c.sub_slot FROM skiff.consumer c
		JOIN skiff.queue q ON q.queue_id = c.queue_id WHERE c.sub_slot IS NOT NULL`)
	if err != nil {
		return nil, wrap(err, "slots of consumers", nil)
	}
	out := map[[2]string]string{}
	defer rows.Close()
	for rows.Next() {
		var q, c, s string
		if err := rows.Scan(&q, &c, &s); err != nil {
			return nil, wrap(err, "slots of consumers", nil)
		}
		out[[2]string{q, c}] = s
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, "slots of consumers", nil)
	}
	return out, nil
}

// truncateDecoded is the first server version that decodes TRUNCATE (11); before it a logical
// queue's tables get a TRUNCATE marker trigger (provider migration 9).
const truncateDecoded = 110000

// TruncateMarkerTable is the table whose decoded inserts stand for a TRUNCATE of a logical
// queue's table on servers before 11 (provider migration 9): columns queue_id, table_schema,
// table_name. The logical source turns them into Truncate events.
var TruncateMarkerTable = change.Table{Schema: "skiff", Name: "logical_truncate"}

// truncateTriggerName is the marker trigger of a logical queue's table.
func truncateTriggerName(qid int32) string { return "skiff_truncate_q" + strconv.Itoa(int(qid)) }

// truncateTrigger gives a logical queue's table its TRUNCATE marker trigger on a server that
// does not decode TRUNCATE (before 11) and returns its name ("" on 11+): an AFTER TRUNCATE
// statement trigger writing (queue, table) into skiff.logical_truncate, in the truncating
// transaction.
func (a *adding) truncateTrigger(ctx context.Context) (string, error) {
	if a.version >= truncateDecoded {
		return "", nil
	}
	name := truncateTriggerName(a.qid)
	conn := a.tx.Conn().PgConn()
	tbl := a.rel.table().String()
	for _, stmt := range []string{
		`DROP TRIGGER IF EXISTS ` + change.QuoteIdent(name) + ` ON ` + tbl,
		`CREATE TRIGGER ` + change.QuoteIdent(name) + ` AFTER TRUNCATE ON ` + tbl +
			` FOR EACH STATEMENT EXECUTE PROCEDURE skiff.logical_truncate(` + change.QuoteLiteral(strconv.Itoa(int(a.qid))) + `)`,
	} {
		if _, err := pg.Exec(ctx, conn, stmt); err != nil {
			return "", fmt.Errorf("table %s: TRUNCATE marker trigger: %w", a.rel.table(), err)
		}
	}
	return name, nil
}

// dropTruncateTrigger drops a logical queue's TRUNCATE marker trigger of a table, if it has one.
func dropTruncateTrigger(ctx context.Context, tx pgx.Tx, t change.Table, name string) error {
	if name == "" {
		return nil
	}
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), `DROP TRIGGER IF EXISTS `+change.QuoteIdent(name)+` ON `+t.String()); err != nil {
		return fmt.Errorf("remove TRUNCATE marker trigger of %s: %w", t, err)
	}
	return nil
}
