package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/consumer/source/logical"
	"github.com/skiffdb/skiff/consumer/source/trigger"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// tableManager returns the service that runs beside a queue's worker: it copies the tables
// left in state copying (resync, added tables, copies cut short) and moves caught-up tables to
// in-sync.
// streamed, when set, is the position the queue's logical stream has confirmed in this process
// (session.confirmed).
func (s *Service) tableManager(q Queue, log *slog.Logger, streamed func() (change.Position, bool)) (*copier.Manager, error) {
	app := "skiff worker copy " + q.Name
	pcfg, err := pg.ParseConfig(s.cfg.Provider, app)
	if err != nil {
		return nil, err
	}
	tcfg, err := pg.ParseConfig(s.cfg.Target, app)
	if err != nil {
		return nil, err
	}
	snaps := &tickSnapshots{cfg: pcfg, queue: q.Name, consumer: q.Consumer, streamed: streamed}
	return &copier.Manager{
		Sub: copier.Subscription{Queue: q.Name, Consumer: q.Consumer},
		Copy: copier.Config{
			Provider:    pcfg,
			Target:      tcfg,
			Parallel:    s.cfg.CopyParallel,
			Log:         log,
			Registry:    s.cfg.Registry,
			LockTimeout: s.cfg.CopyLockTimeout,
			SplitRows:   s.cfg.CopySplitRows,
			Capture:     Capture(q.Name),
			CopyPoint:   CopyPoint(q.Name),
		},
		Passed:    snaps.passed,
		Sequences: snaps.sequences,
		Interval:  s.cfg.ManagerInterval,
		Log:       log,
	}, nil
}

// Capture returns how a queue captures a table, for the copier (copier.Config.Capture): its
// --where and key, read from the provider (in the copy's own snapshot too), so that the copy
// holds the rows the capture queues and its handlers see the key events carry; and whether
// the capture covers the table's inheritance children, whose rows are then copied with it
// (else ONLY). subscribe's copies and the table manager's use it alike.
func Capture(queueName string) func(ctx context.Context, prov *pgx.Conn, t copier.Table) (copier.Captured, error) {
	return func(ctx context.Context, prov *pgx.Conn, t copier.Table) (copier.Captured, error) {
		tables, err := queue.Tables(ctx, prov, queueName)
		if err != nil {
			return copier.Captured{}, err
		}
		for _, ct := range tables {
			if ct.Table != t.Source {
				continue
			}
			if ct.WithChildren {
				// A child without its triggers in this snapshot: the copy would hold rows
				// whose later delete or TRUNCATE queues no event. Fail; the copy is retried.
				if err := queue.CheckChildren(ctx, prov, queueName, ct.Table); err != nil {
					return copier.Captured{}, fmt.Errorf("copy of %s must wait: %w", ct.Table, err)
				}
			}
			return copier.Captured{Where: ct.Where, Key: ct.Key, Only: !ct.WithChildren}, nil
		}
		return copier.Captured{}, nil
	}
}

// tickSnapshots tells whether the queue has passed a copy (trigger.Passed: tick snapshots)
// and reads sequence values, on the provider over one connection, reconnecting when it was
// lost.
type tickSnapshots struct {
	cfg      *pgx.ConnConfig
	queue    string
	consumer string // names the subscription (its slot, for a logical queue)
	// streamed is the position the logical queue's stream has confirmed in this process (nil,
	// or false: unknown).
	streamed func() (change.Position, bool)
	mu       sync.Mutex
	conn     *pgx.Conn
	// usedBy: the queue's tables that draw from each sequence, read at usedAt.
	usedBy map[change.Table][]change.Table
	usedAt time.Time
	kind   *queue.Kind // read once
}

// logicalPassed says whether a logical queue's stream has passed a copy point: applied on the
// target past it, or confirmed past it by the stream. The stream confirms only what the target
// committed, or, idle, the WAL the server has decoded when nothing is owed to the target: on a
// queue whose tables are not written after a copy, the applied position never moves, and the
// table would stay catching-up until the next write. The confirmed position is the worker's
// own stream's (logical.Source.Confirmed), else the slot's (confirmed_flush_lsn, 9.6+; before
// 9.6 the slot does not show it, so only the stream in this process can tell).
func (t *tickSnapshots) logicalPassed(ctx context.Context, point string, applied change.Position) (bool, error) {
	if ok, err := logical.PassedPoint(ctx, point, applied); err != nil || ok {
		return ok, err
	}
	if t.streamed != nil {
		if pos, ok := t.streamed(); ok {
			if ok, err := logical.PassedPoint(ctx, point, pos); err != nil || ok {
				return ok, err
			}
		}
	}
	slot, err := queue.ConsumerSlot(ctx, t.conn, t.queue, t.consumer)
	if err != nil || slot.Name == "" {
		return false, err
	}
	st, found, err := logical.ReadSlot(ctx, t.conn, slot.Name)
	if err != nil || !found {
		return false, err
	}
	return logical.PassedPoint(ctx, point, change.Position{LSN: uint64(st.ConfirmedFlush)})
}

func (t *tickSnapshots) passed(ctx context.Context, point string, applied change.Position) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.ensure(ctx); err != nil {
		return false, err
	}
	if t.kind == nil {
		k, err := queue.QueueKind(ctx, t.conn, t.queue)
		if err != nil {
			return false, err
		}
		t.kind = &k // a queue's source never changes
	}
	if t.kind.Logical() {
		return t.logicalPassed(ctx, point, applied)
	}
	return trigger.Passed(ctx, t.conn, t.queue, point, applied)
}

// CopyPoint returns the copier's copy point function for a queue (copier.Config.CopyPoint):
// the trigger source's (a txid snapshot) or the logical source's (snapshot and WAL position),
// by the queue's source. subscribe's copies and the table manager's use it alike.
func CopyPoint(queueName string) func(ctx context.Context, prov pg.DB) (string, error) {
	return func(ctx context.Context, prov pg.DB) (string, error) {
		k, err := queue.QueueKind(ctx, prov, queueName)
		if err != nil {
			return "", err
		}
		if k.Logical() {
			return logical.CopyPointNow(ctx, prov)
		}
		return trigger.CopyPoint(ctx, prov)
	}
}

// sequences reads, on the provider, the sequences the queue captures that belong on a target
// whose subscription replicates sources — those the sources draw from and those no table of
// the queue draws from — with their last values. Which sequences the queue's tables draw from
// is looked up again at most once a minute (it changes with DDL only).
func (t *tickSnapshots) sequences(ctx context.Context, sources []change.Table) ([]copier.SequenceValue, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.ensure(ctx); err != nil {
		return nil, err
	}
	seqs, err := queue.GetSequences(ctx, t.conn, t.queue)
	if err != nil {
		return nil, err
	}
	if t.usedBy == nil || time.Since(t.usedAt) > time.Minute {
		used, err := queue.SequenceUsers(ctx, t.conn, t.queue)
		if err != nil {
			return nil, err
		}
		t.usedBy, t.usedAt = used, time.Now()
	}
	var out []copier.SequenceValue
	for _, s := range seqs {
		sq := change.Table{Schema: s.Schema, Name: s.Name}
		if !queue.SequenceBelongs(t.usedBy[sq], sources) {
			continue // another subscription's table's sequence
		}
		out = append(out, copier.SequenceValue{Sequence: sq, LastValue: s.LastValue})
	}
	return out, nil
}

// ensure opens the provider connection when there is none (closed when ctx ends). The
// caller holds t.mu. The close waits for t.mu too: a pgx connection serves one goroutine, and
// closing it under a query still running (its context ended with ctx) panics in pgx.
func (t *tickSnapshots) ensure(ctx context.Context) error {
	if t.conn != nil && !t.conn.IsClosed() {
		return nil
	}
	c, err := pg.ConnectConfig(ctx, t.cfg.Copy())
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	t.conn = c
	context.AfterFunc(ctx, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.conn == c {
			t.conn = nil
		}
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(cctx)
	})
	return nil
}
