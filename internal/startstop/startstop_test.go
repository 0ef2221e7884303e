package startstop

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStopIsSoft: Stop ends soft only; the work in hand sees hard alive and finishes. Stop is
// idempotent and the service counts as stopped on request (Err nil).
func TestStopIsSoft(t *testing.T) {
	t.Parallel()
	var b Base
	hardAlive := make(chan bool, 1)
	require.NoError(t, b.Start(context.Background(), nil, func(soft, hard context.Context) error {
		<-soft.Done()
		hardAlive <- hard.Err() == nil
		return soft.Err()
	}))
	require.ErrorIs(t, b.Start(context.Background(), nil, nil), ErrAlreadyStarted)
	b.Stop()
	b.Stop()
	require.True(t, <-hardAlive)
	<-b.Stopped()
	require.NoError(t, b.Err())
}

// TestStopAndCancelEndsHard: StopAndCancel ends soft before hard, and waits.
func TestStopAndCancelEndsHard(t *testing.T) {
	t.Parallel()
	var b Base
	running := make(chan struct{})
	require.NoError(t, b.Start(context.Background(), nil, func(soft, hard context.Context) error {
		close(running)
		<-hard.Done()
		if soft.Err() == nil {
			return errors.New("hard ended before soft")
		}
		return hard.Err()
	}))
	<-running
	b.StopAndCancel()
	require.NoError(t, b.Err())
}

// TestFailure: an error that ends the service by itself is Err; a failed setup is Start's
// error, the service never runs and counts as stopped.
func TestFailure(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var b Base
	require.NoError(t, b.Start(context.Background(), nil, func(soft, hard context.Context) error { return boom }))
	<-b.Stopped()
	require.ErrorIs(t, b.Err(), boom)

	var c Base
	ran := false
	err := c.Start(context.Background(), func(context.Context) error { return boom }, func(soft, hard context.Context) error {
		ran = true
		return nil
	})
	require.ErrorIs(t, err, boom)
	<-c.Stopped()
	require.ErrorIs(t, c.Err(), boom)
	require.False(t, ran)
	c.Stop() // returns at once
}

// TestNeverStarted: Stop and StopAndCancel return at once on a service never started.
func TestNeverStarted(t *testing.T) {
	t.Parallel()
	var b Base
	b.Stop()
	b.StopAndCancel()
	require.NoError(t, b.Err())
}

// TestContextCancelStops: cancelling Start's ctx stops the service like Stop.
func TestContextCancelStops(t *testing.T) {
	t.Parallel()
	var b Base
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, b.Start(ctx, nil, func(soft, hard context.Context) error {
		<-soft.Done()
		return soft.Err()
	}))
	cancel()
	<-b.Stopped()
	require.NoError(t, b.Err())
}
