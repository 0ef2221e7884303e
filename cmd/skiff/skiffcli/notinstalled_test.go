package skiffcli

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestNotInstalled: commands against a database without skiff's schema say so, and how to
// install it, in one line; not a raw "relation does not exist".
func TestNotInstalled(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t, "")
	bare := srv.NewDB(t)
	prov, _ := initProvider(t)
	bareProv := bare
	tgt := srv.NewDB(t)
	code, _, stderr := skiff(t, "init", "target", "--db", tgt)
	require.Zero(t, code, stderr)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"worker, bare target", []string{"worker", "--provider", prov, "--target", bare, "--queue", "q"}, "skiff is not installed on the target"},
		{"worker, bare provider", []string{"worker", "--provider", bareProv, "--target", tgt, "--queue", "q"}, "skiff is not installed on the provider"},
		{"subscribe, bare target", []string{"subscribe", "--provider", prov, "--target", bare, "--queue", "q"}, "skiff is not installed on the target"},
		{"subscribe, bare provider", []string{"subscribe", "--provider", bareProv, "--target", tgt, "--queue", "q"}, "skiff is not installed on the provider"},
		{"status, bare provider", []string{"status", "--provider", bareProv}, "skiff is not installed on the provider"},
		{"compare, bare provider", []string{"compare", "--provider", bareProv, "--target", tgt, "--queue", "q"}, "skiff is not installed on the provider"},
		{"resync, bare target", []string{"table", "resync", "--provider", prov, "--target", bare, "--queue", "q", "t"}, "skiff is not installed on the target"},
	} {
		code, _, stderr := skiff(t, tc.args...)
		oneLineError(t, code, stderr, tc.want)
		require.Contains(t, stderr, "run skiff init", tc.name)
		require.NotContains(t, stderr, "does not exist", tc.name)
	}

	// status with a bare target: a problem of the report, worded the same.
	code, stdout, _ := skiff(t, "status", "--provider", prov, "--target", bare)
	require.Equal(t, 1, code)
	require.Contains(t, stdout, "skiff is not installed on the target")
}
