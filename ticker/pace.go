package ticker

import "time"

// offsetWindow is how many ticks' clock offsets pace keeps: its minimum forgets a server
// clock stepped forward after that many ticks.
const offsetWindow = 64

// paceMargin is added to a computed due time: the database's timestamps are microseconds,
// and a new minimum of the offset may come a little under the old one.
const paceMargin = time.Millisecond

// pace places the polls of one database session. Polls come every Poll, measured from the
// start of the previous one (not from its end: a poll's round trip would add to every
// period). A queue that ticked is due again once its tick is ticker_max_lag old by the
// database's clock, and skiff.ticker compares the now() of the poll's transaction with the
// tick's: a poll that starts Poll after the ticking one by the local clock may reach the
// server a hair early and find the queue not yet due, and the next chance is a whole Poll
// later. So pace places the poll that follows a tick by the database's clock: each tick's
// time minus the local start of its poll is an offset (the clocks' difference plus the time
// the poll took to reach the server); the smallest offset of the recent ticks is the fastest
// the server was reached, and a poll sent at tick time − that offset + max_lag starts on the
// server at or after the tick time + max_lag. Without an offset yet, the poll is placed after
// the end of the ticking poll (whose now() came before it), which is always late enough.
type pace struct {
	poll    time.Duration
	offsets [offsetWindow]time.Duration
	n       int // offsets recorded, up to offsetWindow meaningful
	queues  map[string]*paced
}

// paced is a queue's last tick as pace knows it.
type paced struct {
	maxLag     time.Duration
	start, end time.Time     // local clock of the poll that cut the last tick; zero when none
	offset     time.Duration // the tick's time by the database's clock − start by the local one
	hasOffset  bool
}

func newPace(poll time.Duration) *pace {
	return &pace{poll: poll, queues: map[string]*paced{}}
}

// setMaxLag records a queue's ticker_max_lag (0: the queue is not paced).
func (p *pace) setMaxLag(queue string, d time.Duration) {
	q, ok := p.queues[queue]
	if !ok {
		q = &paced{}
		p.queues[queue] = q
	}
	q.maxLag = d
}

// forget drops a queue that is gone.
func (p *pace) forget(queue string) { delete(p.queues, queue) }

// minOffset is the smallest recent offset; false when there is none.
func (p *pace) minOffset() (time.Duration, bool) {
	if p.n == 0 {
		return 0, false
	}
	m := p.offsets[0]
	for _, o := range p.offsets[1:min(p.n, offsetWindow)] {
		m = min(m, o)
	}
	return m, true
}

// polled records a poll that started at start and ended at end (local clock, monotonic) and
// the ticks it cut, and returns when the next poll should start (it may be past).
func (p *pace) polled(start, end time.Time, ticks []tickResult) time.Time {
	for _, tk := range ticks {
		q, ok := p.queues[tk.Queue]
		if !ok {
			continue // unknown until the next rescan: polled on the grid
		}
		q.start, q.end = start, end
		q.offset, q.hasOffset = 0, !tk.Time.IsZero()
		if q.hasOffset {
			q.offset = tk.Time.Sub(start)
			p.offsets[p.n%offsetWindow] = q.offset
			p.n++
		}
	}
	next := start.Add(p.poll)
	minOff, haveOff := p.minOffset()
	var earliest time.Time
	for _, q := range p.queues {
		if q.maxLag <= 0 || q.start.IsZero() {
			continue
		}
		due := q.end.Add(q.maxLag) // the tick's now() came before its poll's end: always late enough
		if haveOff && q.hasOffset {
			if d := q.start.Add(q.offset - minOff + q.maxLag + paceMargin); d.Before(due) {
				due = d
			}
		}
		if !due.After(start) {
			continue // a poll has started since: it found the queue due, or nothing pending
		}
		if earliest.IsZero() || due.Before(earliest) {
			earliest = due
		}
	}
	// A due time before the grid's next poll, or a little after it, takes its place: a poll
	// just before a queue is due would find it not due. Never sooner than Poll/2 after this
	// poll's start: queues that tick at different polls (their events came at different
	// times) would otherwise bring one poll each per max_lag, each offering every queue a
	// tick; at most twice the grid's polls, they tick at most Poll/2 late.
	if !earliest.IsZero() && earliest.Before(next.Add(p.poll/2)) {
		next = earliest
		if soonest := start.Add(p.poll / 2); next.Before(soonest) {
			next = soonest
		}
	}
	return next
}
