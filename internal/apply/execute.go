package apply

import (
	"context"
	"fmt"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// execute runs the SQL of an Execute event (skiff execute) in the batch's transaction, at its
// place in the stream: the changes pending before it are written first, and the tables are
// read again from the catalog afterwards (the SQL may have changed their columns). The
// statements are cut as the provider cut them and sent one at a time, under the provider
// session's search_path; the applier's own (pg_catalog, pg_temp) is set again after them.
func (w *writer) execute(ctx context.Context, ev *change.Event) error {
	if err := w.flushAll(ctx); err != nil {
		return err
	}
	x := ev.Exec
	stmts, err := pg.SplitStatements(x.SQL)
	if err != nil {
		return &Error{EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("%s: %w", x.Name, err)}
	}
	if _, err := w.tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, true)`, x.SearchPath); err != nil {
		return &Error{EventID: ev.ID, Op: ev.Op, Err: fmt.Errorf("set search_path: %w", err)}
	}
	for _, st := range stmts {
		if _, err := pg.Exec(ctx, w.tx.Conn().PgConn(), st.SQL); err != nil {
			return &Error{EventID: ev.ID, Op: ev.Op, SQL: st.SQL, Err: fmt.Errorf("%s line %d: %w", x.Name, st.ErrorLine(err), err)}
		}
	}
	if _, err := w.tx.Exec(ctx, `SET LOCAL search_path = pg_catalog, pg_temp`); err != nil {
		return &Error{EventID: ev.ID, Op: ev.Op, Err: err}
	}
	// Every table is loaded again at its next event; the runs (all flushed) go with them.
	clear(w.a.tables)
	clear(w.runs)
	clear(w.missed)
	clear(w.deleted)
	return nil
}
