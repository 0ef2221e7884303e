package queue

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestLogicalQueue: a queue created with the logical source records its tables without a
// trigger, puts them in its publication (pgoutput), keeps its source for later adds, and
// gives its publication back when tables are removed and when it is dropped.
func TestLogicalQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE "Odd ""t"" x" (id int PRIMARY KEY, v text)`)
	exec(t, c, `CREATE TABLE two (id serial PRIMARY KEY, v text)`)
	exec(t, c, `CREATE TABLE trig (id int PRIMARY KEY)`)
	version := pg.ServerVersion(c)
	if version < 90400 {
		_, err := AddTable(ctx, c, "lq", TableSpec{Name: `"Odd ""t"" x"`, Source: SourceLogical})
		require.ErrorContains(t, err, "a logical queue needs PostgreSQL 9.4 or later")
		_, err = QueueKind(ctx, c, "lq")
		require.ErrorIs(t, err, ErrNoQueue, "nothing was created")
		return
	}

	res, err := AddTable(ctx, c, "lq", TableSpec{Name: `"Odd ""t"" x"`, Source: SourceLogical})
	require.NoError(t, err)
	require.True(t, res.QueueCreated)
	require.True(t, res.Kind.Logical())
	kind, err := QueueKind(ctx, c, "lq")
	require.NoError(t, err)
	require.Equal(t, res.Kind, kind)
	wantPub := version >= 100000
	require.Equal(t, wantPub, kind.Publication != "")
	if wantPub {
		require.Equal(t, PluginPgoutput, kind.Plugin)
	} else {
		require.Equal(t, PluginTestDecoding, kind.Plugin)
	}
	var triggers int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%skiff%' AND tgname NOT LIKE 'skiff\_truncate\_q%'`).Scan(&triggers))
	require.Zero(t, triggers, "a logical queue installs no capture trigger (before 11 only a TRUNCATE marker: TestLogicalTruncateMarker)")

	// Later adds follow the queue's source; asking for the other one is refused.
	res, err = AddTable(ctx, c, "lq", TableSpec{Name: "two"})
	require.NoError(t, err)
	require.True(t, res.Kind.Logical())
	require.Equal(t, []string{"id"}, mustTables(t, c, "lq")[1].Key)
	_, err = AddTable(ctx, c, "lq", TableSpec{Name: "trig", Source: SourceTrigger})
	require.ErrorIs(t, err, ErrWrongSource)
	_, err = AddTable(ctx, c, "tq", TableSpec{Name: "trig"})
	require.NoError(t, err)
	_, err = AddTable(ctx, c, "tq", TableSpec{Name: "trig", Source: SourceLogical})
	require.ErrorIs(t, err, ErrWrongSource)
	require.ErrorContains(t, err, "queue tq was created with the trigger source, not logical")
	// The same add again changes nothing.
	res, err = AddTable(ctx, c, "lq", TableSpec{Name: "two", Source: SourceLogical})
	require.NoError(t, err)
	require.True(t, res.Unchanged)

	logical, err := LogicalQueues(ctx, c)
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"lq": true}, logical)

	published := func() []string {
		t.Helper()
		if !wantPub {
			return nil
		}
		var names []string
		require.NoError(t, c.QueryRow(ctx, `SELECT coalesce(array_agg(relname::text ORDER BY relname), '{}')
			FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class r ON r.oid = pr.prrelid
			WHERE p.pubname = $1`, kind.Publication).Scan(&names))
		return names
	}
	if wantPub {
		require.Equal(t, []string{`Odd "t" x`, "two"}, published())
	}

	_, err = RemoveTable(ctx, c, "lq", "two")
	require.NoError(t, err)
	if wantPub {
		require.Equal(t, []string{`Odd "t" x`}, published())
	}
	require.Len(t, mustTables(t, c, "lq"), 1)

	_, err = DropQueue(ctx, c, "lq", false)
	require.NoError(t, err)
	if wantPub {
		var n int
		require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, kind.Publication).Scan(&n))
		require.Zero(t, n, "the queue's publication goes with it")
	}
	logical, err = LogicalQueues(ctx, c)
	require.NoError(t, err)
	require.Empty(t, logical)
}

// TestLogicalQueueKeys: a table of a logical queue is keyed by what decoded updates and
// deletes carry of the old row (its replica identity); one whose rows cannot be identified is
// refused with the ALTER TABLE that fixes it.
func TestLogicalQueueKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	if pg.ServerVersion(c) < 90400 {
		t.Skip("logical decoding needs 9.4+ (TestLogicalQueue checks the refusal)")
	}
	exec(t, c, `CREATE TABLE nokey (a int NOT NULL, b text)`)
	exec(t, c, `CREATE UNIQUE INDEX nokey_a ON nokey (a)`)
	exec(t, c, `CREATE TABLE full_nokey (a int NOT NULL, b text)`)
	exec(t, c, `CREATE UNIQUE INDEX full_nokey_a ON full_nokey (a)`)
	exec(t, c, `ALTER TABLE full_nokey REPLICA IDENTITY FULL`)
	exec(t, c, `CREATE TABLE byindex (id int PRIMARY KEY, code text NOT NULL, v text)`)
	exec(t, c, `CREATE UNIQUE INDEX byindex_code ON byindex (code)`)
	exec(t, c, `ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_code`)
	exec(t, c, `CREATE TABLE nothing (id int PRIMARY KEY)`)
	exec(t, c, `ALTER TABLE nothing REPLICA IDENTITY NOTHING`)
	exec(t, c, `CREATE TABLE parted (id int PRIMARY KEY)`)
	exec(t, c, `CREATE TABLE parted_child () INHERITS (parted)`)
	spec := func(name string, key ...string) TableSpec {
		return TableSpec{Name: name, Key: key, Source: SourceLogical, NoSequences: true}
	}

	_, err := AddTable(ctx, c, "lq", spec("nokey"))
	require.ErrorIs(t, err, ErrNoReplicaIdentity)
	require.ErrorContains(t, err, `ALTER TABLE "public"."nokey" REPLICA IDENTITY USING INDEX`)
	_, err = AddTable(ctx, c, "lq", spec("nokey", "a"))
	require.ErrorIs(t, err, ErrNoReplicaIdentity, "--key without a replica identity: updates carry no old key")
	_, err = AddTable(ctx, c, "lq", spec("nothing"))
	require.ErrorIs(t, err, ErrNoReplicaIdentity)
	_, err = AddTable(ctx, c, "lq", spec("full_nokey"))
	require.ErrorContains(t, err, "REPLICA IDENTITY FULL and no primary key: give the columns that identify a row with --key")
	_, err = AddTable(ctx, c, "lq", TableSpec{Name: "byindex", Where: "id > 0", Source: SourceLogical})
	require.ErrorContains(t, err, "--where needs the trigger source")
	_, err = AddTable(ctx, c, "lq", spec("parted"))
	require.ErrorContains(t, err, "has inheritance children")
	_, err = QueueKind(ctx, c, "lq")
	require.ErrorIs(t, err, ErrNoQueue, "the failed adds created no queue")

	_, err = AddTable(ctx, c, "lq", spec("full_nokey", "a"))
	require.NoError(t, err)
	_, err = AddTable(ctx, c, "lq", spec("byindex"))
	require.NoError(t, err)
	_, err = AddTable(ctx, c, "lq", spec("byindex", "id"))
	require.ErrorContains(t, err, "already captured")
	tables := mustTables(t, c, "lq")
	require.Len(t, tables, 2)
	require.Equal(t, "byindex", tables[0].Table.Name)
	require.Equal(t, []string{"code"}, tables[0].Key, "keyed by the replica identity index")
	require.Equal(t, []string{"a"}, tables[1].Key)
}

func mustTables(t *testing.T, c interface {
	pg.DB
}, q string) []CapturedTable {
	t.Helper()
	tables, err := Tables(context.Background(), c, q)
	require.NoError(t, err)
	return tables
}

// TestConsumerSlot: a subscription to a logical queue gets a slot of its own, once; a slot
// dropped behind skiff's back is reported as lost, never silently replaced; unregistering the
// consumer drops its slot, and queue drop drops the slots of the consumers it unregisters.
func TestConsumerSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := logicalQueue(t)
	var err error
	exec(t, c, `CREATE TABLE tt (id int PRIMARY KEY)`)
	_, err = AddTable(ctx, c, "tq", TableSpec{Name: "tt"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "tq", "a")
	require.NoError(t, err)
	_, _, err = EnsureSlot(ctx, c, "tq", "a")
	require.ErrorContains(t, err, "queue tq is a trigger queue: it has no replication slots")

	_, _, err = EnsureSlot(ctx, c, "lq", "a")
	require.ErrorIs(t, err, ErrNotRegistered)
	_, err = RegisterConsumer(ctx, c, "lq", "a")
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "lq", "b")
	require.NoError(t, err)
	slot, created, err := EnsureSlot(ctx, c, "lq", "a")
	require.NoError(t, err)
	require.True(t, created)
	var dbOID uint32
	require.NoError(t, c.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&dbOID))
	require.Equal(t, SlotName(dbOID, slot.QueueID, slot.SubID), slot.Name)
	again, created, err := EnsureSlot(ctx, c, "lq", "a")
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, slot, again)
	slots := func() []string {
		t.Helper()
		var names []string
		require.NoError(t, c.QueryRow(ctx, `SELECT coalesce(array_agg(slot_name::text ORDER BY slot_name), '{}') FROM pg_replication_slots WHERE database = current_database()`).Scan(&names))
		return names
	}
	require.Equal(t, []string{slot.Name}, slots())
	b, _, err := EnsureSlot(ctx, c, "lq", "b")
	require.NoError(t, err)
	require.Len(t, slots(), 2)

	exec(t, c, `SELECT pg_drop_replication_slot($1)`, slot.Name)
	_, _, err = EnsureSlot(ctx, c, "lq", "a")
	require.ErrorIs(t, err, ErrSlotLost)
	require.ErrorContains(t, err, "unsubscribe and subscribe again")

	ok, err := UnregisterConsumer(ctx, c, "lq", "a")
	require.NoError(t, err, "a lost slot does not keep the consumer registered")
	require.True(t, ok)
	require.Equal(t, []string{b.Name}, slots())

	_, err = DropQueue(ctx, c, "lq", true)
	require.NoError(t, err)
	require.Empty(t, slots(), "queue drop --force drops its consumers' slots")
}

// TestExecuteRefusesLogicalQueue: skiff execute writes its event into the queue's event
// tables, which a logical queue's subscriptions never read: refused, nothing run.
func TestExecuteRefusesLogicalQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := logicalQueue(t)
	var err error
	_, err = Execute(ctx, c, "lq", []Script{{Name: "a.sql", SQL: "ALTER TABLE t ADD COLUMN v int"}})
	require.ErrorIs(t, err, ErrWrongSource)
	var n int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'v'`).Scan(&n))
	require.Zero(t, n, "nothing ran")
}

// TestLogicalTruncateMarker: before PostgreSQL 11 (which decodes no TRUNCATE) a logical
// queue's table gets a TRUNCATE marker trigger, the marker table travels in the queue's
// publication, and a TRUNCATE writes a marker row of the queue in its transaction (deleted
// at once: the insert is decoded all the same); table remove drops the trigger. From 11 on
// no trigger is made.
func TestLogicalTruncateMarker(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", "9.4", "9.6", ""} {
		if v != "" && !slices.Contains(pgtest.Majors(), v) {
			continue
		}
		t.Run("v"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			c := p.conn(t)
			version := pg.ServerVersion(c)
			if version < 90400 {
				t.Skip("no logical decoding")
			}
			exec(t, c, `CREATE TABLE "T r" (id int PRIMARY KEY)`)
			res, err := AddTable(ctx, c, "lq", TableSpec{Name: `"T r"`, Source: SourceLogical})
			require.NoError(t, err)
			triggers := func() []string {
				var names []string
				require.NoError(t, c.QueryRow(ctx, `SELECT coalesce(array_agg(tgname::text), '{}') FROM pg_trigger
					WHERE tgrelid = '"T r"'::regclass`).Scan(&names))
				return names
			}
			if version >= 110000 {
				require.Empty(t, triggers(), "11+ decodes TRUNCATE itself")
				return
			}
			require.Equal(t, []string{"skiff_truncate_q1"}, triggers())
			if res.Kind.Publication != "" {
				var in bool
				require.NoError(t, c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
					WHERE pubname = $1 AND schemaname = 'skiff' AND tablename = 'logical_truncate')`, res.Kind.Publication).Scan(&in))
				require.True(t, in, "the markers travel in the publication")
			}
			// The marker is written in the TRUNCATE's transaction: seen from inside it,
			// through the sequence (the row itself is deleted at once).
			tx, err := c.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `TRUNCATE "T r"`)
			require.NoError(t, err)
			var id int64
			require.NoError(t, tx.QueryRow(ctx, `SELECT last_value FROM skiff.logical_truncate_trunc_id_seq`).Scan(&id))
			require.Equal(t, int64(1), id)
			require.NoError(t, tx.Commit(ctx))
			var left int
			require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM skiff.logical_truncate`).Scan(&left))
			require.Zero(t, left)

			_, err = RemoveTable(ctx, c, "lq", `"T r"`)
			require.NoError(t, err)
			require.Empty(t, triggers(), "table remove drops the marker trigger")
		})
	}
}

// TestSlotNamesPerDatabase: slot names are one namespace for the whole server; two databases
// each with their first logical queue and subscription get slots of their own.
func TestSlotNamesPerDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var names []string
	for range 2 {
		c := logicalQueue(t)
		_, err := RegisterConsumer(ctx, c, "lq", "c1")
		require.NoError(t, err)
		slot, _, err := EnsureSlot(ctx, c, "lq", "c1")
		require.NoError(t, err, "the second database's slot must not collide with the first's")
		names = append(names, slot.Name)
		t.Cleanup(func() { _, _ = UnregisterConsumer(context.Background(), c, "lq", "c1") })
	}
	require.NotEqual(t, names[0], names[1])
}

// logicalQueue is a fresh provider (on 9.4+; the test is skipped before) with table t in the
// logical queue lq.
func logicalQueue(t *testing.T) *pgx.Conn {
	t.Helper()
	c := newProvider(t, "").conn(t)
	if pg.ServerVersion(c) < 90400 {
		t.Skip("logical decoding needs 9.4+")
	}
	exec(t, c, `CREATE TABLE t (id int PRIMARY KEY)`)
	_, err := AddTable(context.Background(), c, "lq", TableSpec{Name: "t", Source: SourceLogical})
	require.NoError(t, err)
	return c
}

// TestLogicalQueuePartitioned: with pgoutput on 13+, a partitioned table is captured whole:
// its publication publishes through the partition root, no partition gets a trigger (nor from
// the ticker's adoption), a partition cannot be added beside it, nor the parent of a
// partition captured on its own; a partition whose replica identity lacks the key is named.
// test_decoding refuses a partitioned table.
func TestLogicalQueuePartitioned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newProvider(t, "").conn(t)
	if pg.ServerVersion(c) < 130000 {
		t.Skip("publish_via_partition_root needs 13+")
	}
	exec(t, c, `CREATE TABLE pt (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
		CREATE TABLE pt2 (v text, at date NOT NULL, id int NOT NULL);
		ALTER TABLE pt ATTACH PARTITION pt2 FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
		CREATE TABLE pb (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
		CREATE TABLE pb1 PARTITION OF pb FOR VALUES FROM (0) TO (100);
		CREATE TABLE pb2 PARTITION OF pb FOR VALUES FROM (100) TO (200);
		ALTER TABLE pb2 REPLICA IDENTITY NOTHING;
		CREATE TABLE pa (id int PRIMARY KEY) PARTITION BY RANGE (id);
		CREATE TABLE pa1 PARTITION OF pa FOR VALUES FROM (0) TO (100);
		CREATE TABLE pz (id int PRIMARY KEY) PARTITION BY RANGE (id)`)
	spec := func(name, plugin string) TableSpec {
		return TableSpec{Name: name, Source: SourceLogical, Plugin: plugin, NoSequences: true}
	}

	res, err := AddTable(ctx, c, "lq", spec("pt", PluginPgoutput))
	require.NoError(t, err)
	require.True(t, res.WithChildren)
	var viaRoot bool
	var published []string
	require.NoError(t, c.QueryRow(ctx, `SELECT p.pubviaroot, ARRAY(SELECT pr.prrelid::regclass::text FROM pg_catalog.pg_publication_rel pr
		WHERE pr.prpubid = p.oid ORDER BY 1) FROM pg_catalog.pg_publication p WHERE p.pubname = $1`, res.Kind.Publication).Scan(&viaRoot, &published))
	require.True(t, viaRoot)
	require.Equal(t, []string{"pt"}, published)
	_, err = AddTable(ctx, c, "lq", spec("pt1", ""))
	require.ErrorIs(t, err, ErrCapturedWithParent)
	_, err = AdoptChildren(ctx, c)
	require.NoError(t, err)
	var triggers int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_trigger
		WHERE tgrelid IN ('pt'::regclass, 'pt1'::regclass, 'pt2'::regclass) AND NOT tgisinternal`).Scan(&triggers))
	require.Zero(t, triggers, "a logical queue's partitions get no trigger")
	require.NoError(t, CheckChildren(ctx, c, "lq", change.Table{Schema: "public", Name: "pt"}), "nothing for a copy to wait for")

	_, err = AddTable(ctx, c, "lq", spec("pb", ""))
	require.ErrorIs(t, err, ErrNoReplicaIdentity)
	require.ErrorContains(t, err, `"public"."pb2"`)

	_, err = AddTable(ctx, c, "lq", spec("pa1", ""))
	require.NoError(t, err)
	_, err = AddTable(ctx, c, "lq", spec("pa", ""))
	require.ErrorIs(t, err, ErrCapturedWithParent)

	_, err = AddTable(ctx, c, "ltd", spec("pz", PluginTestDecoding))
	require.ErrorContains(t, err, "partitioned")
	require.ErrorContains(t, err, "add its partitions instead")
}

// TestSettleSlot: settling a new slot (settleSlot) moves its confirmed position past the WAL
// written before; a role that may create replication slots but not temporary tables cannot
// make the settling catalog change: the slot is kept and the reason returned for a warning.
func TestSettleSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := pgtest.Shared(t, "")
	c := logicalQueue(t)
	version := pg.ServerVersion(c)
	var db string
	var dbOID uint32
	require.NoError(t, c.QueryRow(ctx, `SELECT current_database(), oid FROM pg_database WHERE datname = current_database()`).Scan(&db, &dbOID))
	role := srv.CreateRole(t, "settle", "")
	exec(t, c, `ALTER ROLE `+change.QuoteIdent(role)+` REPLICATION`)
	exec(t, c, `REVOKE TEMPORARY ON DATABASE `+change.QuoteIdent(db)+` FROM PUBLIC`)
	rc, err := pg.Connect(ctx, srv.URLAs(role, "", db), "skiff-test")
	require.NoError(t, err)
	defer rc.Close(ctx)

	name := fmt.Sprintf("skiff_settle_test_%d", dbOID)
	exec(t, c, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, name)
	defer func() { require.NoError(t, DropSlot(ctx, c, name)) }()
	k := Kind{Source: SourceLogical, Plugin: PluginTestDecoding}
	unsettled, err := settleSlot(ctx, rc, name, k, version)
	require.NoError(t, err)
	require.ErrorContains(t, unsettled, "no catalog change settled replication slot "+name)
	require.ErrorContains(t, unsettled, "permission denied")

	exec(t, c, `GRANT TEMPORARY ON DATABASE `+change.QuoteIdent(db)+` TO `+change.QuoteIdent(role))
	exec(t, c, `INSERT INTO t VALUES (1)`)
	current := `pg_current_wal_lsn()`
	if version < 100000 {
		current = `pg_current_xlog_location()`
	}
	var before string
	require.NoError(t, c.QueryRow(ctx, `SELECT `+current+`::text`).Scan(&before))
	unsettled, err = settleSlot(ctx, rc, name, k, version)
	require.NoError(t, err)
	require.NoError(t, unsettled)
	if version >= 90600 {
		var passed bool
		require.NoError(t, c.QueryRow(ctx, `SELECT confirmed_flush_lsn > $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
			name, before).Scan(&passed))
		require.True(t, passed, "the slot's confirmed position passed the WAL written before it was settled")
	}
}
