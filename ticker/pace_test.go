package ticker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// slowTick answers every poll late, as a busy machine or a slow network does: the tick is
// cut on the server at once, its answer reaches the ticker delay later.
type slowTick struct {
	provider
	delay time.Duration
}

func (s slowTick) Tick(ctx context.Context, queues []string) ([]tickResult, error) {
	out, err := s.provider.Tick(ctx, queues)
	tm := time.NewTimer(s.delay)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
	return out, err
}

// TestTickPeriodUnderLoad: while events keep coming, a queue with the default thresholds
// (ticker_max_lag 100 ms) and the default Poll ticks every ≈ 100 ms by the database's clock,
// even when each poll's answer takes 40 ms to come back. When the next poll's period started
// at the end of the ticking poll, every tick came a round trip late (≥ 140 ms here: this test
// fails so). A period started at each poll's start by the local clock alone would let a poll
// reach the server a hair before the tick is 100 ms old whenever it got there faster than the
// ticking one, and that tick would come a whole Poll later.
func TestTickPeriodUnderLoad(t *testing.T) {
	t.Parallel()
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "busy", nil)

	tk, err := New(Config{DBs: []string{url}}, testLogger(t), nil)
	require.NoError(t, err)
	tk.open = func(c *pgx.Conn) provider { return slowTick{openQueue(c), 40 * time.Millisecond} }
	require.NoError(t, tk.Start(context.Background()))
	t.Cleanup(tk.Stop)

	// A writer commits an event every 5 ms: at every poll, events are pending.
	wctx, stopWriter := context.WithCancel(context.Background())
	done := make(chan struct{})
	wconn := pgtest.Connect(t, url)
	go func() {
		defer close(done)
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-pace.C:
			}
			if _, err := wconn.Exec(wctx, `INSERT INTO busy (v) VALUES (1)`); err != nil && wctx.Err() == nil {
				t.Errorf("write: %v", err)
				return
			}
		}
	}()
	defer func() { stopWriter(); <-done }()

	first := tickCount(t, conn, "busy")
	pgtest.Eventually(t, 60*time.Second, "ticks under load", func() bool { return tickCount(t, conn, "busy") >= first+25 })
	times := tickTimes(t, conn, "busy")
	times = times[len(times)-20:] // steady state: the pace knows the clocks' offset
	gaps := make([]time.Duration, 0, len(times)-1)
	for i := 1; i < len(times); i++ {
		gap := times[i].Sub(times[i-1])
		require.GreaterOrEqual(t, gap, 100*time.Millisecond, "tick %d came before ticker_max_lag", i)
		gaps = append(gaps, gap)
	}
	slices.Sort(gaps)
	t.Logf("tick gaps: %v", gaps)
	require.Less(t, gaps[len(gaps)/2], 125*time.Millisecond, "median tick period under load (ticker_max_lag 100 ms): %v", gaps)
}

// TestPace places polls from fake times: the grid from each poll's start, the poll after a
// tick by the database's clock (the smallest offset seen), never later than the ticking
// poll's end + max_lag, and a due time just after the grid's poll in its place.
func TestPace(t *testing.T) {
	t.Parallel()
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	t0 := time.Now()
	at := func(n int) time.Time { return t0.Add(ms(n)) }
	// The database's clock, 5 ms ahead of the local one.
	server := t0.Round(0).Add(ms(5))
	tick := func(q string, n int) tickResult { return tickResult{Queue: q, TickID: 1, Time: server.Add(ms(n))} }

	p := newPace(ms(100))
	p.setMaxLag("q", ms(100))
	// No tick: the next poll Poll after this one's start, not after its end.
	require.Equal(t, at(100), p.polled(at(0), at(30), nil))
	// A tick without an offset to compare: after the poll's end + max_lag (always late enough).
	require.Equal(t, at(230), p.polled(at(100), at(130), []tickResult{{Queue: "q", TickID: 1}}))
	// A tick that reached the server 2 ms after its poll started (the fastest seen): the next
	// poll goes out when the tick is max_lag old by the server's clock, less those 2 ms.
	require.Equal(t, at(300+1), p.polled(at(200), at(240), []tickResult{tick("q", 202)}))
	// A slower one (12 ms to reach the server): 10 ms later than its start + max_lag.
	require.Equal(t, at(301+100+10+1), p.polled(at(301), at(340), []tickResult{tick("q", 301+12)}))
	// Clamped: never after the ticking poll's end + max_lag.
	require.Equal(t, at(412+100+30), p.polled(at(412), at(442), []tickResult{tick("q", 412+80)}))
	// A poll after the due time that cut nothing (no events): back on the grid.
	require.Equal(t, at(542+100), p.polled(at(542), at(550), nil))
	// A queue due a little after the grid's next poll: its due time replaces that poll.
	p.setMaxLag("slow", ms(130))
	require.Equal(t, at(642+130+1), p.polled(at(642), at(650), []tickResult{tick("slow", 642+2)}))
	p.forget("slow")
	require.Equal(t, at(800), p.polled(at(700), at(710), nil))
	// Two queues due 30 ms apart: a poll no sooner than Poll/2 after the previous one.
	p.setMaxLag("other", ms(100))
	require.Equal(t, at(800+100+1), p.polled(at(800), at(805), []tickResult{tick("q", 802)}))
	require.Equal(t, at(870+50), p.polled(at(870), at(875), []tickResult{tick("other", 872)}))
}
