// Package startstop is the lifecycle every long-running service of skiff shares (the ticker,
// the consumer's worker, the table manager, the metrics server, the worker service), after
// River's rivershared/startstop:
//
//   - Start(ctx) returns once the service runs, in the background; an error means it did not
//     start (and holds nothing).
//   - Stop() asks it to finish the work in hand (a batch, a tick) and waits until it has
//     ended. Cancelling Start's ctx does the same without waiting. Stop is idempotent and
//     returns at once on a service never started.
//   - StopAndCancel() stops like Stop but also cancels the work in hand (the server rolls it
//     back), and waits.
//   - Stopped() is closed once the service has ended, by a stop or by a failure; Err() then
//     says why: nil after a requested stop, the error that ended it otherwise.
//
// A service holds a Base and passes its background function to Base.Start; Base does the
// bookkeeping (contexts, the done channel, the error) once for all of them.
package startstop

import (
	"context"
	"errors"
	"sync"
)

// ErrAlreadyStarted is Start's error on a service started before.
var ErrAlreadyStarted = errors.New("already started")

// RunFunc is a service's background work. It runs until soft ends, finishing the work in
// hand first, or until hard ends, abandoning it (a statement under hard is cancelled). hard
// ends only after soft: code that sees its work cancelled finds the stop requested. A
// context.Canceled it returns after either ended counts as a requested stop (Err nil).
type RunFunc func(soft, hard context.Context) error

// Base implements Start, Stop, StopAndCancel, Stopped and Err for a service. The zero value
// is ready to use; a Base must not be copied after first use.
type Base struct {
	mu       sync.Mutex
	started  bool
	cancel   context.CancelFunc // ends soft
	hardStop context.CancelFunc // ends hard
	done     chan struct{}
	err      error
}

// Start marks the service started, calls setup (nil: none) in the caller's goroutine — the
// service's synchronous start: connect, lock, check; its error is Start's — and then runs
// run in a goroutine of its own. soft is derived from ctx and ends when ctx does or at Stop;
// hard keeps ctx's values, not its cancellation, and ends at StopAndCancel or once run has
// returned. A service whose setup failed counts as stopped with that error.
func (b *Base) Start(ctx context.Context, setup func(ctx context.Context) error, run RunFunc) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return ErrAlreadyStarted
	}
	b.started = true
	done := b.doneLocked()
	soft, cancel := context.WithCancel(ctx)
	hard, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel, b.hardStop = cancel, hardStop
	b.mu.Unlock()

	if setup != nil {
		if err := setup(ctx); err != nil {
			b.finish(err)
			cancel()
			hardStop()
			close(done)
			return err
		}
	}
	go func() {
		err := run(soft, hard)
		if err != nil && errors.Is(err, context.Canceled) && (soft.Err() != nil || hard.Err() != nil) {
			err = nil // a requested stop
		}
		b.finish(err)
		cancel()
		hardStop()
		close(done)
	}()
	return nil
}

func (b *Base) finish(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
}

// doneLocked returns the done channel, made on first use (Stopped may be called before Start).
func (b *Base) doneLocked() chan struct{} {
	if b.done == nil {
		b.done = make(chan struct{})
	}
	return b.done
}

// Stop ends soft and waits until the service has ended. It is idempotent and returns at once
// on a service never started. It must not be called from the service's own goroutine.
func (b *Base) Stop() {
	b.mu.Lock()
	cancel, done := b.cancel, b.done
	b.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// StopAndCancel ends soft, then hard, and waits until the service has ended. It is
// idempotent and returns at once on a service never started.
func (b *Base) StopAndCancel() {
	b.mu.Lock()
	cancel, hardStop, done := b.cancel, b.hardStop, b.done
	b.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel() // soft first: see RunFunc
	hardStop()
	<-done
}

// Stopped returns a channel closed once the service has ended (after Start failed, too). On a
// service not started yet it is closed when a later start has ended.
func (b *Base) Stopped() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.doneLocked()
}

// Err is why the service ended: nil while it runs, after a requested stop (Stop,
// StopAndCancel, Start's ctx cancelled), or when it was never started; otherwise the error
// that ended it.
func (b *Base) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
