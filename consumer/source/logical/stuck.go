package logical

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
)

// StuckAfter is how many times in a row the stream of a slot must fail the same way at the
// same position before the source gives up on the slot (SlotStuckError). The worker retries
// a failed batch with a doubling backoff (1 s, 2 s, … by default), so that is about 15 s of
// the same failure.
const StuckAfter = 5

// SlotStuckError is the error of a slot whose stream fails again and again at the same
// position with the same error, which retrying cannot cure: the server cannot decode the WAL
// there (e.g. "could not map filenode … to relation OID", a publication pgoutput cannot find),
// or the source cannot read what the plugin sends. The slot cannot go past that point, and
// nothing behind it is lost from the provider yet: the remedy is a new slot and a new copy.
// It unwraps to the last failure and to change.ErrPositionLost, so the worker stops instead
// of retrying forever.
type SlotStuckError struct {
	// Slot is the replication slot.
	Slot string
	// At is the position the stream starts from: the end of the last batch applied.
	At LSN
	// Tries is how many times in a row it failed so.
	Tries int
	// Err is the last failure: a *pgconn.PgError when the server sent it.
	Err error
}

func (e *SlotStuckError) Error() string {
	return fmt.Sprintf("replication slot %s cannot go past LSN %s: its stream failed %d times in a row there with: %v; "+
		"retrying cannot cure this, the worker stops. The queue's tables on the target are consistent up to LSN %s. "+
		"To go on: skiff unsubscribe for this queue (it drops the slot), then skiff subscribe again (a new slot; "+
		"the tables are copied again)", e.Slot, e.At, e.Tries, e.Err, e.At)
}

// Unwrap gives the last failure and change.ErrPositionLost.
func (e *SlotStuckError) Unwrap() []error { return []error{e.Err, change.ErrPositionLost} }

// failRun counts the stream's consecutive failures that look alike.
type failRun struct {
	at   LSN
	what string
	n    int
}

// transient says whether a server error may pass by itself: connection trouble (08),
// insufficient resources (53), operator intervention such as a shutdown or a cancel (57),
// an object in the wrong state such as a slot another process holds (55), system errors
// such as I/O (58), a rollback such as a recovery conflict (40).
func transient(code string) bool {
	if len(code) < 2 {
		return true
	}
	switch code[:2] {
	case "08", "53", "57", "55", "58", "40":
		return true
	}
	return false
}

// failed notes that the stream failed with err, starting at s.pos; it returns a
// SlotStuckError once the same failure came StuckAfter times in a row there. Only what is
// the slot's to decode counts: an error the server sent (other than a transient one) or a
// message the source could not read (decodeErr). A transient failure in between (the
// walsender that failed still holding the slot for a moment, a lost connection) neither counts
// nor resets the count; a batch cut (progress) does.
func (s *Source) failed(err error, decodeErr bool) error {
	var what string
	var pe *pgconn.PgError
	switch {
	case decodeErr:
		what = "decode: " + err.Error()
	case errors.As(err, &pe) && !transient(pe.Code):
		what = pe.Code + ": " + pe.Message
	default:
		return nil
	}
	at := LSN(s.pos.LSN)
	if s.fails.n > 0 && s.fails.at == at && s.fails.what == what {
		s.fails.n++
	} else {
		s.fails = failRun{at: at, what: what, n: 1}
	}
	if s.fails.n < StuckAfter {
		return nil
	}
	return &SlotStuckError{Slot: s.cfg.Slot, At: at, Tries: s.fails.n, Err: err}
}
