package target

import (
	"context"
	"time"

	"github.com/skiffdb/skiff/internal/pg"
)

// Merge is a subscription's merge settings (version 8): Mode "" when the subscription is
// not merged (its destinations are its own), else how conflicts are settled: "error",
// "apply-remote" or "keep-local".
type Merge struct {
	Mode           string
	Conflicts      int64      // conflicts met (and settled, unless Mode is error) so far
	LastConflict   string     // the last one, "" when none
	LastConflictAt *time.Time // when
}

// MergeOf returns the merge settings of subscription id; the zero Merge before version 8;
// pgx.ErrNoRows when there is no such subscription.
func MergeOf(ctx context.Context, db pg.DB, v Version, id int32) (Merge, error) {
	var m Merge
	if !v.HasMerge() {
		return m, nil
	}
	var last *string
	err := db.QueryRow(ctx, `SELECT coalesce(on_conflict, ''), conflicts, last_conflict, last_conflict_at
		FROM skiff.subscription WHERE sub_id = $1`, id).Scan(&m.Mode, &m.Conflicts, &last, &m.LastConflictAt)
	if last != nil {
		m.LastConflict = *last
	}
	return m, err
}

// Merges returns the merge settings of every subscription by id (none before version 8).
func Merges(ctx context.Context, db pg.DB, v Version) (map[int32]Merge, error) {
	out := map[int32]Merge{}
	if !v.HasMerge() {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT sub_id, coalesce(on_conflict, ''), conflicts, coalesce(last_conflict, ''), last_conflict_at
		FROM skiff.subscription`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int32
		var m Merge
		if err := rows.Scan(&id, &m.Mode, &m.Conflicts, &m.LastConflict, &m.LastConflictAt); err != nil {
			return nil, err
		}
		out[id] = m
	}
	return out, rows.Err()
}

// SetMergeMode records how subscription id settles conflicts ("" for not merged).
func SetMergeMode(ctx context.Context, db pg.DB, id int32, mode string) error {
	var m *string
	if mode != "" {
		m = &mode
	}
	_, err := db.Exec(ctx, `UPDATE skiff.subscription SET on_conflict = $2 WHERE sub_id = $1`, id, m)
	return err
}

// CountConflicts adds n conflicts to subscription id, last being the latest (in the caller's
// transaction: a batch's, or a copy's).
func CountConflicts(ctx context.Context, db pg.DB, id int32, n int64, last string) error {
	_, err := db.Exec(ctx, countConflictsSQL, id, n, last)
	return err
}

const countConflictsSQL = `UPDATE skiff.subscription SET conflicts = conflicts + $2, last_conflict = $3, last_conflict_at = now()
		WHERE sub_id = $1`
