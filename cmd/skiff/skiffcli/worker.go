package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/worker"
)

// WorkerCmd is `skiff worker`: replay the batches of one or more queues on the target.
type WorkerCmd struct {
	Provider    string        `help:"Provider database: libpq connection string or URI." required:""`
	Target      string        `help:"Target database: libpq connection string or URI." required:""`
	Queue       []string      `help:"Queue to replay; repeat for several (each runs in its own goroutine with its own connections). All start or none: a queue that cannot start (no subscription, another worker holding it, a database refusing) stops the worker before any queue replays a batch, naming the queue and the cause." required:"" sep:"none"`
	Consumer    string        `help:"Consumer name on the provider (default: the one of the queue's subscription on the target)."`
	MaxEvents   int64         `help:"Merge ticks into batches of about this many events when behind. While its batches are at least half this size (a trigger queue, provider schema 15+), a queue's worker reads the next batch ahead on a second provider connection (up to 32 MiB of rows), during the target's apply of the current one." default:"50000"`
	MinBackoff  time.Duration `help:"First wait before a failed batch is retried; doubles at each failure. A logical queue whose slot fails the same way 5 times in a row at one position (the server cannot decode past it) is not retried: the worker stops, and skiff status shows the slot, the error and the remedy." default:"1s"`
	MaxBackoff  time.Duration `help:"Longest wait between retries of a failed batch." default:"1m"`
	MetricsAddr string        `help:"Serve Prometheus metrics on this address (e.g. :9188); empty disables."`
	// CopyParallel: tables in state copying (resync, added tables, copies cut short by a
	// crash) are copied by the worker's table manager (issue 5).
	CopyParallel int `help:"Tables the worker copies at once (tables in state copying: resync, added tables)." default:"2"`
	// CopySplitRows: a large table's copy split into ranges (issue 16).
	CopySplitRows int64 `help:"Split the copy of a table the provider estimates at more rows than this into ranges of about this many rows each, copied at once (by as many connections as --copy-parallel) under one exported snapshot: ranges of its pages on a provider 14+ (a plain table, any key; read without an index), else ranges of its primary key (9.2+, a key of one integer column). Otherwise, or with 0, the table is copied in one stream (the log says why). The ranges commit apart: the destination is emptied first and fills as they commit; a copy cut short starts over." default:"0"`
	// CopyLockTimeout bounds a copy's wait for its destination's lock while the copy's
	// barrier holds the subscription's batches back.
	CopyLockTimeout time.Duration `help:"How long a copy waits for its destination's lock (the subscription's batches wait meanwhile) before it fails, naming the holder, and is tried again later." default:"5s"`
}

// workerMemoryLimit is the Go heap's soft limit (debug.SetMemoryLimit) per queue a worker
// replays, unless GOMEMLIMIT is set: what a batch holds live is bounded (runs of 50k rows or
// 64 MiB, a few chunks in flight), the rest is garbage GOGC 400 lets pile up.
const workerMemoryLimit = 160 << 20

// Run replays the queues until a signal: the first finishes the batches in hand, the second
// rolls them back.
func (c *WorkerCmd) Run(rt *Runtime) error {
	names, err := c.consumers(rt.Ctx)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// Decoding and applying allocate per row; a batch's memory is bounded (chunks and runs),
		// so collect less often: measured, GC was half of the worker's CPU at the default 100.
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// GOGC 400 lets the heap grow to five times what is live: a large batch (50k pending
		// rows a run, four chunks in the pipe) then took the RSS near 500 MB. A soft limit
		// per queue makes the collector run more often as the heap nears it, and only then.
		debug.SetMemoryLimit(int64(len(c.Queue)) * workerMemoryLimit)
	}
	cfg := worker.Config{
		Provider:        c.Provider,
		Target:          c.Target,
		Registry:        rt.Registry,
		MaxEvents:       c.MaxEvents,
		MinBackoff:      c.MinBackoff,
		MaxBackoff:      c.MaxBackoff,
		CopyParallel:    c.CopyParallel,
		CopyLockTimeout: c.CopyLockTimeout,
		CopySplitRows:   c.CopySplitRows,
		MetricsAddr:     c.MetricsAddr,
		Log:             rt.Log,
	}
	for _, q := range c.Queue {
		cfg.Queues = append(cfg.Queues, worker.Queue{Name: q, Consumer: names[q]})
	}
	svc, err := worker.New(cfg)
	if err != nil {
		return err
	}
	if err := svc.Start(rt.Ctx); err != nil {
		return err
	}
	return untilStopped(rt, svc)
}

// service is a long-running service's lifecycle (internal/startstop).
type service interface {
	Stop()
	StopAndCancel()
	Stopped() <-chan struct{}
	Err() error
}

// untilStopped waits until the first signal (rt.Ctx, which the services were started with,
// ends: they finish the work in hand) or until one of them stops by itself, then stops all
// of them — at once when a second signal comes meanwhile (rt.Hard) — and returns their
// errors.
func untilStopped(rt *Runtime, svcs ...service) error {
	ended := make(chan struct{}, len(svcs))
	for _, sv := range svcs {
		go func() {
			<-sv.Stopped()
			ended <- struct{}{}
		}()
	}
	select {
	case <-rt.Ctx.Done():
	case <-ended:
	}
	done := make(chan struct{})
	go func() {
		for _, sv := range svcs {
			sv.Stop()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-rt.Hard.Done():
		for _, sv := range svcs {
			sv.StopAndCancel()
		}
		<-done
	}
	var errs []error
	for _, sv := range svcs {
		if err := sv.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// consumers checks that both databases have skiff's schema and names the consumer of each
// queue's subscription on the target: --consumer, or the subscription the target records for
// the queue, however its URL is spelt.
func (c *WorkerCmd) consumers(ctx context.Context) (map[string]string, error) {
	prov, err := pg.Connect(ctx, c.Provider, "skiff worker")
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	defer prov.Close(context.WithoutCancel(ctx))
	if err := requireSchema(ctx, prov, migrate.Provider); err != nil {
		return nil, err
	}
	tgt, err := pg.Connect(ctx, c.Target, "skiff worker")
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if err := migrate.Require(ctx, tgt, migrate.Target, pg.Describe(tgt.Config()), identityVersion); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, q := range c.Queue {
		name, found, err := consumerFor(ctx, tgt, c.Consumer, q, c.Target, c.Provider)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("the target %s has no subscription of queue %s (consumer %s): run skiff subscribe first",
				pg.Describe(tgt.Config()), q, name)
		}
		out[q] = name
	}
	return out, nil
}
