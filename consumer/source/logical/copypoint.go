package logical

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// CopyPoint is where a copy made under a slot's exported snapshot stands, as the logical
// source understands it; its text form (String, ParseCopyPoint) is the opaque copy point the
// consumer keeps: "<LSN> <txid snapshot>", e.g. "0/16B3748 740:745:741".
//
// LSN is the consistent point of the slot that exported the snapshot: the snapshot sees
// exactly the transactions that committed before it, a stream from it holds exactly those
// that commit after. Snapshot is txid_current_snapshot() taken in the copy's transaction
// (64-bit txids). For the slot the queue streams from, nothing of its stream is in the copy;
// for a table added later, copied under a temporary slot of its own, the queue's stream may
// stand before LSN, and then the copy holds the events of the transactions the snapshot sees
// (Holds); once the applied position reaches LSN, no later event is held (Passed).
type CopyPoint struct {
	LSN      LSN
	Snapshot change.Snapshot
}

// String returns the copy point's text form.
func (p CopyPoint) String() string { return p.LSN.String() + " " + p.Snapshot.String() }

// ParseCopyPoint reads the text form of a copy point.
func ParseCopyPoint(s string) (CopyPoint, error) {
	lsnText, snapText, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return CopyPoint{}, fmt.Errorf("logical copy point %q: want \"<LSN> <txid snapshot>\"", s)
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return CopyPoint{}, fmt.Errorf("logical copy point %q: %w", s, err)
	}
	snap, err := change.ParseSnapshot(snapText)
	if err != nil {
		return CopyPoint{}, fmt.Errorf("logical copy point %q: %w", s, err)
	}
	return CopyPoint{LSN: lsn, Snapshot: snap}, nil
}

// Holds reports whether a copy made at p holds the effects of event ev: its transaction (a
// 64-bit txid, as the Source gives it) is visible in the copy's snapshot.
func (p CopyPoint) Holds(ev *change.Event) bool { return p.Snapshot.Visible(ev.TxID) }

// Passed reports whether a stream applied up to applied is past the copy point: every event
// after it comes from a transaction that committed after the copy's snapshot.
func (p CopyPoint) Passed(applied change.Position) bool { return LSN(applied.LSN) >= p.LSN }

// TakeCopyPoint returns the copy point of the transaction db is in (which imported a snapshot
// that a slot with consistent point lsn exported).
func TakeCopyPoint(ctx context.Context, db pg.DB, lsn LSN) (string, error) {
	var snap string
	if err := db.QueryRow(ctx, `SELECT pg_catalog.txid_current_snapshot()::text`).Scan(&snap); err != nil {
		return "", fmt.Errorf("copy point: txid snapshot: %w", err)
	}
	s, err := change.ParseSnapshot(snap)
	if err != nil {
		return "", fmt.Errorf("copy point: %w", err)
	}
	return CopyPoint{LSN: lsn, Snapshot: s}.String(), nil
}

// CopyHolds returns the predicate "the copy made at point holds this event" for events of
// this source (see CopyPoint).
func (s *Source) CopyHolds(point string) (func(*change.Event) bool, error) {
	p, err := ParseCopyPoint(point)
	if err != nil {
		return nil, err
	}
	return p.Holds, nil
}

// Passed reports whether the stream, applied up to applied, is past the copy point: the
// copy's table needs no more filtering. An unreadable point is never passed (CopyHolds
// reports it).
func (s *Source) Passed(point string, applied change.Position) bool {
	p, err := ParseCopyPoint(point)
	if err != nil {
		return false
	}
	return p.Passed(applied)
}
