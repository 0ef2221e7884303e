package logical

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// signalOn is a slog.Handler that closes ch at the first record whose message is msg.
type signalOn struct {
	msg  string
	ch   chan struct{}
	once *sync.Once
}

func (h signalOn) Enabled(context.Context, slog.Level) bool { return true }
func (h signalOn) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h signalOn) WithGroup(string) slog.Handler            { return h }
func (h signalOn) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}

// TestRestartWaitsForItsOldStream: the server process of a stream the Source has stopped may
// still hold the slot when the Source starts the next one (it ends once it reads the closed
// connection: on a loaded server, later). Resume then waits for that process to end instead
// of failing with "replication slot … is active for PID" (55006). The old process is held
// here with SIGSTOP until the Source says it waits for it.
func TestRestartWaitsForItsOldStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newTableT(t, "15")
	waiting := make(chan struct{})
	s := p.source(t, func(c *Config) {
		c.Log = slog.New(signalOn{msg: "waiting for the previous stream's server process to end", ch: waiting, once: new(sync.Once)})
	})
	require.NoError(t, s.Resume(ctx, change.Position{}))
	p.writeTx(t, `INSERT INTO t VALUES (1)`)
	b, evs := next(t, s)
	require.Len(t, evs, 1)
	finish(t, s, b)

	walsender, err := os.FindProcess(int(s.st.conn.PID()))
	require.NoError(t, err)
	require.NoError(t, walsender.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = walsender.Signal(syscall.SIGCONT) })

	resumed := make(chan error, 1)
	go func() { resumed <- s.Resume(ctx, b.End) }()
	select {
	case err := <-resumed:
		t.Fatalf("Resume returned while the old stream's process still held the slot: %v", err)
	case <-waiting:
	}
	require.NoError(t, walsender.Signal(syscall.SIGCONT))
	require.NoError(t, <-resumed)

	p.writeTx(t, `INSERT INTO t VALUES (2)`)
	b, evs = next(t, s)
	require.Len(t, evs, 1)
	require.Equal(t, change.Text("2"), evs[0].Values[0])
	finish(t, s, b)
}
