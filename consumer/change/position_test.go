package change

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPositionCompare(t *testing.T) {
	t.Parallel()
	zero := Position{}
	tick := func(n int64) Position { return Position{Tick: n} }
	lsn := func(n uint64) Position { return Position{LSN: n} }
	for _, c := range []struct {
		a, b Position
		want int
	}{
		{zero, zero, 0},
		{zero, tick(1), -1},
		{tick(1), zero, 1},
		{tick(7), tick(7), 0},
		{tick(7), tick(8), -1},
		{tick(9), tick(8), 1},
		{zero, lsn(1), -1},
		{lsn(0x16B3748), lsn(0x16B3748), 0},
		{lsn(0x16B3748), lsn(0x1_0000_0000), -1}, // across the 4 GB boundary of the X/X form
		{lsn(0x1_0000_0001), lsn(0x1_0000_0000), 1},
		{lsn(1 << 63), lsn(1<<63 - 1), 1}, // unsigned: no wrap to negative
	} {
		require.Equal(t, c.want, c.a.Compare(c.b), "%v vs %v", c.a, c.b)
		require.Equal(t, -c.want, c.b.Compare(c.a), "%v vs %v", c.b, c.a)
	}
	require.True(t, zero.IsZero())
	require.False(t, tick(1).IsZero())
	require.False(t, lsn(1).IsZero())
	require.Equal(t, "none", zero.String())
	require.Equal(t, "tick 42", tick(42).String())
	require.Equal(t, "LSN 1/16B3748", lsn(0x1_016B_3748).String())
}
