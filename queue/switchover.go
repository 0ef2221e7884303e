package queue

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// BlockTrigger is the name of the trigger that blocks writes to a table of queue qid after
// skiff switchover (provider schema 10, skiff.write_blocked).
func BlockTrigger(qid int32) string { return "skiff_block_q" + strconv.Itoa(int(qid)) }

// blockTarget is a table that gets (or has) the write block: a captured table, or a
// partition or inheritance child of one captured with its children.
type blockTarget struct {
	oid   uint32
	table change.Table
	has   bool // the block trigger is there already
}

// blockTargets lists the tables of queue qid a write block covers, with whether each has it.
func blockTargets(ctx context.Context, db pg.DB, qid int32) ([]blockTarget, error) {
	rows, err := db.Query(ctx, `WITH RECURSIVE down(rel) AS (
			SELECT table_oid FROM skiff.captured_table WHERE queue_id = $1 AND with_children
			UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN down ON i.inhparent = down.rel)
		SELECT r.oid, n.nspname, r.relname,
			EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.oid AND t.tgname = $2)
		FROM (SELECT table_oid AS rel FROM skiff.captured_table WHERE queue_id = $1 UNION SELECT rel FROM down) x
		JOIN pg_catalog.pg_class r ON r.oid = x.rel
		JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
		WHERE r.relkind IN ('r', 'p')
		ORDER BY 2, 3`, qid, BlockTrigger(qid))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (blockTarget, error) {
		var b blockTarget
		err := r.Scan(&b.oid, &b.table.Schema, &b.table.Name, &b.has)
		return b, err
	})
}

// BlockWrites refuses every write (INSERT, UPDATE, DELETE, TRUNCATE) to the tables of a
// trigger queue — and to the partitions and children of those captured with theirs — from
// sessions that are not replicating: a BEFORE … FOR EACH STATEMENT trigger calling
// skiff.write_blocked(message) (SQLSTATE 25006) on each table, enabled ORIGIN, so that a
// worker's session (session_replication_role = replica) still writes. Run it in the caller's
// transaction: CREATE TRIGGER takes SHARE ROW EXCLUSIVE on each table, which waits for the
// transactions writing to it and holds new writers back, so once the transaction commits
// every write to the tables has committed or fails. Tables that have the block keep it. It
// returns the tables blocked.
func BlockWrites(ctx context.Context, tx pgx.Tx, queue, message string) ([]change.Table, error) {
	qid, err := queueID(ctx, tx, queue)
	if err != nil {
		return nil, err
	}
	targets, err := blockTargets(ctx, tx, qid)
	if err != nil {
		return nil, fmt.Errorf("tables of queue %s: %w", queue, err)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("queue %s captures no table", queue)
	}
	out := make([]change.Table, 0, len(targets))
	for _, b := range targets {
		out = append(out, b.table)
		if b.has {
			continue
		}
		sql := "CREATE TRIGGER " + change.QuoteIdent(BlockTrigger(qid)) +
			" BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON " + pgx.Identifier{b.table.Schema, b.table.Name}.Sanitize() +
			" FOR EACH STATEMENT EXECUTE PROCEDURE skiff.write_blocked(" + change.QuoteLiteral(message) + ")"
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), sql); err != nil {
			return nil, fmt.Errorf("block writes to %s: %w (SQL: %s)", b.table, err, sql)
		}
	}
	return out, nil
}

// UnblockWrites drops the write block of a queue's tables (BlockWrites) and returns the tables
// it was dropped from: none when there was none. A database without the queue has none.
func UnblockWrites(ctx context.Context, conn Conn, queue string) ([]change.Table, error) {
	var out []change.Table
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		out = out[:0]
		qid, err := queueID(ctx, tx, queue)
		if err != nil {
			return err
		}
		targets, err := blockTargets(ctx, tx, qid)
		if err != nil {
			return fmt.Errorf("tables of queue %s: %w", queue, err)
		}
		for _, b := range targets {
			if !b.has {
				continue
			}
			sql := "DROP TRIGGER " + change.QuoteIdent(BlockTrigger(qid)) + " ON " + pgx.Identifier{b.table.Schema, b.table.Name}.Sanitize()
			if _, err := pg.Exec(ctx, tx.Conn().PgConn(), sql); err != nil {
				return fmt.Errorf("unblock writes to %s: %w (SQL: %s)", b.table, err, sql)
			}
			out = append(out, b.table)
		}
		return nil
	})
	return out, err
}

// BlockedTables lists the tables of a queue that have the write block.
func BlockedTables(ctx context.Context, db pg.DB, queue string) ([]change.Table, error) {
	qid, err := queueID(ctx, db, queue)
	if err != nil {
		return nil, err
	}
	targets, err := blockTargets(ctx, db, qid)
	if err != nil {
		return nil, fmt.Errorf("tables of queue %s: %w", queue, err)
	}
	var out []change.Table
	for _, b := range targets {
		if b.has {
			out = append(out, b.table)
		}
	}
	return out, nil
}
