package skiffcli

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSwitchoverFlags: --release with --reverse, and --unblock with the switchover's own flags,
// are refused before anything connects.
func TestSwitchoverFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--reverse", "--release"}, "--release with --reverse"},
		{[]string{"--unblock", "--dry-run"}, "--unblock only drops the write block"},
	} {
		args := append([]string{"switchover", "--provider", closedURL, "--target", closedURL, "--queue", "q"}, tc.args...)
		code, stdout, stderr := skiff(t, args...)
		require.Equal(t, 1, code, stdout+stderr)
		require.Contains(t, stderr, tc.want)
		require.NotContains(t, stderr, "connect")
	}
}
