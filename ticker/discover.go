package ticker

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
)

// discover serves every database of entry's server (Config.AllDatabases): every Rescan it
// lists the server's databases and starts a loop for each one not served yet. A loop ends by
// itself when its database has no provider schema (it is looked at again at the next rescan)
// and is stopped when its database disappears from the list.
func (t *Ticker) discover(ctx context.Context, entry *pgx.ConnConfig) error {
	server := pg.Describe(entry)
	log := t.log.With("server", server)
	type loop struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	loops := map[string]*loop{} // by database name
	var wg sync.WaitGroup
	defer func() {
		for _, l := range loops {
			l.cancel()
		}
		wg.Wait()
	}()
	failing := false
	for {
		names, err := t.listDatabases(entry)
		switch {
		case err != nil:
			t.m.errors.WithLabelValues(server, "discover").Inc()
			if !failing {
				log.Warn("cannot list the server's databases; retrying at the next rescan", "error", err, "retry_in", t.cfg.Rescan)
				failing = true
			}
		default:
			if failing {
				log.Info("listing the server's databases works again")
				failing = false
			}
			present := map[string]bool{}
			for _, name := range names {
				present[name] = true
				if l, ok := loops[name]; ok {
					select {
					case <-l.done: // ended (no schema): look again below
						delete(loops, name)
					default:
						continue
					}
				}
				pc := entry.Copy()
				pc.Database = name
				d := t.newDatabase(pc, true)
				if !t.claim(d.name) {
					continue
				}
				lctx, cancel := context.WithCancel(ctx)
				l := &loop{cancel: cancel, done: make(chan struct{})}
				loops[name] = l
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer close(l.done)
					defer t.release(d.name)
					_ = d.run(lctx)
				}()
			}
			for name, l := range loops {
				if !present[name] {
					log.Info("database gone", "database", name)
					l.cancel()
					delete(loops, name)
				}
			}
		}
		if !sleep(ctx, t.cfg.Rescan) {
			return nil
		}
	}
}

// listDatabases returns the names of the server's databases that accept connections.
func (t *Ticker) listDatabases(entry *pgx.ConnConfig) ([]string, error) {
	ctx, cancel := t.stepCtx(t.cfg.QueryTimeout)
	defer cancel()
	conn, err := pg.ConnectConfig(ctx, entry.Copy())
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return names, nil
}
