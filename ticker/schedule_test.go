package ticker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestJobsDue drives the maintenance plan with a fake clock.
func TestJobsDue(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rotate := &job{name: "rotate", sched: Every(30 * time.Second)}
	cleanup := &job{name: "cleanup", sched: Every(time.Minute)}
	js := jobs{rotate, cleanup}
	js.plan(t0)
	require.Equal(t, t0.Add(30*time.Second), js.nextDue())
	require.Empty(t, js.due(t0.Add(29*time.Second)))

	got := js.due(t0.Add(30 * time.Second))
	require.Equal(t, []*job{rotate}, got)
	require.Equal(t, t0.Add(60*time.Second), rotate.next)
	require.Equal(t, t0.Add(60*time.Second), js.nextDue())

	// Both due at once come in configured order.
	require.Equal(t, []*job{rotate, cleanup}, js.due(t0.Add(60*time.Second)))

	// A long outage runs a missed job once, then plans from now.
	later := t0.Add(10 * time.Minute)
	require.Equal(t, []*job{rotate, cleanup}, js.due(later))
	require.Equal(t, later.Add(30*time.Second), js.nextDue())
	require.True(t, jobs{}.nextDue().IsZero())
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	lo, hi := 250*time.Millisecond, 30*time.Second
	for n := 0; n < 20; n++ {
		want := lo << min(n, 10)
		want = min(want, hi)
		for i := 0; i < 50; i++ {
			d := backoff(n, lo, hi)
			require.GreaterOrEqual(t, d, want/2, "attempt %d", n)
			require.LessOrEqual(t, d, want, "attempt %d", n)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	_, err := New(Config{}, testLogger(t), nil)
	require.ErrorContains(t, err, "no database")
	_, err = New(Config{DBs: []string{"postgres://u:secret@h/db", "postgres://u:secret@h/db"}}, testLogger(t), nil)
	require.ErrorContains(t, err, "given twice")
	require.NotContains(t, err.Error(), "secret")
	tk, err := New(Config{DBs: []string{"host=h dbname=d password=secret"}}, testLogger(t), nil)
	require.NoError(t, err)
	require.Equal(t, 100*time.Millisecond, tk.cfg.Poll)
	require.Equal(t, "skiff ticker", tk.cfg.AppName)
	tk.Stop() // never started: returns at once
}
