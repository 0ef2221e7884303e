package skiffcli

import (
	"context"
	"io"
	"log/slog"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/copier"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/worker"
)

// terminal returns w when it is a terminal (for the copy's live progress display), else nil.
func terminal(w io.Writer) io.Writer {
	if isTerminal(w) {
		return w
	}
	return nil
}

// copyConfig is the copier configuration shared by subscribe and the worker's table manager.
func copyConfig(providerURL, targetURL, app string, parallel int, log *slog.Logger, display io.Writer, reg *handlers.Registry) (copier.Config, error) {
	pcfg, err := pg.ParseConfig(providerURL, app)
	if err != nil {
		return copier.Config{}, err
	}
	tcfg, err := pg.ParseConfig(targetURL, app)
	if err != nil {
		return copier.Config{}, err
	}
	return copier.Config{Provider: pcfg, Target: tcfg, Parallel: parallel, Log: log, Display: display, Registry: reg}, nil
}

// copyRoutes copies the subscription's tables in routes (state copying on the target) and
// records each one's copy point and completion there. Tables another process is already copying
// are left to it.
func copyRoutes(ctx context.Context, cfg copier.Config, sub copier.Subscription, routes []change.Route) ([]copier.Result, error) {
	tables := make([]copier.Table, 0, len(routes))
	for _, r := range routes {
		tables = append(tables, copier.Table{Source: r.Source, Dest: r.Dest, Handler: r.Handler, Config: r.Config})
	}
	cfg.LockKey = func(t copier.Table) int32 { return sub.TableLockKey(t.Source) }
	cfg.Capture = worker.Capture(sub.Queue)
	cfg.CopyPoint = worker.CopyPoint(sub.Queue)
	cfg.Hooks = sub.Hooks()
	return copier.Copy(ctx, cfg, tables)
}

func withCapture(cfg copier.Config, queueName string) copier.Config {
	cfg.Capture = worker.Capture(queueName)
	return cfg
}
