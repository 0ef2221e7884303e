package ticker

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// buildSkiff builds cmd/skiff into a temporary directory and returns the binary's path.
func buildSkiff(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "skiff")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/skiffdb/skiff/cmd/skiff").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// lockedBuffer collects a process's output while it runs.
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

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestBinarySIGTERM runs `skiff ticker` as a process: it ticks, serves metrics, and exits 0
// on SIGTERM.
func TestBinarySIGTERM(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildSkiff(t)
	url := providerDB(t, pgtest.Shared(t, ""))
	conn := pgtest.Connect(t, url)
	createQueue(t, conn, "q", idleEvery("50 milliseconds"))
	addr := freeAddr(t)

	var stderr lockedBuffer
	cmd := exec.Command(bin, "ticker", "--db", url, "--poll", "20ms", "--rescan", "200ms",
		"--metrics-addr", addr, "--log-format", "json", "--log-level", "debug")
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("skiff ticker stderr:\n%s", stderr.String())
		}
	})

	before := tickCount(t, conn, "q")
	pgtest.Eventually(t, 20*time.Second, "the binary ticks", func() bool { return tickCount(t, conn, "q") >= before+3 })
	var body string
	pgtest.Eventually(t, 10*time.Second, "metrics served", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	require.Contains(t, body, `skiff_ticker_ticks_total{db=`)
	require.Contains(t, body, `skiff_ticker_database_up{db=`)
	require.NotContains(t, stderr.String(), "password")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status after SIGTERM")
	case <-time.After(15 * time.Second):
		t.Fatal("skiff ticker did not exit within 15s of SIGTERM")
	}
	require.Equal(t, 0, cmd.ProcessState.ExitCode())
	require.Contains(t, stderr.String(), `"msg":"ticker stopped"`)
	require.NotContains(t, stderr.String(), `"level":"ERROR"`)
}
