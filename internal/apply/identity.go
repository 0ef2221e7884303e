package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/target"
)

// DefaultConsumer is the consumer name a target gives its subscriptions when none is chosen:
// skiff@<database>/<target id>, the id made once by `skiff init target` (skiff.target). It
// names the target database whatever the connection string that reached it.
func DefaultConsumer(ctx context.Context, conn *pgx.Conn) (string, error) {
	db, id, err := target.Identity(ctx, conn)
	if err != nil {
		return "", fmt.Errorf("read the target's identity (skiff.target; skiff init target installs it): %w", err)
	}
	return "skiff@" + db + "/" + id, nil
}

// ErrAmbiguous is returned by FindConsumer when the target holds several subscriptions of the
// queue (from providers whose queues share a name) and none is the default one: the caller
// names the consumer.
var ErrAmbiguous = errors.New("several subscriptions of the queue on this target")

// FindConsumer returns the consumer of the target's subscription to a queue, for a command
// given no consumer name. The subscription is looked up by queue, so that its name is the
// same however the target's connection string is spelt, and a name an earlier skiff derived
// from that spelling (skiff@host:port/db) keeps working. found is false when the target has no
// subscription of the queue: name is then DefaultConsumer. With several (queues of one name
// on several providers), the one the provider knows wins (provider, when not nil, lists the
// consumers the provider has registered for the queue: a subscription's identity is its
// queue, its consumer and the provider that knows that consumer), then the default one, then
// legacy (the name an earlier skiff would derive from this connection string, "" for none);
// otherwise ErrAmbiguous lists them.
func FindConsumer(ctx context.Context, conn *pgx.Conn, queue, legacy string, provider func(context.Context) ([]string, error)) (name string, found bool, err error) {
	def, err := DefaultConsumer(ctx, conn)
	if err != nil {
		return "", false, err
	}
	names, err := target.Consumers(ctx, conn, queue)
	if err != nil {
		return "", false, fmt.Errorf("read the subscriptions of queue %s: %w", queue, err)
	}
	if len(names) > 1 && provider != nil {
		known, err := provider(ctx)
		if err != nil {
			return "", false, fmt.Errorf("provider: consumers of queue %s: %w", queue, err)
		}
		var mine []string
		for _, n := range names {
			if slices.Contains(known, n) {
				mine = append(mine, n)
			}
		}
		if len(mine) == 1 {
			return mine[0], true, nil
		}
	}
	switch {
	case len(names) == 0:
		return def, false, nil
	case len(names) == 1:
		return names[0], true, nil
	case slices.Contains(names, def):
		return def, true, nil
	case legacy != "" && slices.Contains(names, legacy):
		return legacy, true, nil
	}
	return "", false, fmt.Errorf("queue %s: %w: give --consumer, one of %s", queue, ErrAmbiguous, strings.Join(names, ", "))
}

// SubscriptionExists reports whether the target records a subscription of queue by consumer.
func SubscriptionExists(ctx context.Context, conn *pgx.Conn, queue, consumer string) (bool, error) {
	found, err := target.SubscriptionExists(ctx, conn, target.Key{Queue: queue, Consumer: consumer})
	if err != nil {
		return false, fmt.Errorf("read subscription %s/%s: %w", queue, consumer, err)
	}
	return found, nil
}
