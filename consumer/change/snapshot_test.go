package change

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSnapshot(t *testing.T) {
	t.Parallel()
	s, err := ParseSnapshot("100:110:103,105")
	require.NoError(t, err)
	for txid, want := range map[int64]bool{99: true, 100: true, 103: false, 104: true, 105: false, 109: true, 110: false, 200: false} {
		require.Equal(t, want, s.Visible(txid), "txid %d", txid)
	}
	require.Equal(t, "100:110:103,105", s.String())
	require.True(t, s.CaughtUp(Snapshot{Xmin: 110, Xmax: 120}))
	require.False(t, s.CaughtUp(Snapshot{Xmin: 109, Xmax: 120}))
	for _, bad := range []string{"", "1:2", "a:2:", "5:4:", "1:5:7"} {
		_, err := ParseSnapshot(bad)
		require.Error(t, err, bad)
	}
}
