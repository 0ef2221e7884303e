package apply

import (
	"context"
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// The ways a merged subscription (skiff subscribe --merge) settles a conflict.
const (
	// MergeError stops the worker, naming the table and the key (the default).
	MergeError = "error"
	// MergeApplyRemote writes the provider's change: an insert whose key the target holds
	// overwrites the row, an update whose key it lacks inserts the new row.
	MergeApplyRemote = "apply-remote"
	// MergeKeepLocal keeps the target's row as it is: the provider's change is dropped.
	MergeKeepLocal = "keep-local"
)

// MergeModes lists the valid --on-conflict values, the default first.
var MergeModes = []string{MergeError, MergeApplyRemote, MergeKeepLocal}

// ConflictError is a merge conflict on a shared table under --on-conflict error: the
// provider's change expects the target's row in another state than it is (an insert whose
// key the target holds; an update or delete whose key it lacks). The worker stops
// (change.ErrPositionLost): an operator settles it.
type ConflictError struct {
	Table   change.Table
	EventID int64
	Op      change.Op
	Key     string // (k=v, …)
	Exists  bool   // the target holds the key (an insert's conflict)
}

func (e *ConflictError) Error() string {
	found := "finds no row with that key (another provider deleted it, or never had it)"
	if e.Exists {
		found = "finds a row with that key already there (another provider wrote it)"
	}
	return fmt.Sprintf("merge conflict on table %s, key %s: the provider's %s (event %d) %s; the worker stops (--on-conflict error). "+
		"Settle the row on the target, or skip the event (skiff event skip --event %d), or subscribe again with --merge --on-conflict apply-remote|keep-local; then start the worker again",
		e.Table, e.Key, strings.ToUpper(e.Op.String()), e.EventID, found, e.EventID)
}

// Unwrap makes the error a change.ErrPositionLost: the worker stops instead of retrying.
func (e *ConflictError) Unwrap() error { return change.ErrPositionLost }

// FailedEvent names the event, for skiff event show.
func (e *ConflictError) FailedEvent() int64 { return e.EventID }

// MergedTruncateError is a TRUNCATE that reaches a merged (shared) table: it would erase the
// rows of every provider, so it is never replayed; the worker stops.
type MergedTruncateError struct {
	Table   change.Table
	EventID int64
}

func (e *MergedTruncateError) Error() string {
	return fmt.Sprintf("TRUNCATE (event %d) reaches merged table %s, which other providers write too: skiff does not replay it (it would erase their rows); the worker stops. "+
		"Delete this provider's rows on the target yourself if you mean to, then skip the event (skiff event skip --event %d) and start the worker again",
		e.EventID, e.Table, e.EventID)
}

// Unwrap makes the error a change.ErrPositionLost: the worker stops instead of retrying.
func (e *MergedTruncateError) Unwrap() error { return change.ErrPositionLost }

// FailedEvent names the event, for skiff event show.
func (e *MergedTruncateError) FailedEvent() int64 { return e.EventID }

// errMergeMismatch: a set-based statement of a merged table found fewer rows than its
// updates and deletes expect, which may be merge conflicts; the batch is replayed row by row,
// where each is found and settled.
var errMergeMismatch = fmt.Errorf("rows missing on a merged table: replaying row by row to settle merge conflicts")

// LastConflicts is the number of merge conflicts the last applied batch settled.
func (a *Applier) LastConflicts() int64 { return a.lastConflicts }

// Merge is the subscription's --on-conflict mode, "" when it is not merged.
func (a *Applier) Merge() string { return a.merge }

// conflict settles a merge conflict of ev (row by row): nil when settled (apply says whether
// the provider's change is to be written), a *ConflictError under MergeError.
func (w *writer) conflict(ev *change.Event, exists bool) (apply bool, err error) {
	key := keyText(ev)
	if ev.OldKey != nil && !exists {
		key = oldKeyText(ev)
	}
	if w.a.merge == MergeError {
		return false, &ConflictError{Table: ev.Table, EventID: ev.ID, Op: ev.Op, Key: key, Exists: exists}
	}
	w.conflicts++
	w.lastConflict = fmt.Sprintf("%s of %s %s (event %d): %s", strings.ToUpper(ev.Op.String()), ev.Table, key, ev.ID, w.a.merge)
	w.a.log.Warn("merge conflict settled", "table", ev.Table.String(), "key", key, "op", ev.Op.String(), "event_id", ev.ID,
		"row_exists", exists, "on_conflict", w.a.merge)
	return w.a.merge == MergeApplyRemote, nil
}

// oldKeyText names an event's old key (a key-changing update's), for messages.
func oldKeyText(ev *change.Event) string {
	parts := make([]string, len(ev.Key))
	for i, k := range ev.Key {
		v := "NULL"
		if i < len(ev.OldKey) && ev.OldKey[i].Valid {
			v = ev.OldKey[i].Text
		}
		parts[i] = k + "=" + v
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// applyMergedRow writes one event of a merged table row by row, finding and settling its
// conflict: an insert whose key the target holds, an update or delete whose key it lacks.
// Upserts and removes (a handler's "whether or not the target holds it") never conflict.
func (w *writer) applyMergedRow(ctx context.Context, s *shape, ev *change.Event, sql string, args []any, keyArgs func() []any) error {
	fail := func(sql string, err error) error {
		return &Error{Table: ev.Table, EventID: ev.ID, Op: ev.Op, SQL: sql, Err: err}
	}
	switch ev.Op {
	case change.Insert:
		var one int
		rows, err := w.tx.Query(ctx, s.hasRowSQL, keyArgs()...)
		if err != nil {
			return fail(s.hasRowSQL, err)
		}
		found := rows.Next()
		if found {
			err = rows.Scan(&one)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return fail(s.hasRowSQL, err)
		}
		if found {
			apply, err := w.conflict(ev, true)
			if err != nil || !apply {
				return err
			}
			// apply-remote: the provider's row replaces the target's.
			sql = s.updRowSQL
			args = append(args, keyArgs()...)
		}
		if _, err := w.tx.Exec(ctx, sql, args...); err != nil {
			return fail(sql, err)
		}
		return nil
	case change.Update, change.Delete:
		tag, err := w.tx.Exec(ctx, sql, args...)
		if err != nil {
			return fail(sql, err)
		}
		if tag.RowsAffected() > 0 {
			return nil
		}
		apply, err := w.conflict(ev, false)
		if err != nil || !apply || ev.Op == change.Delete {
			return err
		}
		// apply-remote of an update whose row is missing: the provider's new row is inserted.
		sql = s.insRowSQL
		if _, err := w.tx.Exec(ctx, sql, args[:len(s.write)]...); err != nil {
			return fail(sql, err)
		}
		return nil
	}
	return nil
}
