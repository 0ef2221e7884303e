package skiffcli

import (
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal and returns its terminal side (what a program would have as
// stderr on a console) and the controlling side.
func openPTY(t *testing.T) (tty, ptm *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { tty.Close() })
	return tty, ptm
}

// logsColour writes a text log line to the terminal and reports whether it holds escape codes.
func logsColour(t *testing.T, tty, ptm *os.File) bool {
	t.Helper()
	newLogger("text", slog.LevelInfo, tty).Info("hello", "k", "v")
	require.NoError(t, ptm.SetReadDeadline(time.Now().Add(10*time.Second)))
	var got []byte
	buf := make([]byte, 1024)
	for !bytes.Contains(got, []byte("\n")) {
		n, err := ptm.Read(buf)
		require.NoError(t, err, "read the terminal: %q", got)
		got = append(got, buf[:n]...)
	}
	require.Contains(t, string(got), "hello")
	return bytes.Contains(got, []byte("\x1b["))
}

// TestColourOnTerminalOnly: text logs are coloured on a terminal unless NO_COLOR is set; a
// character device that is no terminal (/dev/null) gets JSON under --log-format=auto. Not
// parallel: it sets the process environment.
func TestColourOnTerminalOnly(t *testing.T) {
	tty, ptm := openPTY(t)
	require.True(t, logsColour(t, tty, ptm))
	_, isText := newLogger("auto", slog.LevelInfo, tty).Handler().(*slog.JSONHandler)
	require.False(t, isText, "auto on a terminal: text")

	t.Setenv("NO_COLOR", "1")
	require.False(t, logsColour(t, tty, ptm), "NO_COLOR set")
	t.Setenv("NO_COLOR", "")
	require.True(t, logsColour(t, tty, ptm), "an empty NO_COLOR does not count")

	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer null.Close()
	_, isJSON := newLogger("auto", slog.LevelInfo, null).Handler().(*slog.JSONHandler)
	require.True(t, isJSON, "auto on /dev/null: JSON")
}
