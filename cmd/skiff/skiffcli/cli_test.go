package skiffcli

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// closedURL is a server that does not answer: a command that connects fails at once.
const closedURL = "postgres://nobody@127.0.0.1:1/nothing?sslmode=disable&connect_timeout=5"

// TestVersionEnvIgnored: SKIFF_VERSION in the environment is not the --version flag (kong
// maps every flag to a SKIFF_* variable): commands run as usual. Not parallel: it sets the
// process environment.
func TestVersionEnvIgnored(t *testing.T) {
	t.Setenv("SKIFF_VERSION", "1.2.3")
	code, stdout, stderr := skiff(t, "init", "provider", "--db", closedURL)
	require.Equal(t, 1, code, stdout+stderr)
	require.Contains(t, stderr, "connect")

	code, stdout, _ = skiff(t, "--version")
	require.Zero(t, code)
	require.NotEmpty(t, strings.TrimSpace(stdout))
}

// TestBuildVersion: without a version from the linker, --version says what the build knows:
// the module version, the VCS revision and time, and whether the tree was modified.
func TestBuildVersion(t *testing.T) {
	t.Parallel()
	info := &debug.BuildInfo{Main: debug.Module{Path: "github.com/skiffdb/skiff", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "5acacfe0123456789abcdef0123456789abcdef0"},
			{Key: "vcs.time", Value: "2026-11-22T09:09:46Z"},
			{Key: "vcs.modified", Value: "true"},
		}}
	require.Equal(t, "(devel) 5acacfe01234 2026-11-22T09:09:46Z modified", buildVersion(info))
	info.Main.Version = "v0.3.0"
	info.Settings = info.Settings[:3]
	require.Equal(t, "v0.3.0 5acacfe01234 2026-11-22T09:09:46Z", buildVersion(info))
	require.Equal(t, "v0.3.0", buildVersion(&debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}}))
	require.Equal(t, "unknown", buildVersion(nil))
}

// TestConfigUnknownKey: a config file key that is no flag of any command is refused, named;
// flag names in their three spellings are accepted.
func TestConfigUnknownKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	bad := write("bad.json", `{"db": "`+closedURL+`", "prvider": "postgres://x@h/db"}`)
	code, _, stderr := skiff(t, "--config", bad, "init", "provider")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, `unknown key "prvider"`)
	require.Contains(t, stderr, "bad.json")

	good := write("good.json", `{"db": "`+closedURL+`", "log_format": "json", "logLevel": "debug", "max-backoff": "2s"}`)
	code, _, stderr = skiff(t, "--config", good, "init", "provider")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, `"level":"ERROR"`, "log_format from the file")
	require.Contains(t, stderr, "connect")
}

// TestTextLogsInFileHaveNoColour: --log-format=text into a file (not a terminal) writes no
// escape codes.
func TestTextLogsInFileHaveNoColour(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	defer f.Close()
	var out bytes.Buffer
	code := run([]string{"--log-format", "text", "init", "provider", "--db", closedURL}, &out, f)
	require.Equal(t, 1, code)
	b, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.Contains(t, string(b), "ERR")
	require.NotContains(t, string(b), "\x1b[")
}

// TestJSONLogDurations: every duration in a JSON log is seconds, as a number, under a key
// ending in _s.
func TestJSONLogDurations(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := newLogger("json", slog.LevelInfo, &buf)
	log.With("poll", 100*time.Millisecond).Info("x", "retry_in", 1500*time.Millisecond, "n", 3,
		slog.Group("g", slog.Duration("lag", 2*time.Second)))
	var m map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m), buf.String())
	require.Equal(t, 1.5, m["retry_in_s"], buf.String())
	require.Equal(t, 0.1, m["poll_s"], buf.String())
	require.Equal(t, 2.0, m["g"].(map[string]any)["lag_s"], buf.String())
	require.Equal(t, 3.0, m["n"])
	require.NotContains(t, m, "retry_in")
}
