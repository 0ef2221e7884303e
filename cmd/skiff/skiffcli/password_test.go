package skiffcli

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestPasswordOnCommandLine: a password in a URL on the command line works, is warned about
// (ps shows it to every local user) and reaches no output; without one there is no warning.
func TestPasswordOnCommandLine(t *testing.T) {
	t.Parallel()
	url := pgtest.Shared(t, "").NewDB(t)
	withPW := strings.Replace(url, "postgres://postgres@", "postgres://postgres:Sekr1t-pw@", 1)
	require.NotEqual(t, url, withPW)
	code, stdout, stderr := skiff(t, "init", "provider", "--db", withPW)
	require.Zero(t, code, stderr)
	require.Contains(t, stderr, "a password is on the command line")
	require.NotContains(t, stdout+stderr, "Sekr1t-pw")

	code, stdout, stderr = skiff(t, "init", "provider", "--db", "host=127.0.0.1 port=1 password='Sekr1t pw")
	require.Equal(t, 1, code)
	require.NotContains(t, stdout+stderr, "Sekr1t")
	require.NotContains(t, stdout+stderr, " pw")

	code, _, stderr = skiff(t, "init", "provider", "--db", url)
	require.Zero(t, code, stderr)
	require.NotContains(t, stderr, "on the command line")
}
