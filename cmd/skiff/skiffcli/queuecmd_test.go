package skiffcli

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/queue"
)

// TestQueueConfig: `skiff queue config` shows a queue's settings and changes several at once,
// all or none: a bad setting names itself and leaves the others as they were.
func TestQueueConfig(t *testing.T) {
	t.Parallel()
	url, conn := initProvider(t)
	ctx := context.Background()
	_, err := queue.CreateQueue(ctx, conn, "My Queue")
	require.NoError(t, err)

	code, stdout, stderr := skiff(t, "queue", "config", "--db", url, "--queue", "My Queue")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "queue My Queue")
	require.Contains(t, stdout, "rotation_period     2h0m0s (epoch 0 since")

	code, stdout, stderr = skiff(t, "queue", "config", "--db", url, "--queue", "My Queue",
		"rotation_period=30 minutes", "ticker_max_lag = 250 ms", "ticker_max_events=1000")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "rotation_period     30m0s")
	require.Contains(t, stdout, "ticker_max_lag      250ms")
	require.Contains(t, stdout, "ticker_max_events   1000")

	code, _, stderr = skiff(t, "queue", "config", "--db", url, "--queue", "My Queue", "rotation_period=1 hour", "nope=1")
	oneLineError(t, code, stderr, `unknown queue setting \"nope\"`)
	code, _, stderr = skiff(t, "queue", "config", "--db", url, "--queue", "My Queue", "ticker_max_lag=soon")
	oneLineError(t, code, stderr, "interval")
	code, _, stderr = skiff(t, "queue", "config", "--db", url, "--queue", "My Queue", "rotation_period")
	oneLineError(t, code, stderr, "SETTING=VALUE")
	info, err := queue.GetQueueInfo(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, "30m0s", info[0].RotationPeriod.String(), "a failed command changes nothing")

	code, _, stderr = skiff(t, "queue", "config", "--db", url, "--queue", "other")
	oneLineError(t, code, stderr, `queue \"other\"`)
}
