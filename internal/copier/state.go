package copier

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// LockClass is the first key of the session advisory lock a copy holds on the target while it
// copies a table: pg_try_advisory_lock(LockClass, TableLockKey(...)). 'skic' in ASCII. It keeps
// two processes (skiff subscribe and a worker) from copying the same table at once.
const LockClass = 0x736b6963

// ErrBusy is a table's result when another process is copying it.
var ErrBusy = errors.New("another process is copying this table")

// ErrNotCopying is returned when a table's state changed under a copy (e.g. a resync or an
// unsubscribe): the copy is rolled back.
var ErrNotCopying = errors.New("table is no longer in state copying")

// Subscription names a subscription on the target: skiff.subscription (queue, consumer).
type Subscription struct {
	Queue, Consumer string
}

// TableLockKey is the second key of a table copy's advisory lock.
func (s Subscription) TableLockKey(t change.Table) int32 {
	h := fnv.New32a()
	for _, p := range []string{s.Queue, s.Consumer, t.Schema, t.Name} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int32(h.Sum32())
}

const subWhere = `ts.sub_id = (SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2)`

// RecordSnapshot stores the copy snapshot of a table in state copying (its own statement, so
// that the worker sees it at once). It fails with ErrNotCopying when the table is not copying.
func (s Subscription) RecordSnapshot(ctx context.Context, conn pg.DB, t change.Table, snap Snapshot) error {
	tag, err := conn.Exec(ctx, `UPDATE skiff.table_state ts SET copy_snapshot = $5, copy_rows = 0, copy_bytes = 0, copy_progress_at = now()
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		s.Queue, s.Consumer, t.Schema, t.Name, snap.String())
	if err != nil {
		return fmt.Errorf("record copy snapshot of %s: %w", t, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("record copy snapshot of %s: %w", t, ErrNotCopying)
	}
	return nil
}

// RecordProgress stores how far a table's copy has come (its own statement).
func (s Subscription) RecordProgress(ctx context.Context, conn pg.DB, t change.Table, rows, bytes int64) error {
	_, err := conn.Exec(ctx, `UPDATE skiff.table_state ts SET copy_rows = $5, copy_bytes = $6, copy_progress_at = now()
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		s.Queue, s.Consumer, t.Schema, t.Name, rows, bytes)
	if err != nil {
		return fmt.Errorf("record copy progress of %s: %w", t, err)
	}
	return nil
}

// RecordCopyError keeps the error of a table's failed copy (its own statement), where `skiff
// status` shows it as a problem until a copy of the table succeeds or it is resynced. The
// table stays in state copying; the worker's table manager tries again later.
func (s Subscription) RecordCopyError(ctx context.Context, conn pg.DB, t change.Table, copyErr error) error {
	_, err := conn.Exec(ctx, `UPDATE skiff.table_state ts SET copy_error = $5, copy_error_at = now()
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		s.Queue, s.Consumer, t.Schema, t.Name, copyErr.Error())
	if err != nil {
		return fmt.Errorf("record copy error of %s: %w", t, err)
	}
	return nil
}

// MarkCopied moves a table from copying (under snap) to catching-up and records the rows
// copied. Run it in the copy's target transaction.
func (s Subscription) MarkCopied(ctx context.Context, tx pg.DB, t change.Table, snap Snapshot, rows, bytes int64) error {
	tag, err := tx.Exec(ctx, `UPDATE skiff.table_state ts SET state = 'catching-up', state_changed_at = now(),
			copy_rows = $6, copy_bytes = $7, copy_progress_at = now(), copy_error = NULL, copy_error_at = NULL
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying' AND ts.copy_snapshot = $5`,
		s.Queue, s.Consumer, t.Schema, t.Name, snap.String(), rows, bytes)
	if err != nil {
		return fmt.Errorf("mark %s copied: %w", t, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("mark %s copied: %w", t, ErrNotCopying)
	}
	return nil
}

// Resync puts a subscribed table back to copying (no snapshot yet): the worker stops applying
// its events until a copy publishes its snapshot, and copies it again. It reports whether the
// subscription has the table.
func (s Subscription) Resync(ctx context.Context, conn pg.DB, t change.Table) (bool, error) {
	tag, err := conn.Exec(ctx, `UPDATE skiff.table_state ts SET state = 'copying', copy_snapshot = NULL, state_changed_at = now(),
			copy_error = NULL, copy_error_at = NULL
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4`,
		s.Queue, s.Consumer, t.Schema, t.Name)
	if err != nil {
		return false, fmt.Errorf("resync %s: %w", t, err)
	}
	return tag.RowsAffected() > 0, nil
}

// Sources lists the provider tables the subscription replicates, whatever their state.
func (s Subscription) Sources(ctx context.Context, conn pg.DB) ([]change.Table, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT source_schema, source_name FROM skiff.table_state ts
		WHERE `+subWhere+` ORDER BY 1, 2`, s.Queue, s.Consumer)
	if err != nil {
		return nil, fmt.Errorf("subscribed tables: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (change.Table, error) {
		var t change.Table
		err := r.Scan(&t.Schema, &t.Name)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("subscribed tables: %w", err)
	}
	return out, nil
}

// ToCopy lists the subscription's tables in state copying, with their handlers.
func (s Subscription) ToCopy(ctx context.Context, conn pg.DB) ([]Table, error) {
	rows, err := conn.Query(ctx, `SELECT source_schema, source_name, dest_schema, dest_name,
			coalesce(handler, ''), coalesce(handler_config, '') FROM skiff.table_state ts
		WHERE `+subWhere+` AND ts.state = 'copying' ORDER BY 1, 2`, s.Queue, s.Consumer)
	if err != nil {
		return nil, fmt.Errorf("tables to copy: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Table, error) {
		var t Table
		err := r.Scan(&t.Source.Schema, &t.Source.Name, &t.Dest.Schema, &t.Dest.Name, &t.Handler, &t.Config)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("tables to copy: %w", err)
	}
	return out, nil
}

// copyingSince returns when each table in state copying entered it (state_changed_at).
func (s Subscription) copyingSince(ctx context.Context, conn pg.DB) (map[change.Table]time.Time, error) {
	rows, err := conn.Query(ctx, `SELECT source_schema, source_name, state_changed_at FROM skiff.table_state ts
		WHERE `+subWhere+` AND ts.state = 'copying'`, s.Queue, s.Consumer)
	if err != nil {
		return nil, fmt.Errorf("tables to copy: %w", err)
	}
	defer rows.Close()
	out := map[change.Table]time.Time{}
	for rows.Next() {
		var t change.Table
		var at time.Time
		if err := rows.Scan(&t.Schema, &t.Name, &at); err != nil {
			return nil, fmt.Errorf("tables to copy: %w", err)
		}
		out[t] = at
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tables to copy: %w", err)
	}
	return out, nil
}

// Position returns the tick the target has applied for the subscription (0 when none).
func (s Subscription) Position(ctx context.Context, conn pg.DB) (int64, error) {
	var tick *int64
	err := conn.QueryRow(ctx, `SELECT tick FROM skiff.subscription WHERE queue = $1 AND consumer = $2`, s.Queue, s.Consumer).Scan(&tick)
	if err != nil {
		return 0, fmt.Errorf("subscription %s/%s: %w", s.Queue, s.Consumer, err)
	}
	if tick == nil {
		return 0, nil
	}
	return *tick, nil
}

// Promote moves every catching-up table whose copy the applied position has passed, and whose
// copy backlog the worker has applied, to in-sync: applied is the snapshot of the tick the
// target has applied up to. It returns the tables promoted.
func (s Subscription) Promote(ctx context.Context, conn pg.DB, applied Snapshot) ([]change.Table, error) {
	rows, err := conn.Query(ctx, `SELECT source_schema, source_name, coalesce(copy_snapshot, '') FROM skiff.table_state ts
		WHERE `+subWhere+` AND ts.state = 'catching-up'`, s.Queue, s.Consumer)
	if err != nil {
		return nil, fmt.Errorf("catching-up tables: %w", err)
	}
	type cu struct {
		t    change.Table
		snap string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (cu, error) {
		var c cu
		err := r.Scan(&c.t.Schema, &c.t.Name, &c.snap)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("catching-up tables: %w", err)
	}
	var out []change.Table
	for _, c := range list {
		snap, err := change.ParseSnapshot(c.snap)
		if err != nil {
			return out, fmt.Errorf("table %s: %w", c.t, err)
		}
		if !snap.CaughtUp(applied) {
			continue
		}
		// Not before the worker has applied the table's copy backlog: in-sync means every
		// event is on the destination.
		tag, err := conn.Exec(ctx, `UPDATE skiff.table_state ts SET state = 'in-sync', state_changed_at = now()
			WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'catching-up' AND ts.copy_snapshot = $5
			  AND NOT EXISTS (SELECT 1 FROM skiff.copy_backlog b
				WHERE b.sub_id = ts.sub_id AND b.source_schema = ts.source_schema AND b.source_name = ts.source_name)`,
			s.Queue, s.Consumer, c.t.Schema, c.t.Name, c.snap)
		if err != nil {
			return out, fmt.Errorf("promote %s to in-sync: %w", c.t, err)
		}
		if tag.RowsAffected() > 0 {
			out = append(out, c.t)
		}
	}
	return out, nil
}

// Barrier opens a transaction on conn that locks the subscription's row (as the worker's
// batch transaction does first): it waits for the batch in flight to commit and holds the next
// batches back until release is called. It also clears the table's copy snapshot (a stale one
// of a failed copy): once released, batches wait (change.ErrCopyPending) until the new copy
// publishes its own; and it deletes the table's copy backlog (skiff.copy_backlog) of an
// earlier attempt. It fails with ErrNotCopying when the table is not copying.
func (s Subscription) Barrier(ctx context.Context, conn *pgx.Conn, t change.Table) (release func() error, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy barrier: %w", err)
	}
	fail := func(err error) (func() error, error) {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("copy barrier of %s: %w", t, err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`, s.Queue, s.Consumer); err != nil {
		return fail(err)
	}
	tag, err := tx.Exec(ctx, `UPDATE skiff.table_state ts SET copy_snapshot = NULL
		WHERE `+subWhere+` AND ts.source_schema = $3 AND ts.source_name = $4 AND ts.state = 'copying'`,
		s.Queue, s.Consumer, t.Schema, t.Name)
	if err != nil {
		return fail(err)
	}
	if tag.RowsAffected() == 0 {
		return fail(ErrNotCopying)
	}
	// The backlog of an earlier attempt: every event in it belongs to a batch applied before
	// this barrier, so it committed on the provider before the new copy's snapshot is taken;
	// the new copy holds it.
	if _, err := tx.Exec(ctx, `DELETE FROM skiff.copy_backlog b
		WHERE b.sub_id = (SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2)
		  AND b.source_schema = $3 AND b.source_name = $4`, s.Queue, s.Consumer, t.Schema, t.Name); err != nil {
		return fail(err)
	}
	return func() error {
		if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("copy barrier of %s: commit: %w", t, err)
		}
		return nil
	}, nil
}

// Hooks returns the copier hooks that record a copy of this subscription's tables on the
// target: the barrier and the snapshot in short connections of their own (connect), the end
// of the copy in the copy's transaction.
func (s Subscription) Hooks(connect func(ctx context.Context) (*pgx.Conn, error)) Hooks {
	return Hooks{
		Barrier: func(ctx context.Context, t Table) (func() error, error) {
			conn, err := connect(ctx)
			if err != nil {
				return nil, err
			}
			release, err := s.Barrier(ctx, conn, t.Source)
			if err != nil {
				conn.Close(context.WithoutCancel(ctx))
				return nil, err
			}
			return func() error {
				defer conn.Close(context.WithoutCancel(ctx))
				return release()
			}, nil
		},
		Snapshot: func(ctx context.Context, t Table, snap Snapshot) error {
			conn, err := connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			return s.RecordSnapshot(ctx, conn, t.Source, snap)
		},
		Copied: func(ctx context.Context, tx pgx.Tx, t Table, snap Snapshot, rows, bytes int64) error {
			return s.MarkCopied(ctx, tx, t.Source, snap, rows, bytes)
		},
		Failed: func(ctx context.Context, t Table, err error) error {
			conn, cerr := connect(ctx)
			if cerr != nil {
				return cerr
			}
			defer conn.Close(context.WithoutCancel(ctx))
			return s.RecordCopyError(ctx, conn, t.Source, err)
		},
		Progress: func(ctx context.Context, t Table, rows, bytes int64) error {
			conn, err := connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			return s.RecordProgress(ctx, conn, t.Source, rows, bytes)
		},
	}
}
