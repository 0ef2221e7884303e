// Package trigger is the trigger queue as a consumer source: batches of a consumer's
// subscription to a queue on the provider (package queue reads them), and what the queue's
// copy points are — txid snapshots, "xmin:xmax:xip" — for the initial copy and catch-up:
// CopyPoint takes one in a copy's transaction, Source.CopyHolds tells which events a copy
// holds, Passed when the applied stream has passed a copy.
//
// It imports no part of package consumer (the worker service asserts the contracts); a
// second source (logical decoding) sits beside it under consumer/source.
package trigger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// Config configures a Source: queue, consumer, batch size and chunking (queue.SourceConfig).
type Config = queue.SourceConfig

// Source reads the batches of a consumer's subscription to a trigger queue (consumer.Source:
// NextBatch, Events, Finish, by queue.Source) and reads its tables' copy points
// (consumer.CopyPoints). The queue is re-readable: NextBatch returns an unfinished batch
// again with the same ID, Prev and End, and Events reads a batch as often as it is asked,
// so it needs no consumer.Resumer. Not safe for concurrent use.
type Source struct {
	*queue.Source
}

// New returns a Source reading through conn (see queue.NewSource).
func New(ctx context.Context, conn *pgx.Conn, cfg Config) (*Source, error) {
	s, err := queue.NewSource(ctx, conn, cfg)
	if err != nil {
		return nil, err
	}
	return &Source{Source: s}, nil
}

// CopyHolds implements consumer.CopyPoints: it returns CopyHolds(point).
func (s *Source) CopyHolds(point string) (func(*change.Event) bool, error) {
	return CopyHolds(point)
}

// CopyHolds returns whether a copy taken at point (a txid snapshot) holds an event: the
// event's transaction is visible in the snapshot (txid < xmin, or < xmax and not in xip). An
// event of an unknown transaction (TxID 0) is never taken as copied: it is applied.
func CopyHolds(point string) (func(*change.Event) bool, error) {
	snap, err := change.ParseSnapshot(point)
	if err != nil {
		return nil, err
	}
	return func(ev *change.Event) bool { return ev.TxID != 0 && snap.Visible(ev.TxID) }, nil
}

// CopyPoint takes the copy point of a copy (copier.Config.CopyPoint): the txid snapshot of
// prov's transaction, the one the copy reads under.
func CopyPoint(ctx context.Context, prov pg.DB) (string, error) {
	var point string
	if err := prov.QueryRow(ctx, "SELECT txid_current_snapshot()::text").Scan(&point); err != nil {
		return "", err
	}
	if _, err := change.ParseSnapshot(point); err != nil {
		return "", err
	}
	return point, nil
}

// Passed reports whether a queue's stream, applied on the target up to applied, has passed a
// copy taken at point (copier.Manager.Passed): the snapshot of the tick applied ends at has
// every transaction the copy could contain (txid < the point's xmax) finished, so no later
// batch holds one of them. False, without error, when the tick is gone (cleaned up) or
// nothing was applied yet.
func Passed(ctx context.Context, prov pg.DB, queueName, point string, applied change.Position) (bool, error) {
	if applied.Tick == 0 {
		return false, nil
	}
	copied, err := change.ParseSnapshot(point)
	if err != nil {
		return false, err
	}
	text, ok, err := queue.TickSnapshot(ctx, prov, queueName, applied.Tick)
	if err != nil || !ok {
		return false, err
	}
	end, err := change.ParseSnapshot(text)
	if err != nil {
		return false, fmt.Errorf("tick %d: %w", applied.Tick, err)
	}
	return copied.CaughtUp(end), nil
}
