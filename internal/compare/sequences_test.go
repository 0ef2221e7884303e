package compare

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBehind: a target sequence is behind when its next nextval could return a value the
// provider's has handed out; is_called decides whether last_value itself was handed out.
func TestBehind(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		p, t   SequenceValue
		behind bool
	}{
		{SequenceValue{1, false}, SequenceValue{1, false}, false}, // neither used
		{SequenceValue{3, true}, SequenceValue{1, false}, true},
		{SequenceValue{3, true}, SequenceValue{3, false}, true}, // the target would hand out 3 again
		{SequenceValue{3, true}, SequenceValue{3, true}, false},
		{SequenceValue{3, false}, SequenceValue{3, false}, false}, // the provider has handed out 1 and 2
		{SequenceValue{3, true}, SequenceValue{10, false}, false},
		{SequenceValue{10, true}, SequenceValue{9, true}, true},
	} {
		require.Equal(t, c.behind, Behind(c.p, c.t), "provider %s, target %s", c.p, c.t)
	}
}
