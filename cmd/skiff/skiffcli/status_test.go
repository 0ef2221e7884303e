package skiffcli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// TestStatusExitCode: skiff status exits 0 when all is well and 1 when it lists a problem,
// in text and in JSON.
func TestStatusExitCode(t *testing.T) {
	t.Parallel()
	url, conn := initProvider(t)
	ctx := context.Background()
	_, err := queue.CreateQueue(ctx, conn, "q")
	require.NoError(t, err)
	_, err = queue.ForceTick(ctx, conn, "q")
	require.NoError(t, err)
	code, stdout, stderr := skiff(t, "status", "--provider", url)
	require.Zero(t, code, stdout+stderr)
	require.NotContains(t, stdout, "problems:")

	require.NoError(t, queue.SetQueueConfig(ctx, conn, "q", queue.SettingTickerPaused, "true"))
	code, stdout, stderr = skiff(t, "status", "--provider", url)
	require.Equal(t, 1, code, stdout+stderr)
	require.Contains(t, stdout, "problems:")
	require.Contains(t, stdout, "ticker paused by configuration")
	require.Empty(t, stderr, "a problem is an answer, not an error")
	code, stdout, _ = skiff(t, "status", "--provider", url, "--json")
	require.Equal(t, 1, code)
	var r struct{ Problems []string }
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	require.Len(t, r.Problems, 1)
}

// TestStatusWatchFlag: --watch stands alone (2 s) or takes an interval after it or after =;
// a following word that is not an interval is not taken.
func TestStatusWatchFlag(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]time.Duration{
		"":               0,
		"--watch":        2 * time.Second,
		"--watch 5s":     5 * time.Second,
		"--watch=1m":     time.Minute,
		"--watch 3":      3 * time.Second,
		"--watch --json": 2 * time.Second,
		"--json --watch": 2 * time.Second,
		"--watch=0.5":    500 * time.Millisecond,
		"--watch 250ms":  250 * time.Millisecond,
	} {
		var cli struct {
			Status StatusCmd `cmd:""`
		}
		p, err := kong.New(&cli, kong.Writers(io.Discard, io.Discard))
		require.NoError(t, err)
		_, err = p.Parse(append([]string{"status", "--provider", "x"}, strings.Fields(args)...))
		require.NoError(t, err, args)
		require.Equal(t, want, time.Duration(cli.Status.Watch), args)
	}
	var cli struct {
		Status StatusCmd `cmd:""`
	}
	p, err := kong.New(&cli, kong.Writers(io.Discard, io.Discard))
	require.NoError(t, err)
	_, err = p.Parse([]string{"status", "--provider", "x", "--watch=soon"})
	require.ErrorContains(t, err, "not an interval")
	_, err = p.Parse([]string{"status", "--provider", "x", "--watch", "nope"})
	require.Error(t, err, "a stray argument is still refused")
}

// TestStatusWatch: --watch redraws the report until interrupted, and exits with the status of
// the last one.
func TestStatusWatch(t *testing.T) {
	t.Parallel()
	url, conn := initProvider(t)
	ctx := context.Background()
	_, err := queue.CreateQueue(ctx, conn, "q")
	require.NoError(t, err)
	require.NoError(t, queue.SetQueueConfig(ctx, conn, "q", queue.SettingTickerPaused, "true"))
	out := &lockedBuffer{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	cmd := &StatusCmd{Provider: url, StallAfter: 30 * time.Second, LongTransaction: time.Hour, Watch: watchInterval(50 * time.Millisecond)}
	go func() {
		done <- cmd.Run(&Runtime{Ctx: wctx, Hard: ctx, Log: slog.New(slog.DiscardHandler), Out: out})
	}()
	pgtest.Eventually(t, 30*time.Second, "the report redrawn three times", func() bool {
		return strings.Count(out.String(), "queue q") >= 3
	})
	cancel()
	require.Equal(t, exitError{1}, <-done, "the last report listed a problem")
}

// lockedBuffer is a bytes.Buffer written by one goroutine and read by another.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
