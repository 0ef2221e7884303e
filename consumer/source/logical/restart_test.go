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
	p, s, b, walsender, waiting := stoppedStream(ctx, t)

	waited, err := heldWhile(t, walsender, waiting, func() error { return s.Resume(ctx, b.End) })
	require.True(t, waited, "Resume returned while the old stream's process still held the slot: %v", err)
	require.NoError(t, err)

	p.writeTx(t, `INSERT INTO t VALUES (2)`)
	b2, evs := next(t, s)
	require.Len(t, evs, 1)
	require.Equal(t, change.Text("2"), evs[0].Values[0])
	finish(t, s, b2)
}

// TestCloseWaitsForItsStream: Close waits for its stream's server process to end, so that the
// next Source of the slot (a worker's new session after an error) can start at once instead of
// failing with "replication slot … is active for PID" (55006). The old process is held with
// SIGSTOP until Close says it waits for it; without the wait, the new Source's Resume runs
// while the process still holds the slot.
func TestCloseWaitsForItsStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, s, b, walsender, waiting := stoppedStream(ctx, t)

	// Had Close not waited, the process would still hold the slot for the Resume below.
	_, err := heldWhile(t, walsender, waiting, func() error { return s.Close(ctx) })
	require.NoError(t, err)
	s2 := p.source(t, nil)
	require.NoError(t, s2.Resume(ctx, b.End), "the next Source starts on the slot right after Close")
	p.writeTx(t, `INSERT INTO t VALUES (2)`)
	b2, evs := next(t, s2)
	require.Len(t, evs, 1)
	require.Equal(t, change.Text("2"), evs[0].Values[0])
	finish(t, s2, b2)
}

// heldWhile runs op while the stream's server process is stopped, and continues the process
// once the Source says it waits for it (waited), or lets it be when op returns first.
func heldWhile(t *testing.T, walsender *os.Process, waiting chan struct{}, op func() error) (waited bool, err error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return false, err
	case <-waiting:
		require.NoError(t, walsender.Signal(syscall.SIGCONT))
		return true, <-done
	}
}

// stoppedStream starts a Source on a fresh table's slot, has it finish one batch, and stops its
// stream's server process with SIGSTOP (continued at cleanup). waiting is closed when the
// Source logs that it waits for that process to end.
func stoppedStream(ctx context.Context, t *testing.T) (p *provider, s *Source, b change.Batch, walsender *os.Process, waiting chan struct{}) {
	t.Helper()
	p = newTableT(t, "15")
	waiting = make(chan struct{})
	s = p.source(t, func(c *Config) {
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
	return p, s, b, walsender, waiting
}
