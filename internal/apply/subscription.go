package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/target"
)

// Subscription is a subscription as `skiff subscribe` records it on the target.
type Subscription struct {
	Queue, Consumer string
	Provider        string // user@host:port/db, never a password
	// Tick is the consumer's position on the provider when it registered: the Prev of its
	// first batch. 0 when unknown: the first batch is then accepted as it comes.
	Tick int64
	// SchemaMap (provider schema → target schema, `subscribe --schema-map`) is recorded with
	// the subscription, added to what it holds (target schema version 7), so that tables
	// subscribed later follow it. The routes given are already mapped.
	SchemaMap map[string]string
	// Merge is the --on-conflict mode of a merged subscription (subscribe --merge: its tables
	// are shared with other providers' subscriptions), "" for one whose tables are its own.
	// Recorded with a new subscription (target schema version 8); an existing one keeps
	// whether it is merged (ErrMergeChanged) and takes the new mode.
	Merge string
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

// ErrMergeChanged is returned by Subscribe when --merge is given for a subscription recorded
// without it, or left out for a merged one: its copies were made the other way.
var ErrMergeChanged = errors.New("the subscription was recorded with another --merge setting")

// ErrNotShared is returned by Subscribe for a destination that a merged subscription and one
// that is not merged would both write: the latter's copy (and TRUNCATE) empties the table.
var ErrNotShared = errors.New("a destination shared by several subscriptions must be merged in all of them")

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
		key := target.Key{Queue: sub.Queue, Consumer: sub.Consumer}
		id, err := target.LockSubscription(ctx, tx, key)
		if errors.Is(err, pgx.ErrNoRows) {
			res.Created = true
			id, err = target.CreateSubscription(ctx, tx, key, sub.Provider, sub.Tick)
		}
		if err != nil {
			return err
		}
		v, err := target.ReadVersion(ctx, conn)
		if err != nil {
			return err
		}
		if sub.Merge != "" && !v.HasMerge() {
			return fmt.Errorf("--merge needs the target schema at version 8 (it is at %d): run skiff init target", v)
		}
		if v.HasMerge() {
			m, err := target.MergeOf(ctx, tx, v, id)
			if err != nil {
				return err
			}
			if !res.Created && (m.Mode == "") != (sub.Merge == "") {
				return fmt.Errorf("%w (merged: %v): unsubscribe and subscribe again to change it", ErrMergeChanged, m.Mode != "")
			}
			if m.Mode != sub.Merge {
				if err := target.SetMergeMode(ctx, tx, id, sub.Merge); err != nil {
					return err
				}
			}
		}
		if len(sub.SchemaMap) > 0 {
			if err := target.SetSchemaMap(ctx, tx, id, sub.SchemaMap); err != nil {
				return err
			}
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
			others, err := target.DestSharers(ctx, tx, v, id, r.Dest)
			if err != nil {
				return err
			}
			for _, o := range others {
				switch {
				case sub.Merge != "" && o.Merge == "":
					return fmt.Errorf("table %s: %w: subscription %s/%s replicates %s into it and is not merged (its copy or a TRUNCATE would erase this provider's rows)",
						r.Dest, ErrNotShared, o.Queue, o.Consumer, o.Source)
				case sub.Merge == "" && o.Merge != "":
					return fmt.Errorf("table %s: %w: merged subscription %s/%s replicates %s into it; give --merge",
						r.Dest, ErrNotShared, o.Queue, o.Consumer, o.Source)
				case sub.Merge == "" && o.Queue == sub.Queue:
					return fmt.Errorf("table %s: %w (consumer %s replicates %s into it)", r.Dest, ErrDestTaken, o.Consumer, o.Source)
				}
			}
			// A copy backlog of the table's earlier state goes with it: a new copy holds its
			// events, and --no-copy says the destination already does.
			if err := target.DeleteBacklog(ctx, tx, id, r.Source); err != nil {
				return err
			}
			if err := target.AddTable(ctx, tx, id, r); err != nil {
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
	routes, err := target.Routes(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	out := map[change.Table]change.Route{}
	for _, r := range routes {
		out[r.Source] = r
	}
	return out, nil
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
	id, err := target.SubscriptionID(ctx, conn, target.Key{Queue: queue, Consumer: consumer})
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
		var err error
		if res.Tables, err = target.CountTables(ctx, tx, id); err != nil {
			return err
		}
		return target.DeleteSubscription(ctx, tx, id)
	})
	if err != nil {
		return nil, fmt.Errorf("remove %s from the target: %w", what, err)
	}
	return res, nil
}
