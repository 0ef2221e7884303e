package logical

import (
	"sync/atomic"
	"time"
)

// A walsender sends every change as a CopyData message of its own and flushes it at once. A
// reader that waits on the socket whenever it has read what came is woken once per message:
// the walsender's send wakes a sleeping process each time, and both pay a context switch per
// change. With four slots and four workers on two cores (each walsender decoding all the WAL)
// that, not decoding or applying, bounded the stream: 28k changes/s in all, the skiff workers
// spending 27 µs of CPU per change, most of it in the kernel and the scheduler.
//
// While changes come fast (coalesceAfter messages within one coalesceWait) the stream is busy:
// the socket's low-water mark (SO_RCVLOWAT) is raised to coalesceBytes, so that the kernel
// wakes the reader only when that much is waiting, and each wait on the socket is bounded by
// coalesceWait, after which the reader takes what came. A busy stream is woken at most every
// coalesceWait or every coalesceBytes; the last changes of a burst wait at most coalesceWait
// longer. A wait in which nothing at all came makes the stream idle again: the low-water mark
// goes back to one byte and every message wakes the reader, so that a trickle of changes
// (2,000 small transactions a second included) sees no delay.
const (
	coalesceWait  = 5 * time.Millisecond
	coalesceBytes = 64 << 10
	coalesceAfter = 8
)

// coalescer keeps the busy or idle state of one stream's socket. Only the goroutine that
// holds the connection changes it; busy and busied may be read by any (tests do).
type coalescer struct {
	// lowat sets the socket's low-water mark; nil when the socket has none that waits
	// honour (a Unix-domain socket, a platform without it), and then the stream is never busy.
	lowat func(bytes int) error

	busy     atomic.Bool
	busied   atomic.Int64 // times the stream became busy
	winStart time.Time    // the window in which messages are counted while idle
	winMsgs  int
	empty    int // waits in a row, while busy, that ended with nothing received
}

// bound shortens a wait on the socket to coalesceWait while the stream is busy.
func (c *coalescer) bound(now, deadline time.Time) time.Time {
	if c.busy.Load() {
		if d := now.Add(coalesceWait); d.Before(deadline) {
			return d
		}
	}
	return deadline
}

// got counts a message received at now; enough of them within one coalesceWait make the
// stream busy.
func (c *coalescer) got(now time.Time) {
	c.empty = 0
	if c.busy.Load() || c.lowat == nil {
		return
	}
	if now.Sub(c.winStart) > coalesceWait {
		c.winStart, c.winMsgs = now, 0
	}
	c.winMsgs++
	if c.winMsgs >= coalesceAfter {
		c.set(true)
	}
}

// waited notes a wait on the socket that ended with nothing read (its deadline passed). Two
// in a row while busy (a whole coalesceWait with nothing received) make the stream idle.
func (c *coalescer) waited() {
	if !c.busy.Load() {
		return
	}
	c.empty++
	if c.empty >= 2 {
		c.set(false)
	}
}

// set switches the low-water mark. If the socket refuses to raise it, coalescing is given up
// (the stream stays idle, as before it was tried); if it refuses to lower it, the stream stays
// busy, its waits bounded, and the next empty wait tries again.
func (c *coalescer) set(busy bool) {
	n := 1
	if busy {
		n = coalesceBytes
	}
	if err := c.lowat(n); err != nil {
		if busy {
			c.lowat = nil
		}
		return
	}
	if busy {
		c.busied.Add(1)
	}
	c.busy.Store(busy)
	c.empty, c.winMsgs = 0, 0
}
