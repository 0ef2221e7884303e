package copier

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSplitRanges: the ranges cover every key once, in order, the first and last open-ended,
// even at the ends of int64.
func TestSplitRanges(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		lo, hi int64
		n      int64
		want   int
	}{
		{1, 100, 4, 4}, {1, 100, 3, 3}, {5, 6, 4, 2}, {7, 7, 4, 1}, {-10, 10, 2, 2},
		{math.MinInt64, math.MaxInt64, 4, 4}, {math.MinInt64, math.MaxInt64, 1024, 1024}, {0, 1000, 1024, 1001},
	} {
		rs := splitRanges(c.lo, c.hi, c.n)
		require.Len(t, rs, c.want, "%+v", c)
		require.False(t, rs[0].hasLo, "%+v", c)
		require.False(t, rs[len(rs)-1].hasHi, "%+v", c)
		for i := 1; i < len(rs); i++ {
			require.True(t, rs[i-1].hasHi && rs[i].hasLo, "%+v", c)
			require.Equal(t, rs[i-1].hi, rs[i].lo, "%+v: contiguous", c)
			if i > 1 {
				require.Less(t, rs[i-1].lo, rs[i-1].hi, "%+v: not empty", c)
			}
			require.Greater(t, rs[i].lo, c.lo, "%+v: inside", c)
			require.LessOrEqual(t, rs[i].lo, c.hi, "%+v: inside", c)
		}
	}
	require.Equal(t, `"id" < 26`, splitRanges(1, 100, 4)[0].cond("id"))
	require.Equal(t, `"id" >= 26 AND "id" < 51`, splitRanges(1, 100, 4)[1].cond("id"))
	require.Equal(t, `"id" >= 76`, splitRanges(1, 100, 4)[3].cond("id"))
}
