package logical

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// CopyPointNow is the copier's copy point for a logical queue's table (copier.Config.CopyPoint):
// called first in the copy's REPEATABLE READ transaction, it takes the transaction's snapshot
// and, in the same statement, the WAL insert position. Every transaction the snapshot sees
// committed before it was taken, so its commit record lies before that position: a stream
// applied past the position has passed the copy (CopyPoint.Passed), and until then the
// snapshot tells the copy's transactions apart (CopyPoint.Holds). The slot must exist before
// the copy (skiff subscribe creates it first): the transactions the snapshot does not see
// commit after the slot's consistent point and are streamed.
func CopyPointNow(ctx context.Context, prov pg.DB) (string, error) {
	version, err := pg.VersionOf(ctx, prov)
	if err != nil {
		return "", err
	}
	var q string
	if version >= 100000 {
		q = `SELECT pg_catalog.pg_current_wal_insert_lsn()::text, pg_catalog.txid_current_snapshot()::text`
	} else {
		q = `SELECT pg_catalog.pg_current_xlog_insert_location()::text, pg_catalog.txid_current_snapshot()::text`
	}
	var lsnText, snap string
	if err := prov.QueryRow(ctx, q).Scan(&lsnText, &snap); err != nil {
		return "", fmt.Errorf("copy point: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return "", fmt.Errorf("copy point: %w", err)
	}
	point := CopyPoint{LSN: LSN(lsn)}
	if point.Snapshot, err = change.ParseSnapshot(snap); err != nil {
		return "", fmt.Errorf("copy point: %w", err)
	}
	return point.String(), nil
}

// PassedPoint is Source.Passed for the copier's table manager (copier.Manager.Passed): it
// needs no connection.
func PassedPoint(_ context.Context, point string, applied change.Position) (bool, error) {
	p, err := ParseCopyPoint(point)
	if err != nil {
		return false, err
	}
	return p.Passed(applied), nil
}
