package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/target"
)

// SetAside returns the events of batch b that an operator set aside (skiff event skip wrote
// them to skiff.dead_letter): the worker leaves them out. Call it inside Apply's stream (it
// reads in the batch's transaction, after the subscription row is locked). A target schema
// without skiff.dead_letter (before version 6) has none.
func (a *Applier) SetAside(ctx context.Context, b change.Batch) ([]int64, error) {
	if a.tx == nil {
		return nil, errNoBatch
	}
	if err := a.settle(); err != nil {
		return nil, err
	}
	if !a.schema.HasDeadLetter() {
		return nil, nil
	}
	if a.read.setAside && a.read.batch == b.ID {
		a.read.setAside = false
		return a.read.SetAside, nil
	}
	ids, err := target.SetAside(ctx, a.tx, a.subID, b.ID)
	if err != nil {
		return nil, fmt.Errorf("read the events set aside for batch %d: %w", b.ID, err)
	}
	return ids, nil
}

// MarkSetAside records, in the batch's transaction, that batch b left these events out: they
// are set aside when the batch commits, and not before.
func (a *Applier) MarkSetAside(ctx context.Context, b change.Batch, ids []int64) error {
	if a.tx == nil {
		return errNoBatch
	}
	if err := a.settle(); err != nil {
		return err
	}
	if !a.schema.HasDeadLetter() || len(ids) == 0 {
		return nil
	}
	n, err := target.MarkSetAside(ctx, a.tx, a.subID, b.ID, ids)
	if err != nil {
		return fmt.Errorf("record the events set aside in batch %d: %w", b.ID, err)
	}
	if int(n) != len(ids) {
		return errors.New("record the events set aside: some were not requested")
	}
	return nil
}

// DeadLetter is an event an operator sets aside (skiff event skip), as skiff.dead_letter
// records it.
type DeadLetter = target.DeadLetter

// Errors of SetAsideEvent that callers branch on.
var (
	ErrBatchApplied = errors.New("the batch is already applied on the target")
	ErrSetAside     = errors.New("the event is already set aside")
	ErrNoDeadLetter = errors.New("the target's skiff schema has no dead-letter table (run skiff init target)")
)

// SetAsideEvent records an operator's request to leave an event out of its batch: the worker
// leaves it out of batch d.BatchID, applies the rest, and sets set_aside_at in that batch's
// transaction (exactly once). It fails when the subscription already applied the batch, or the
// event was set aside already. It waits for a batch being applied to end (it locks the
// subscription row, as the worker's batch transaction does).
func SetAsideEvent(ctx context.Context, conn *pgx.Conn, queue, consumer string, d DeadLetter) error {
	if d.Reason == "" {
		return errors.New("set aside an event: a reason is required")
	}
	v, err := target.ReadVersion(ctx, conn)
	if err == nil && !v.HasDeadLetter() {
		err = ErrNoDeadLetter
	}
	if err == nil {
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			return setAside(ctx, tx, target.Key{Queue: queue, Consumer: consumer}, d)
		})
	}
	if err != nil {
		return fmt.Errorf("set aside event %d of %s/%s on the target: %w", d.EventID, queue, consumer, err)
	}
	return nil
}

// setAside records d in tx, once the subscription row is locked.
func setAside(ctx context.Context, tx pgx.Tx, k target.Key, d DeadLetter) error {
	subID, last, err := target.LockLastBatch(ctx, tx, k)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("no subscription of queue %q for consumer %q on the target", k.Queue, k.Consumer)
	}
	if err != nil {
		return err
	}
	if last != nil && *last == d.BatchID {
		return fmt.Errorf("batch %d: %w", d.BatchID, ErrBatchApplied)
	}
	exists, err := target.DeadLetterExists(ctx, tx, subID, d.EventID)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("event %d: %w", d.EventID, ErrSetAside)
	}
	return target.AddDeadLetter(ctx, tx, subID, d)
}

// LastError returns the subscription's last error and the event it names (0 when none, or
// before target schema version 6).
func LastError(ctx context.Context, conn *pgx.Conn, queue, consumer string) (event int64, msg string, err error) {
	v, err := target.ReadVersion(ctx, conn)
	if err != nil {
		return 0, "", err
	}
	ev, m, err := target.LastError(ctx, conn, v, target.Key{Queue: queue, Consumer: consumer})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", fmt.Errorf("no subscription of queue %q for consumer %q on the target", queue, consumer)
	}
	if err != nil {
		return 0, "", fmt.Errorf("read the last error of %s/%s: %w", queue, consumer, err)
	}
	if ev != nil {
		event = *ev
	}
	if m != nil {
		msg = *m
	}
	return event, msg, nil
}
