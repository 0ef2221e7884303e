package logical

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// The output plugins the source reads.
const (
	// PGOutput is PostgreSQL's built-in plugin (10+), which decodes the tables of a publication.
	PGOutput = "pgoutput"
	// TestDecoding is the contrib plugin that prints changes as text (9.4+), every table of the
	// database.
	TestDecoding = "test_decoding"
)

// LSN is a WAL position.
type LSN = pglogrepl.LSN

// ParseLSN reads an LSN in PostgreSQL's text form ("16/B374D848").
func ParseLSN(s string) (LSN, error) { return pglogrepl.ParseLSN(s) }

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// CheckSlotName refuses a name PostgreSQL would not take for a replication slot (lower-case
// letters, digits and _, at most 63 bytes). Replication commands take slot names unquoted, so
// the check also keeps them safe to write into a command.
func CheckSlotName(name string) error {
	if !slotName.MatchString(name) {
		return fmt.Errorf("replication slot name %q: only lower-case letters, digits and _ (at most 63)", name)
	}
	return nil
}

// replicationRuntime are the settings of a replication connection's session. The plugins
// write values with the walsender's output functions: they must not depend on the server's
// or the role's defaults (dates, intervals, float digits, time zone as the trigger source's
// capture functions pin them; bytea in hex).
var replicationRuntime = map[string]string{
	"replication":                 "database",
	"standard_conforming_strings": "on",
	"DateStyle":                   "ISO, YMD",
	"IntervalStyle":               "postgres",
	"extra_float_digits":          "3",
	"TimeZone":                    "UTC",
	"bytea_output":                "hex",
	"client_min_messages":         "warning",
}

// ConnectReplication opens a logical replication connection (replication=database) to the
// database of connString, with the session settings the decoded values' text forms need.
func ConnectReplication(ctx context.Context, connString, appName string) (*pgconn.PgConn, error) {
	cfg, err := pg.ParseConfig(connString, appName)
	if err != nil {
		return nil, err
	}
	pc := cfg.Config.Copy()
	pc.AfterConnect = nil // the replication protocol of 9.4–9.6 runs no SQL: settings go in the startup packet
	for k, v := range replicationRuntime {
		pc.RuntimeParams[k] = v
	}
	if appName != "" {
		pc.RuntimeParams["application_name"] = appName
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("replication connection to %s: %w", pg.Describe(cfg), err)
	}
	return conn, nil
}

// Slot is a logical replication slot just created, with the snapshot it exported. The
// snapshot can be imported (BeginCopy) until Close: it sees exactly the transactions that
// committed before ConsistentPoint, and the slot streams exactly those that commit after.
type Slot struct {
	Name            string
	Plugin          string
	ConsistentPoint LSN
	SnapshotName    string
	Temporary       bool

	conn *pgconn.PgConn
}

// CreateSlot creates a logical replication slot over a replication connection and keeps that
// connection open, so that the exported snapshot stays importable until Close. A temporary
// slot (10+) is dropped by the server when Close ends the connection: it serves a copy point
// of its own (a table added to a running queue) and nothing is ever streamed from it.
func CreateSlot(ctx context.Context, connString, appName, name, plugin string, temporary bool) (*Slot, error) {
	if err := CheckSlotName(name); err != nil {
		return nil, err
	}
	if plugin != PGOutput && plugin != TestDecoding {
		return nil, fmt.Errorf("create replication slot %s: unknown plugin %q (%s or %s)", name, plugin, PGOutput, TestDecoding)
	}
	conn, err := ConnectReplication(ctx, connString, appName)
	if err != nil {
		return nil, err
	}
	version := pg.ServerVersionOf(conn)
	opts := pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, Temporary: temporary}
	switch {
	case version < 90400:
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("create replication slot %s: logical decoding needs PostgreSQL 9.4 or later (server is %d)", name, version)
	case version >= 100000:
		opts.SnapshotAction = "EXPORT_SNAPSHOT" // 9.4–9.6 export without being asked, and know no keyword
	case temporary:
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("create replication slot %s: temporary slots need PostgreSQL 10 or later (server is %d)", name, version)
	}
	if plugin == PGOutput && version < 100000 {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("create replication slot %s: pgoutput needs PostgreSQL 10 or later (server is %d); use %s", name, version, TestDecoding)
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, name, plugin, opts)
	if err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("create replication slot %s: %w", name, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("create replication slot %s: consistent point: %w", name, err)
	}
	return &Slot{Name: name, Plugin: plugin, ConsistentPoint: lsn, SnapshotName: res.SnapshotName, Temporary: temporary, conn: conn}, nil
}

// Close ends the slot's replication connection: the exported snapshot can no longer be
// imported (transactions that imported it keep it), and a temporary slot is dropped.
func (s *Slot) Close(ctx context.Context) error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close(ctx)
	s.conn = nil
	return err
}

// BeginCopy begins a REPEATABLE READ, READ ONLY transaction on conn (a normal connection to
// the slot's database) that sees the slot's exported snapshot, and returns it with the copy
// point of that snapshot (see ParseCopyPoint): what a copy made in the transaction holds.
func (s *Slot) BeginCopy(ctx context.Context, conn *pgx.Conn) (pgx.Tx, string, error) {
	if s.conn == nil {
		return nil, "", fmt.Errorf("slot %s: its snapshot is no longer exported", s.Name)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, "", fmt.Errorf("slot %s: begin copy: %w", s.Name, err)
	}
	// SET TRANSACTION SNAPSHOT takes no parameter; the name comes from the server.
	if _, err := pg.Exec(ctx, tx.Conn().PgConn(), "SET TRANSACTION SNAPSHOT "+change.QuoteLiteral(s.SnapshotName)); err != nil {
		_ = tx.Rollback(ctx)
		return nil, "", fmt.Errorf("slot %s: import snapshot %s: %w", s.Name, s.SnapshotName, err)
	}
	point, err := TakeCopyPoint(ctx, tx, s.ConsistentPoint)
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, "", fmt.Errorf("slot %s: %w", s.Name, err)
	}
	return tx, point, nil
}

// DropSlot drops a replication slot; a slot in use by a running stream is refused by the
// server. A slot that does not exist is not an error.
func DropSlot(ctx context.Context, db pg.DB, name string) error {
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, name).Scan(&n); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", name, err)
	}
	if n == 0 {
		return nil
	}
	if _, err := db.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, name); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", name, err)
	}
	return nil
}

// SlotState is what the provider says of a replication slot.
type SlotState struct {
	Name     string
	Plugin   string
	Database string
	Active   bool
	// ConfirmedFlush is the position the consumer confirmed (9.6+; 0 before, and for a slot
	// nothing has been confirmed on).
	ConfirmedFlush LSN
	// RestartLSN is the oldest WAL the slot keeps; RetainedBytes the WAL from it to the
	// server's current position: what the slot keeps from being recycled.
	RestartLSN    LSN
	RetainedBytes int64
	// CurrentLSN is the server's current WAL position when the state was read: the lag in
	// bytes is CurrentLSN - ConfirmedFlush.
	CurrentLSN LSN
}

// ReadSlot returns the state of slot name; false when there is no such slot.
func ReadSlot(ctx context.Context, db pg.DB, name string) (SlotState, bool, error) {
	version, err := pg.VersionOf(ctx, db)
	if err != nil {
		return SlotState{}, false, err
	}
	if version < 90400 {
		return SlotState{}, false, fmt.Errorf("replication slot %s: the server has no logical decoding (before 9.4)", name)
	}
	current, diff, confirmed := "pg_catalog.pg_current_wal_lsn()", "pg_catalog.pg_wal_lsn_diff", "s.confirmed_flush_lsn::text"
	if version < 100000 {
		current, diff = "pg_catalog.pg_current_xlog_location()", "pg_catalog.pg_xlog_location_diff"
	}
	if version < 90600 {
		confirmed = "NULL::text"
	}
	st := SlotState{Name: name}
	var plugin, database, confirmedText, restartText, currentText *string
	var retained *int64
	err = db.QueryRow(ctx, `SELECT s.plugin::text, s.database::text, s.active, `+confirmed+`, s.restart_lsn::text,
			`+diff+`(`+current+`, s.restart_lsn)::bigint, `+current+`::text
		FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1`, name).
		Scan(&plugin, &database, &st.Active, &confirmedText, &restartText, &retained, &currentText)
	if errors.Is(err, pgx.ErrNoRows) {
		return SlotState{}, false, nil
	}
	if err != nil {
		return SlotState{}, false, fmt.Errorf("replication slot %s: %w", name, err)
	}
	if plugin != nil {
		st.Plugin = *plugin
	}
	if database != nil {
		st.Database = *database
	}
	if retained != nil {
		st.RetainedBytes = *retained
	}
	for _, f := range []struct {
		text *string
		lsn  *LSN
	}{{confirmedText, &st.ConfirmedFlush}, {restartText, &st.RestartLSN}, {currentText, &st.CurrentLSN}} {
		if f.text == nil {
			continue
		}
		if *f.lsn, err = pglogrepl.ParseLSN(*f.text); err != nil {
			return SlotState{}, false, fmt.Errorf("replication slot %s: %w", name, err)
		}
	}
	return st, true, nil
}
