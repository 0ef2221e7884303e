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
	"github.com/skiffdb/skiff/internal/target"
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

// key is the subscription's key in the target schema.
func (s Subscription) key() target.Key { return target.Key{Queue: s.Queue, Consumer: s.Consumer} }

// RecordPoint stores the copy point of a table in state copying (its own statement, so
// that the worker sees it at once). It fails with ErrNotCopying when the table is not copying.
func (s Subscription) RecordPoint(ctx context.Context, conn pg.DB, t change.Table, point string) error {
	n, err := target.RecordSnapshot(ctx, conn, s.key(), t, point)
	if err != nil {
		return fmt.Errorf("record copy point of %s: %w", t, err)
	}
	if n == 0 {
		return fmt.Errorf("record copy point of %s: %w", t, ErrNotCopying)
	}
	return nil
}

// RecordProgress stores how far a table's copy has come (its own statement).
func (s Subscription) RecordProgress(ctx context.Context, conn pg.DB, t change.Table, rows, bytes int64) error {
	if err := target.RecordProgress(ctx, conn, s.key(), t, rows, bytes); err != nil {
		return fmt.Errorf("record copy progress of %s: %w", t, err)
	}
	return nil
}

// RecordCopyError keeps the error of a table's failed copy (its own statement), where `skiff
// status` shows it as a problem until a copy of the table succeeds or it is resynced. The
// table stays in state copying; the worker's table manager tries again later.
func (s Subscription) RecordCopyError(ctx context.Context, conn pg.DB, t change.Table, copyErr error) error {
	if err := target.RecordCopyError(ctx, conn, s.key(), t, copyErr.Error()); err != nil {
		return fmt.Errorf("record copy error of %s: %w", t, err)
	}
	return nil
}

// MarkCopied moves a table from copying (at copy point point) to catching-up and records the
// rows copied. Run it in the copy's target transaction.
func (s Subscription) MarkCopied(ctx context.Context, tx pg.DB, t change.Table, point string, rows, bytes int64) error {
	n, err := target.MarkCopied(ctx, tx, s.key(), t, point, rows, bytes)
	if err != nil {
		return fmt.Errorf("mark %s copied: %w", t, err)
	}
	if n == 0 {
		return fmt.Errorf("mark %s copied: %w", t, ErrNotCopying)
	}
	return nil
}

// Resync puts a subscribed table back to copying (no copy point yet): the worker holds its
// events back until a copy publishes its point, and copies it again. It reports whether the
// subscription has the table.
func (s Subscription) Resync(ctx context.Context, conn pg.DB, t change.Table) (bool, error) {
	n, err := target.Resync(ctx, conn, s.key(), t)
	if err != nil {
		return false, fmt.Errorf("resync %s: %w", t, err)
	}
	return n > 0, nil
}

// Sources lists the provider tables the subscription replicates, whatever their state.
func (s Subscription) Sources(ctx context.Context, conn pg.DB) ([]change.Table, error) {
	out, err := target.Sources(ctx, conn, s.key())
	if err != nil {
		return nil, fmt.Errorf("subscribed tables: %w", err)
	}
	return out, nil
}

// SchemaMap returns the subscription's schema map (provider schema → target schema; empty
// when it has none): a captured sequence goes to the target schema its schema maps to.
func (s Subscription) SchemaMap(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	v, err := target.ReadVersion(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("target schema version: %w", err)
	}
	m, err := target.SchemaMap(ctx, conn, v, s.key())
	if err != nil {
		return nil, fmt.Errorf("schema map: %w", err)
	}
	return m, nil
}

// ToCopy lists the subscription's tables in state copying, with their handlers.
func (s Subscription) ToCopy(ctx context.Context, conn pg.DB) ([]Table, error) {
	routes, err := target.ToCopy(ctx, conn, s.key())
	if err != nil {
		return nil, fmt.Errorf("tables to copy: %w", err)
	}
	out := make([]Table, len(routes))
	for i, r := range routes {
		out[i] = Table{Source: r.Source, Dest: r.Dest, Handler: r.Handler, Config: r.Config}
	}
	return out, nil
}

// copyingSince returns when each table in state copying entered it (state_changed_at).
func (s Subscription) copyingSince(ctx context.Context, conn pg.DB) (map[change.Table]time.Time, error) {
	out, err := target.CopyingSince(ctx, conn, s.key())
	if err != nil {
		return nil, fmt.Errorf("tables to copy: %w", err)
	}
	return out, nil
}

// Position returns the position the target has applied for the subscription (zero when
// none).
func (s Subscription) Position(ctx context.Context, conn pg.DB) (change.Position, error) {
	pos, err := target.PositionOf(ctx, conn, s.key())
	if err != nil {
		return change.Position{}, fmt.Errorf("subscription %s/%s: %w", s.Queue, s.Consumer, err)
	}
	return pos, nil
}

// Promote moves every catching-up table whose copy the applied position has passed, and whose
// copy backlog the worker has applied, to in-sync: passed tells, for a table's copy point,
// whether the position the target has applied is past it (Manager.Passed at that position).
// It returns the tables promoted.
func (s Subscription) Promote(ctx context.Context, conn pg.DB, passed func(point string) (bool, error)) ([]change.Table, error) {
	list, err := target.CatchingUp(ctx, conn, s.key())
	if err != nil {
		return nil, fmt.Errorf("catching-up tables: %w", err)
	}
	var out []change.Table
	for _, c := range list {
		ok, err := passed(c.CopyPoint)
		if err != nil {
			return out, fmt.Errorf("table %s: copy point: %w", c.Source, err)
		}
		if !ok {
			continue
		}
		// Not before the worker has applied the table's copy backlog: in-sync means every
		// event is on the destination.
		n, err := target.Promote(ctx, conn, s.key(), c.Source, c.CopyPoint)
		if err != nil {
			return out, fmt.Errorf("promote %s to in-sync: %w", c.Source, err)
		}
		if n > 0 {
			out = append(out, c.Source)
		}
	}
	return out, nil
}

// Barrier opens a transaction on conn that locks the subscription's row (as the worker's
// batch transaction does first): it waits for the batch in flight to commit and holds the next
// batches back until release is called. It also clears the table's copy point (a stale one
// of a failed copy): once released, the table's events go to its backlog (or, without one,
// batches wait: change.ErrCopyPending) until the new copy publishes its own; and it deletes the table's copy backlog (skiff.copy_backlog) of an
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
	if err := target.LockForCopy(ctx, tx, s.key()); err != nil {
		return fail(err)
	}
	n, err := target.ClearSnapshot(ctx, tx, s.key(), t)
	if err != nil {
		return fail(err)
	}
	if n == 0 {
		return fail(ErrNotCopying)
	}
	// The backlog of an earlier attempt: every event in it belongs to a batch applied before
	// this barrier, so it committed on the provider before the new copy's point is taken;
	// the new copy holds it.
	if err := target.DeleteBacklogOf(ctx, tx, s.key(), t); err != nil {
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
// target: the barrier, the copy point, the progress and a failure on the copy's side
// connection, the end of the copy in the copy's transaction.
func (s Subscription) Hooks() Hooks {
	return Hooks{
		Barrier: func(ctx context.Context, conn *pgx.Conn, t Table) (func() error, error) {
			return s.Barrier(ctx, conn, t.Source)
		},
		Point: func(ctx context.Context, conn *pgx.Conn, t Table, point string) error {
			return s.RecordPoint(ctx, conn, t.Source, point)
		},
		Copied: func(ctx context.Context, tx pgx.Tx, t Table, point string, rows, bytes int64) error {
			return s.MarkCopied(ctx, tx, t.Source, point, rows, bytes)
		},
		Failed: func(ctx context.Context, conn *pgx.Conn, t Table, err error) error {
			return s.RecordCopyError(ctx, conn, t.Source, err)
		},
		Progress: func(ctx context.Context, conn *pgx.Conn, t Table, rows, bytes int64) error {
			return s.RecordProgress(ctx, conn, t.Source, rows, bytes)
		},
		Merge: func(ctx context.Context, conn *pgx.Conn, _ Table) (string, error) {
			return s.MergeMode(ctx, conn)
		},
		Conflicts: func(ctx context.Context, tx pgx.Tx, _ Table, n int64, last string) error {
			id, err := target.SubscriptionID(ctx, tx, s.key())
			if err != nil {
				return err
			}
			return target.CountConflicts(ctx, tx, id, n, last)
		},
	}
}

// MergeMode is the subscription's --on-conflict mode, "" when it is not merged (its
// destinations are its own) or the target schema predates merge (version 8).
func (s Subscription) MergeMode(ctx context.Context, conn *pgx.Conn) (string, error) {
	v, err := target.ReadVersion(ctx, conn)
	if err != nil {
		return "", err
	}
	if !v.HasMerge() {
		return "", nil
	}
	id, err := target.SubscriptionID(ctx, conn, s.key())
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	m, err := target.MergeOf(ctx, conn, v, id)
	return m.Mode, err
}
