package change

import "errors"

// ErrPositionLost is wrapped by every error after which a worker must stop instead of
// retrying the batch: the target's recorded position is neither the start nor the end of the
// batch the source hands out, or the subscription is gone from the target or the provider, or
// a merged subscription (several providers into shared tables) met a conflict it settles by
// stopping, or a TRUNCATE it must not replay.
// Replication stops until an operator looks (skiff status, skiff table resync, subscribe).
var ErrPositionLost = errors.New("position lost")

// ErrCopyPending is returned, when the applier keeps no backlog, for an event of a table
// whose initial copy has started but not published its snapshot yet: the batch waits and is
// tried again, nothing is skipped.
var ErrCopyPending = errors.New("initial copy has not published its snapshot yet")
