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
// existing subscription keeps its position; the given routes replace the states (and drop the
// copy backlogs) of those tables (other tables keep theirs). It reports whether the subscription was created.
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
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record subscription %s/%s on the target: %w", sub.Queue, sub.Consumer, err)
	}
	return created, nil
}
