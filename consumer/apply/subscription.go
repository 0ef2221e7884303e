package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/change"
)

// Subscription is a subscription as `skiff subscribe` records it on the target.
type Subscription struct {
	Queue, Consumer string
	Provider        string // user@host:port/db, never a password
	// Tick is the consumer's position on the provider when it registered: the Prev of its
	// first batch. 0 when unknown: the first batch is then accepted as it comes.
	Tick int64
}

// Subscribe records a subscription and its tables on the target, in one transaction. An
// existing subscription keeps its position; the given routes replace the states of those
// tables (other tables keep theirs). It reports whether the subscription was created.
func Subscribe(ctx context.Context, conn *pgx.Conn, sub Subscription, routes []change.Route) (created bool, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var id int32
		err := tx.QueryRow(ctx, `SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`,
			sub.Queue, sub.Consumer).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			created = true
			err = tx.QueryRow(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider, tick) VALUES ($1, $2, $3, $4) RETURNING sub_id`,
				sub.Queue, sub.Consumer, sub.Provider, nullable(sub.Tick)).Scan(&id)
		}
		if err != nil {
			return err
		}
		for _, r := range routes {
			if _, err := tx.Exec(ctx, `DELETE FROM skiff.table_state WHERE sub_id = $1 AND source_schema = $2 AND source_name = $3`,
				id, r.Source.Schema, r.Source.Name); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO skiff.table_state
				(sub_id, source_schema, source_name, dest_schema, dest_name, state, handler, handler_config, copy_snapshot)
				VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), NULLIF($9, ''))`,
				id, r.Source.Schema, r.Source.Name, r.Dest.Schema, r.Dest.Name, string(r.State), r.Handler, r.Config, r.CopySnapshot); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record subscription %s/%s on the target: %w", sub.Queue, sub.Consumer, err)
	}
	return created, nil
}

// Unsubscribed says what Unsubscribe found and removed on the target.
type Unsubscribed struct {
	// Found is false when the target had no such subscription (nothing was removed there).
	Found bool
	// Tables is the number of table states removed with it.
	Tables int
	// Holder describes the worker that held the subscription when force took it anyway; ""
	// when none did.
	Holder string
}

// Unsubscribe removes a subscription from the target: its row, and with it (ON DELETE
// CASCADE) its table states, copy backlog and batch log. It first takes the subscription's
// worker lock (pg_try_advisory_lock(LockClass, sub_id)); when a worker holds it, it fails with
// ErrLocked naming the holder, unless force (that worker's next batch then fails). While it
// holds the lock — so no worker starts on the subscription meanwhile — it calls before (e.g.
// unregistering the consumer on the provider; nil for nothing), which also runs when the
// target has no such subscription, then deletes. The lock is released before it returns.
func Unsubscribe(ctx context.Context, conn *pgx.Conn, queue, consumer string, force bool, before func(ctx context.Context) error) (*Unsubscribed, error) {
	what := fmt.Sprintf("subscription %s/%s", queue, consumer)
	res := &Unsubscribed{}
	var id int32
	err := conn.QueryRow(ctx, `SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2`, queue, consumer).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if before != nil {
			return res, before(ctx)
		}
		return res, nil
	case err != nil:
		return nil, fmt.Errorf("read %s on the target: %w", what, err)
	}
	res.Found = true
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, int32(LockClass), id).Scan(&locked); err != nil {
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	if locked {
		defer func() {
			_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1::int4, $2::int4)`, int32(LockClass), id)
		}()
	} else {
		holder := lockHolder(ctx, conn, id)
		if !force {
			return nil, fmt.Errorf("%s: %w (%s): stop that worker first, or give --force", what, ErrLocked, holder)
		}
		res.Holder = holder
	}
	if before != nil {
		if err := before(ctx); err != nil {
			return nil, err
		}
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM skiff.table_state WHERE sub_id = $1`, id).Scan(&res.Tables); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM skiff.subscription WHERE sub_id = $1`, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("remove %s from the target: %w", what, err)
	}
	return res, nil
}
