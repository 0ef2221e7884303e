package ticker

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// queueProvider is the provider of a database loop: the queue package over its connection.
type queueProvider struct{ conn *pgx.Conn }

var _ provider = queueProvider{}

func openQueue(conn *pgx.Conn) provider { return queueProvider{conn} }

func (p queueProvider) Installed(ctx context.Context) (bool, error) {
	v, err := migrate.Version(ctx, p.conn, migrate.Provider)
	return v > 0, err
}

func (p queueProvider) Queues(ctx context.Context) ([]queueInfo, error) {
	infos, err := queue.GetQueueInfo(ctx, p.conn)
	if err != nil {
		return nil, err
	}
	// A logical queue has no ticks: its subscriptions stream from replication slots.
	logical, err := queue.LogicalQueues(ctx, p.conn)
	if err != nil {
		return nil, err
	}
	out := make([]queueInfo, 0, len(infos))
	for _, qi := range infos {
		if logical[qi.Name] {
			continue
		}
		since := qi.TickerLag
		if qi.LastTick == 0 {
			since = -1
		}
		out = append(out, queueInfo{Name: qi.Name, Pending: qi.PendingEvents, SinceTick: since, MaxLag: qi.TickerMaxLag})
	}
	return out, nil
}

func (p queueProvider) Tick(ctx context.Context, queues []string) ([]tickResult, error) {
	ticks, err := queue.TickQueues(ctx, p.conn, queues)
	if err != nil {
		return nil, err
	}
	out := make([]tickResult, len(ticks))
	for i, tk := range ticks {
		out[i] = tickResult{Queue: tk.Queue, TickID: tk.TickID, Time: tk.Time}
	}
	return out, nil
}

func (p queueProvider) RotateTables(ctx context.Context, q string) (bool, error) {
	return queue.RotateTables(ctx, p.conn, q)
}

func (p queueProvider) RetryEvents(ctx context.Context) (int, error) {
	return queue.RetryEvents(ctx, p.conn)
}

func (p queueProvider) CleanupTicks(ctx context.Context, q string) (int, error) {
	return queue.CleanupTicks(ctx, p.conn, q)
}

func (p queueProvider) TablesToVacuum(ctx context.Context) ([]string, error) {
	return queue.TablesToVacuum(ctx, p.conn)
}

// Vacuum runs VACUUM on a table TablesToVacuum named (quoted and schema-qualified by its
// contract), one statement through the extended protocol, outside any transaction block, as
// VACUUM requires.
func (p queueProvider) Vacuum(ctx context.Context, table string) error {
	if _, err := pg.Exec(ctx, p.conn.PgConn(), "VACUUM "+table); err != nil {
		return fmt.Errorf("vacuum %s: %w", table, err)
	}
	return nil
}

func (p queueProvider) CaptureGaps(ctx context.Context) ([]queue.CaptureGap, error) {
	return queue.CaptureGaps(ctx, p.conn)
}

func (p queueProvider) AdoptChildren(ctx context.Context) ([]queue.Adopted, error) {
	return queue.AdoptChildren(ctx, p.conn)
}
