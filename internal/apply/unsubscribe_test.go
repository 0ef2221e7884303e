package apply

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// TestUnsubscribeUnderWorker: Unsubscribe refuses while a worker holds the subscription
// (ErrLocked, naming it), runs its before step under the lock, and with force removes the
// subscription from under the worker, whose next batch then stops it for good instead of
// being retried forever.
func TestUnsubscribeUnderWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tg := newTarget(t, "", `CREATE TABLE t (id int PRIMARY KEY)`)
	other, err := pg.Connect(ctx, tg.url, "skiff unsubscribe")
	require.NoError(t, err)
	defer other.Close(ctx)

	ran := false
	_, err = Unsubscribe(ctx, other, "q", "c", false, func(context.Context) error { ran = true; return nil })
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, "target backend pid")
	require.False(t, ran, "nothing is done while a worker holds the subscription")

	res, err := Unsubscribe(ctx, other, "q", "c", true, func(context.Context) error { ran = true; return nil })
	require.NoError(t, err)
	require.True(t, ran)
	require.True(t, res.Found)
	require.Contains(t, res.Holder, "target backend pid")

	_, err = tg.a.Position(ctx)
	var gone *UnsubscribedError
	require.ErrorAs(t, err, &gone)
	err = tg.apply(t, nil)
	require.ErrorContains(t, err, "subscription q/c was removed from the target")
	require.ErrorIs(t, err, change.ErrPositionLost, "the worker stops instead of retrying")

	res, err = Unsubscribe(ctx, other, "q", "c", false, nil)
	require.NoError(t, err)
	require.False(t, res.Found)
}
