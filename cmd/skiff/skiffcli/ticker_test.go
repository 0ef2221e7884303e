package skiffcli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSchedule(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 12, 0, 10, 0, time.UTC)
	for spec, want := range map[string]time.Time{
		"@every 30s":  t0.Add(30 * time.Second),
		"*/5 * * * *": time.Date(2026, 1, 1, 12, 5, 0, 0, time.UTC),
		"0 * * * * *": time.Date(2026, 1, 1, 12, 1, 0, 0, time.UTC), // leading seconds field
		"@hourly":     time.Date(2026, 1, 1, 13, 0, 0, 0, time.UTC),
	} {
		s, err := parseSchedule("maint-schedule", spec)
		require.NoError(t, err, spec)
		require.Equal(t, want, s.Next(t0), spec)
	}
	for _, off := range []string{"off", "", " OFF "} {
		s, err := parseSchedule("maint-schedule", off)
		require.NoError(t, err)
		require.Nil(t, s)
	}
	_, err := parseSchedule("retry-schedule", "every now and then")
	require.ErrorContains(t, err, "--retry-schedule")
}
