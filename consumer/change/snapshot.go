package change

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Snapshot is a parsed txid_snapshot, "xmin:xmax:xip,…": every transaction below Xmin is
// finished, none from Xmax on had started, and those in Xip were running when it was taken.
type Snapshot struct {
	Xmin, Xmax int64
	Xip        []int64 // sorted
}

// ParseSnapshot parses the text form of a txid_snapshot (txid_current_snapshot()::text).
func ParseSnapshot(s string) (Snapshot, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) != 3 {
		return Snapshot{}, fmt.Errorf("parse txid snapshot %q: want xmin:xmax:xip", s)
	}
	var snap Snapshot
	var err error
	if snap.Xmin, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return Snapshot{}, fmt.Errorf("parse txid snapshot %q: xmin: %w", s, err)
	}
	if snap.Xmax, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return Snapshot{}, fmt.Errorf("parse txid snapshot %q: xmax: %w", s, err)
	}
	if snap.Xmax < snap.Xmin {
		return Snapshot{}, fmt.Errorf("parse txid snapshot %q: xmax below xmin", s)
	}
	if parts[2] != "" {
		for _, f := range strings.Split(parts[2], ",") {
			x, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return Snapshot{}, fmt.Errorf("parse txid snapshot %q: xip: %w", s, err)
			}
			if x < snap.Xmin || x >= snap.Xmax {
				return Snapshot{}, fmt.Errorf("parse txid snapshot %q: xip %d outside [xmin, xmax)", s, x)
			}
			snap.Xip = append(snap.Xip, x)
		}
		slices.Sort(snap.Xip)
	}
	return snap, nil
}

// Visible reports whether a transaction's effects are seen by the snapshot, as
// txid_visible_in_snapshot does: txid < xmin, or txid < xmax and not in xip.
func (s Snapshot) Visible(txid int64) bool {
	if txid < s.Xmin {
		return true
	}
	if txid >= s.Xmax {
		return false
	}
	_, running := slices.BinarySearch(s.Xip, txid)
	return !running
}

// String returns the snapshot in txid_snapshot text form.
func (s Snapshot) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(s.Xmin, 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(s.Xmax, 10))
	b.WriteByte(':')
	for i, x := range s.Xip {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	return b.String()
}

// CaughtUp reports whether a table copied under s needs no more filtering once the worker has
// applied a batch ending at a tick with snapshot end: every transaction the copy could contain
// (txid < s.Xmax) is finished in end, so no later batch holds one of them.
func (s Snapshot) CaughtUp(end Snapshot) bool {
	return end.Xmin >= s.Xmax
}
