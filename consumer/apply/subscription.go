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
