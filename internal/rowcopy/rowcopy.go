// Package rowcopy runs a provider table's rows through a handler in Go and writes what it
// returns into a target transaction with COPY FROM STDIN. The initial copy (internal/copier)
// and skiff compare (internal/compare) use it for a table whose handlers have no SQL form
// (handlers.SQLHandler): slower than a set-based copy, but the rows written are exactly what
// replication writes, event by event, for the same rows.
package rowcopy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
)

// Config says what to read, how to transform it and where to write it.
type Config struct {
	// Provider is the connection the rows are read on (inside the caller's transaction and
	// snapshot, if any). Its session decides the text of the values (TimeZone, DateStyle…);
	// the capture trigger's events are UTC and ISO.
	Provider *pgx.Conn
	// Source is the provider table; Columns its columns as events carry them (all live
	// columns, attnum order) and Key its key columns.
	Source  change.Table
	Columns []string
	Key     []string
	// Where is a boolean SQL condition over the table's columns (a NULL counts as false), ""
	// for every row: the capture's --where.
	Where string
	// Only reads Source without its inheritance children (FROM ONLY): its capture covers the
	// table's own rows only.
	Only bool
	// Handler is the table's handler chain (handlers.Registry.ForRoute).
	Handler handlers.Handler
	// Target is the transaction the rows are written in.
	Target pgx.Tx
	// Dest is called once for each table the handler sends rows to, before any of them is
	// written (no COPY is in progress on Target then): it returns the table to write them into
	// and its writable columns. Columns of a row that table lacks are not written.
	Dest func(ctx context.Context, t change.Table) (into change.Table, columns []string, err error)
	// Wrap, when set, wraps each COPY's data stream (e.g. to count rows and bytes).
	Wrap func(io.Writer) io.Writer
}

// Stats counts what Run did.
type Stats struct {
	Read, Written int64
}

// Run reads the rows (each value as its type's output function prints it, which is what the
// capture trigger's events carry), hands each one to the handler as an Insert event (Split
// when it is a handlers.Splitter: a row may become several) and writes the rows it keeps, one COPY per run of rows of one table and column layout (a single
// COPY when every row goes to one table with the same columns). A handler error names the row
// by its key; so does a handler that turns the row into another operation.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	var st Stats
	quoted := make([]string, len(cfg.Columns))
	for i, n := range cfg.Columns {
		quoted[i] = change.QuoteIdent(n)
	}
	from := cfg.Source.String()
	if cfg.Only {
		from = "ONLY " + from
	}
	q := "SELECT " + strings.Join(quoted, ", ") + " FROM " + from
	if cfg.Where != "" {
		q += " WHERE coalesce((" + cfg.Where + "), false)"
	}
	w := &writer{cfg: cfg, dests: map[change.Table]dest{}, shapes: map[string]*shape{}}
	defer w.abort()
	// Text results: every value as its type's output function prints it.
	rows, err := cfg.Provider.Query(ctx, q, pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		return st, fmt.Errorf("provider: %s: %w", q, err)
	}
	defer rows.Close()
	var evs []change.Event // what the handler makes of a row (one, none or several)
	for rows.Next() {
		st.Read++
		raw := rows.RawValues()
		vals := make([]change.Value, len(raw))
		for i, r := range raw {
			if r != nil {
				vals[i] = change.Text(string(r))
			}
		}
		ev := change.Event{Op: change.Insert, Table: cfg.Source, Columns: cfg.Columns, Key: cfg.Key, Values: vals}
		if evs, err = handlers.Run(cfg.Handler, &ev, evs[:0]); err != nil {
			return st, fmt.Errorf("handler of table %s, row %s: %w", cfg.Source, KeyText(cfg.Columns, cfg.Key, vals), err)
		}
		for i := range evs {
			if evs[i].Op != change.Insert {
				return st, fmt.Errorf("handler of table %s, row %s: it made a %s of an INSERT, a row was expected", cfg.Source, KeyText(cfg.Columns, cfg.Key, vals), evs[i].Op)
			}
			if err := w.write(ctx, &evs[i]); err != nil {
				return st, fmt.Errorf("row %s of %s: %w", KeyText(cfg.Columns, cfg.Key, vals), cfg.Source, err)
			}
			st.Written++
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("provider: %s: %w", q, err)
	}
	return st, w.finish()
}

// KeyText names a row by its key values, for messages: (k1=v1, k2=v2).
func KeyText(cols, key []string, vals []change.Value) string {
	parts := make([]string, 0, len(key))
	for _, k := range key {
		if i := slices.Index(cols, k); i >= 0 && i < len(vals) {
			v := "NULL"
			if vals[i].Valid {
				v = vals[i].Text
			}
			parts = append(parts, k+"="+v)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// dest is where the rows of a table the handler sends them to are written.
type dest struct {
	into change.Table
	cols []string
}

// layout identifies a row layout by the handler's column slice, which the rows of one layout
// usually share.
type layout struct {
	t    change.Table
	cols *string
	n    int
}

// shape is a layout's COPY: which of the event's values it writes, and the statement.
type shape struct {
	write []int
	sql   string
}

// writer writes rows into the target transaction, one COPY FROM STDIN at a time, fed
// through a pipe.
type writer struct {
	cfg    Config
	dests  map[change.Table]dest
	shapes map[string]*shape // by table and column names
	last   layout            // the layout of the previous row…
	lastS  *shape            // …and its shape

	cur  *shape
	pw   *io.PipeWriter
	bw   *bufio.Writer
	done chan error
	buf  []byte
}

func (w *writer) write(ctx context.Context, ev *change.Event) error {
	if len(ev.Columns) == 0 || len(ev.Values) != len(ev.Columns) {
		return fmt.Errorf("the handler returned %d values for %d columns of %s", len(ev.Values), len(ev.Columns), ev.Table)
	}
	k := layout{t: ev.Table, cols: &ev.Columns[0], n: len(ev.Columns)}
	s := w.lastS
	if k != w.last || s == nil {
		// A handler may hand out new column slices: look the layout up by its names.
		sig := ev.Table.String() + "\x00" + strings.Join(ev.Columns, "\x00")
		if s = w.shapes[sig]; s == nil {
			var err error
			if s, err = w.shape(ctx, ev); err != nil {
				return err
			}
			w.shapes[sig] = s
		}
		w.last, w.lastS = k, s
	}
	if s != w.cur {
		if err := w.finish(); err != nil {
			return err
		}
		w.start(ctx, s)
	}
	w.buf = w.buf[:0]
	for j, i := range s.write {
		if j > 0 {
			w.buf = append(w.buf, '\t')
		}
		w.buf = AppendText(w.buf, ev.Values[i])
	}
	w.buf = append(w.buf, '\n')
	if _, err := w.bw.Write(w.buf); err != nil {
		return w.fail(err)
	}
	return nil
}

// shape works out the COPY of a new layout, asking Config.Dest about a table met for the
// first time.
func (w *writer) shape(ctx context.Context, ev *change.Event) (*shape, error) {
	d, ok := w.dests[ev.Table]
	if !ok {
		if err := w.finish(); err != nil {
			return nil, err
		}
		var err error
		if d.into, d.cols, err = w.cfg.Dest(ctx, ev.Table); err != nil {
			return nil, err
		}
		w.dests[ev.Table] = d
	}
	s := &shape{}
	var cols []string
	for i, c := range ev.Columns {
		if slices.Contains(d.cols, c) {
			s.write = append(s.write, i)
			cols = append(cols, c)
		}
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("no column the handler returns (%s) exists in %s", strings.Join(ev.Columns, ", "), ev.Table)
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = change.QuoteIdent(c)
	}
	s.sql = "COPY " + d.into.String() + " (" + strings.Join(quoted, ", ") + ") FROM STDIN"
	return s, nil
}

// start begins a COPY FROM STDIN of shape s, fed by w.bw.
func (w *writer) start(ctx context.Context, s *shape) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := w.cfg.Target.Conn().PgConn().CopyFrom(ctx, pr, s.sql)
		if err != nil {
			err = fmt.Errorf("target: %s: %w", s.sql, err)
		}
		pr.CloseWithError(err) // a write blocked on the pipe gets the error
		done <- err
	}()
	var out io.Writer = pw
	if w.cfg.Wrap != nil {
		out = w.cfg.Wrap(pw)
	}
	w.cur, w.pw, w.done = s, pw, done
	w.bw = bufio.NewWriterSize(out, 256<<10)
}

// finish ends the COPY in progress, if any, and returns its error.
func (w *writer) finish() error {
	if w.cur == nil {
		return nil
	}
	err := w.bw.Flush()
	w.pw.CloseWithError(err) // nil: end of data
	cerr := <-w.done
	w.cur, w.pw, w.bw = nil, nil, nil
	if cerr != nil {
		return cerr
	}
	return err
}

// fail ends the COPY in progress after a failed write and returns the COPY's error, which
// says why the write failed.
func (w *writer) fail(err error) error {
	w.pw.CloseWithError(err)
	cerr := <-w.done
	w.cur, w.pw, w.bw = nil, nil, nil
	if cerr != nil {
		return cerr
	}
	return err
}

// abort ends a COPY an error left in progress (the caller rolls its transaction back).
func (w *writer) abort() {
	if w.cur != nil {
		_ = w.fail(errors.New("copy abandoned"))
	}
}

// AppendText appends a value in COPY's text format: \N for NULL; backslash, tab, newline and
// carriage return escaped.
func AppendText(b []byte, v change.Value) []byte {
	if !v.Valid {
		return append(b, `\N`...)
	}
	for i := 0; i < len(v.Text); i++ {
		switch c := v.Text[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '\t':
			b = append(b, `\t`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		default:
			b = append(b, c)
		}
	}
	return b
}
