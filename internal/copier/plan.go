package copier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/rowcopy"
	"github.com/skiffdb/skiff/internal/tabledef"
)

// plan is what the copy of one table reads and writes: what the table's handlers (the
// worker's: the rename to the destination, then its custom handler) make of its rows.
//
// When the handlers have an SQL form (handlers.SQLHandler: the built-in rename, columns and
// filter do), the copy is set-based: COPY (sel) TO STDOUT piped into COPY dest (cols) FROM
// STDIN. Otherwise every row is read, run through the handlers in Go as an Insert event, and
// what they return is written with COPY FROM STDIN (transform): slower, but the target holds
// exactly what replication would write.
type plan struct {
	t    Table
	h    handlers.Handler
	src  []handlers.SourceColumn
	pkey []string // the provider table's primary key
	key  []string // the key events carry (the capture's, else pkey)
	// where is the capture's row filter, "" for none.
	where string
	// sql: the handlers have an SQL form, sel (restricted to the columns dest has).
	sql bool
	sel handlers.Select
	// dest is the table truncated and written: sel's, or (Go path) where the handlers send
	// a row of NULLs, else the route's destination. Rows the Go path sends to another table
	// go there too (truncated when the copy meets it first).
	dest change.Table
	// cols are the columns written (SQL path); the destination's writable columns (Go path).
	cols []string
	// replica: the copy's target transaction runs as session_replication_role = replica, so
	// a table other tables' foreign keys reference can be emptied with DELETE.
	replica bool
	// binary: the rows are streamed in COPY's binary format (binaryFormat, decided when the
	// rows start to flow), else in its text format.
	binary bool
	// freeze: the rows are written with COPY FREEZE (the destination was truncated in the
	// copy's transaction; one stream only).
	freeze bool
	// keyRange, set on a split copy's range, is the range's condition over the key (pipe
	// adds it to sel's).
	keyRange string
}

// newPlan reads the source table and the capture, builds the table's handlers and decides
// how the table is copied.
func newPlan(ctx context.Context, cfg Config, prov, tgt *pgx.Conn, t Table) (*plan, error) {
	reg := cfg.Registry
	if reg == nil {
		reg = handlers.NewRegistry()
	}
	h, err := reg.ForRoute(change.Route{Source: t.Source, Dest: t.Dest, Handler: t.Handler, Config: t.Config})
	if err != nil {
		return nil, err
	}
	p := &plan{t: t, h: h}
	if p.src, p.pkey, err = sourceColumns(ctx, prov, t.Source); err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	if err := p.capture(ctx, cfg, prov, tgt); err != nil {
		return nil, err
	}
	return p, nil
}

// capture reads the capture's filter and key (again inside the copy's snapshot, where the
// filter that counts is read) and works out the rows to copy and the columns written. The
// destination must not change between two calls: the first one's was truncated.
func (p *plan) capture(ctx context.Context, cfg Config, prov, tgt *pgx.Conn) error {
	var c Captured
	if cfg.Capture != nil {
		var err error
		if c, err = cfg.Capture(ctx, prov, p.t); err != nil {
			return fmt.Errorf("provider: capture of %s: %w", p.t.Source, err)
		}
	}
	p.where, p.key = c.Where, c.Key
	if len(p.key) == 0 {
		p.key = p.pkey
	}
	sel := handlers.NewSelect(p.t.Source, p.src, p.key)
	sel.Only = c.Only
	if p.where != "" {
		sel.Where = append(sel.Where, p.where)
	}
	sel, ok, err := handlers.SelectOf(p.h, sel)
	if err != nil {
		return fmt.Errorf("handler of %s: %w", p.t.Source, err)
	}
	dest := sel.Table
	if !ok {
		dest = p.probe()
	}
	if p.dest != (change.Table{}) && dest != p.dest {
		return fmt.Errorf("the handlers of %s changed its destination from %s to %s during the copy", p.t.Source, p.dest, dest)
	}
	p.sql, p.sel, p.dest = ok, sel, dest
	return p.destColumns(ctx, tgt)
}

// probe returns the table the handlers send a row of NULLs to (as skiff subscribe checks the
// target), or the route's destination when they fail on it. A partition handler's children
// are not probed: the destination is the table it routes from.
func (p *plan) probe() change.Table {
	ev := change.Event{Op: change.Insert, Table: p.t.Source, Columns: p.names(), Key: p.key, Values: make([]change.Value, len(p.src))}
	evs, err := handlers.Run(handlers.WithoutRouting(p.h), &ev, nil)
	if err == nil && len(evs) > 0 {
		ev = evs[0] // a Splitter's first row; else where the row went, dropped or not
	}
	if err != nil || ev.Table == (change.Table{}) {
		return p.t.Dest
	}
	return ev.Table
}

// names returns the source's column names.
func (p *plan) names() []string {
	out := make([]string, len(p.src))
	for i, c := range p.src {
		out[i] = c.Name
	}
	return out
}

// destColumns restricts the plan to the columns the destination has (by name, leaving out
// its generated columns), as the copy always did: a column the target lacks is not copied.
func (p *plan) destColumns(ctx context.Context, tgt *pgx.Conn) error {
	have, err := columns(ctx, tgt, p.dest, pg.ServerVersion(tgt) >= 120000)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if !p.sql {
		p.cols = have
		return nil
	}
	kept := p.sel.Columns[:0:0]
	for _, c := range p.sel.Columns {
		if slices.Contains(have, c.Name) {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		return fmt.Errorf("no column of %s exists in %s (columns after handlers: %s)", p.t.Source, p.dest, quoteList(p.sel.ColumnNames()))
	}
	p.sel.Columns = kept
	p.cols = p.sel.ColumnNames()
	return nil
}

// sourceColumns reads a provider table's live columns (attnum order) with their types and
// output functions, and its primary key.
func sourceColumns(ctx context.Context, conn *pgx.Conn, t change.Table) ([]handlers.SourceColumn, []string, error) {
	oid, err := catalog.Lookup(ctx, conn, change.Table{Schema: schemaOf(t), Name: t.Name}, "")
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("table %s does not exist", t)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("columns of %s: %w", t, err)
	}
	live, err := catalog.Columns(ctx, conn, oid)
	if err != nil {
		return nil, nil, fmt.Errorf("columns of %s: %w", t, err)
	}
	var cols []handlers.SourceColumn
	var key []string
	for _, c := range live {
		cols = append(cols, handlers.SourceColumn{Name: c.Name, Type: c.Base.Name, Output: c.Output})
		if c.Key > 0 {
			key = append(key, c.Name)
		}
	}
	if len(cols) == 0 {
		return nil, nil, fmt.Errorf("table %s does not exist", t)
	}
	return cols, key, nil
}

// quoteList quotes names and joins them with commas.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = change.QuoteIdent(n)
	}
	return strings.Join(q, ", ")
}

// transform copies a table whose handlers have no SQL form (internal/rowcopy): every row the
// capture queues, in its text form, is handed to the handlers as an Insert event and what
// they keep is written with COPY FROM STDIN into the table they send it to. A table other
// than dest met on the way is emptied first, in the copy's transaction (TRUNCATE, or DELETE
// when other tables' foreign keys reference it).
func (p *plan) transform(ctx context.Context, prov *pgx.Conn, ttx pgx.Tx, tgt *pgx.Conn, st *tableProgress) error {
	_, err := rowcopy.Run(ctx, rowcopy.Config{
		Provider: prov, Source: p.t.Source, Only: p.sel.Only, Columns: p.names(), Key: p.key, Where: p.where, Handler: p.h,
		Target: ttx,
		Dest: func(ctx context.Context, t change.Table) (change.Table, []string, error) {
			if t == p.dest {
				return t, p.cols, nil
			}
			made, err := p.makeTable(ctx, ttx, t)
			if err != nil {
				return t, nil, fmt.Errorf("target: the handlers send rows of %s to %s: %w", p.t.Source, t, err)
			}
			cols, err := columns(ctx, tgt, t, pg.ServerVersion(tgt) >= 120000)
			if made {
				return t, cols, err // new, hence empty
			}
			if err != nil {
				return t, nil, fmt.Errorf("target: the handlers send rows of %s to %s: %w", p.t.Source, t, err)
			}
			// Emptied as the destination is (without its barrier and lock timeout: no batch
			// waits for this one): TRUNCATE, or DELETE as replica when foreign keys reference it.
			refs, err := referencedBy(ctx, tgt, t)
			if err != nil {
				return t, nil, fmt.Errorf("target: %w", err)
			}
			stmt := "TRUNCATE " + t.String()
			if len(refs) > 0 {
				if !p.replica {
					return t, nil, fmt.Errorf("target: the handlers send rows of %s to %s: %w", p.t.Source, t,
						&ReferencedError{Table: t, Keys: refs, Role: tgt.Config().User})
				}
				stmt = "DELETE FROM " + t.String()
			}
			if _, err := pg.Exec(ctx, ttx.Conn().PgConn(), stmt); err != nil {
				return t, nil, fmt.Errorf("target: %s: %w", stmt, err)
			}
			return t, cols, nil
		},
		Wrap: func(w io.Writer) io.Writer { return &counter{w: w, st: st} },
	})
	return err
}

// makeTable creates table t in the copy's transaction when the target lacks it and the
// handlers create it on demand (handlers.TableMaker, e.g. a partition's child). It reports
// whether it did; a missing table they do not create is an error.
func (p *plan) makeTable(ctx context.Context, ttx pgx.Tx, t change.Table) (bool, error) {
	if _, err := catalog.Lookup(ctx, ttx, t, "rpf"); !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	m, ok := p.h.(handlers.TableMaker)
	if !ok {
		return false, fmt.Errorf("table %s does not exist on the target", t)
	}
	nt, ok := m.MakeTable(p.t.Dest, t)
	if !ok {
		return false, fmt.Errorf("table %s does not exist on the target (and the handlers do not create it)", t)
	}
	return true, tabledef.CreateLike(ctx, ttx, nt.Table, nt.Like, nt.Bound)
}
