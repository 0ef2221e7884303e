package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
)

// Subscription is a subscription as `skiff subscribe` records it on the target.
type Subscription struct {
	Queue, Consumer string
	Provider        string // user@host:port/db, never a password
	// Tick is the consumer's position on the provider when it registered: the Prev of its
	// first batch. 0 when unknown: the first batch is then accepted as it comes.
	Tick int64
}

// Subscribed is what Subscribe recorded.
type Subscribed struct {
	// Created is set when the subscription is new.
	Created bool
	// Routes are the given routes as the target records them, in the order given: a table
	// the subscription already had keeps its state and copy snapshot.
	Routes []change.Route
	// Kept lists the source tables the subscription already had (their state was kept).
	Kept []change.Table
}

// ErrRouteChanged is returned by Subscribe for a table already subscribed with another
// destination or handler: changing them needs the table copied again, which Subscribe does
// not do under a running subscription.
var ErrRouteChanged = errors.New("table is already subscribed with another destination or handler")

// ErrDestTaken is returned by Subscribe for a destination table that another subscription
// of the same queue on the target already writes: the two would copy and apply the same
// rows into it.
var ErrDestTaken = errors.New("destination is written by another subscription of the queue")

// Subscribe records a subscription and its tables on the target, in one transaction. An
// existing subscription keeps its position, and each of its tables keeps its state (a second
// subscribe resumes: it never puts a table back to copying under a running worker; table
// resync does that); a given route for such a table must be the same (ErrRouteChanged). New
// tables are recorded with their route's state. A destination another subscription of the
// same queue writes is refused (ErrDestTaken).
func Subscribe(ctx context.Context, conn *pgx.Conn, sub Subscription, routes []change.Route) (Subscribed, error) {
	var res Subscribed
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		res = Subscribed{}
		var id int32
		err := tx.QueryRow(ctx, `SELECT sub_id FROM skiff.subscription WHERE queue = $1 AND consumer = $2 FOR UPDATE`,
			sub.Queue, sub.Consumer).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			res.Created = true
			err = tx.QueryRow(ctx, `INSERT INTO skiff.subscription (queue, consumer, provider, tick) VALUES ($1, $2, $3, $4) RETURNING sub_id`,
				sub.Queue, sub.Consumer, sub.Provider, nullable(sub.Tick)).Scan(&id)
		}
		if err != nil {
			return err
		}
		have, err := subscribedRoutes(ctx, tx, id)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if old, ok := have[r.Source]; ok {
				if old.Dest != r.Dest || old.Handler != r.Handler || old.Config != r.Config {
					return fmt.Errorf("table %s goes to %s (handler %q): %w; resync it or subscribe again under another consumer",
						r.Source, old.Dest, old.Handler, ErrRouteChanged)
				}
				res.Routes = append(res.Routes, old)
				res.Kept = append(res.Kept, r.Source)
				continue
			}
			var other, src string
			err := tx.QueryRow(ctx, `SELECT s.consumer, quote_ident(t.source_schema) || '.' || quote_ident(t.source_name)
				FROM skiff.table_state t JOIN skiff.subscription s ON s.sub_id = t.sub_id
				WHERE s.queue = $1 AND t.sub_id <> $2 AND t.dest_schema = $3 AND t.dest_name = $4 LIMIT 1`,
				sub.Queue, id, r.Dest.Schema, r.Dest.Name).Scan(&other, &src)
			switch {
			case err == nil:
				return fmt.Errorf("table %s: %w (consumer %s replicates %s into it)", r.Dest, ErrDestTaken, other, src)
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
			// A copy backlog of the table's earlier state goes with it: a new copy holds its
			// events, and --no-copy says the destination already does.
			if _, err := tx.Exec(ctx, `DELETE FROM skiff.copy_backlog WHERE sub_id = $1 AND source_schema = $2 AND source_name = $3`,
				id, r.Source.Schema, r.Source.Name); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO skiff.table_state
				(sub_id, source_schema, source_name, dest_schema, dest_name, state, handler, handler_config, copy_snapshot)
				VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), NULLIF($9, ''))`,
				id, r.Source.Schema, r.Source.Name, r.Dest.Schema, r.Dest.Name, string(r.State), r.Handler, r.Config, r.CopySnapshot); err != nil {
				return err
			}
			res.Routes = append(res.Routes, r)
		}
		return nil
	})
	if err != nil {
		return Subscribed{}, fmt.Errorf("record subscription %s/%s on the target: %w", sub.Queue, sub.Consumer, err)
	}
	return res, nil
}

// subscribedRoutes reads a subscription's tables, by source.
func subscribedRoutes(ctx context.Context, tx pgx.Tx, id int32) (map[change.Table]change.Route, error) {
	rows, err := tx.Query(ctx, `SELECT source_schema, source_name, dest_schema, dest_name, state,
		coalesce(handler, ''), coalesce(handler_config, ''), coalesce(copy_snapshot, '')
		FROM skiff.table_state WHERE sub_id = $1`, id)
	if err != nil {
		return nil, err
	}
	out := map[change.Table]change.Route{}
	for rows.Next() {
		var r change.Route
		var state string
		if err := rows.Scan(&r.Source.Schema, &r.Source.Name, &r.Dest.Schema, &r.Dest.Name, &state, &r.Handler, &r.Config, &r.CopySnapshot); err != nil {
			rows.Close()
			return nil, err
		}
		r.State = change.TableState(state)
		out[r.Source] = r
	}
	return out, rows.Err()
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
