// Package copier is skiff's initial copy: it copies provider tables to target tables with COPY
// streamed straight through (provider COPY TO STDOUT piped into target COPY FROM STDIN, never a
// whole table in memory), each table under one provider snapshot, at a copy point that it
// hands back, several tables in parallel, with a progress display. It also keeps the tables'
// states on the target (Subscription) and runs beside a worker to copy tables left in state
// copying and promote caught-up ones (Manager). What a copy point is belongs to the source
// (Config.CopyPoint writes it, Manager.Passed and the source's consumer.CopyPoints read it;
// the trigger queue's is a txid snapshot, consumer/source/trigger); the worker's per-table
// filter itself is consumer.tableRoute.wants.
//
// The copy of one table (tableCopy, one method per step) uses three connections: the provider
// one that reads the rows, the target one that writes them, and a side connection to the
// target on which the hooks' barrier, copy point, progress and failure records commit on their
// own while the copy's target transaction is open:
//  1. target (begin, empty): BEGIN (session_replication_role = replica when the role may: the
//     destination's triggers and foreign keys do not fire); Hooks.Barrier (no worker batch in
//     flight); LOCK the destination against writers (until the copy commits), waiting at most
//     Config.LockTimeout; release the barrier; TRUNCATE the destination, or DELETE its rows
//     when other tables' foreign keys reference it (TRUNCATE refuses such a table; the
//     DELETE, as replica, leaves the referencing rows alone);
//  2. provider (snapshot): BEGIN ISOLATION LEVEL REPEATABLE READ (SERIALIZABLE before 9.1),
//     READ ONLY; Config.CopyPoint, before the transaction's first query, gives the copy
//     point of the snapshot the copy reads under (the trigger queue's: txid_current_snapshot());
//  3. (publish) Hooks.Point publishes it (the caller records it on the target, in its own
//     transaction);
//  4. (copyRows) COPY (SELECT cols FROM src WHERE …) TO STDOUT → io.Pipe → COPY dest (cols)
//     FROM STDIN, the query being what the table's handlers make of its rows
//     (handlers.Select); or, when a handler has no SQL form, every row read and run through
//     the handlers in Go, the rows they return written with COPY FROM STDIN (see plan);
//  5. (finish) Hooks.Copied runs in the target transaction (the caller moves the table to
//     catching-up), then the target commits. Any failure rolls the whole table back: it
//     starts over.
package copier

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// Table is one table to copy.
type Table struct {
	Source change.Table
	Dest   change.Table
	// Handler and Config name the table's custom handler and its JSON configuration
	// (change.Route's), "" for none: the copy writes what the worker's handlers make of the
	// rows (Config.Registry builds them).
	Handler, Config string
}

// String names the table for messages.
func (t Table) String() string {
	if t.Source == t.Dest {
		return t.Source.String()
	}
	return t.Source.String() + " → " + t.Dest.String()
}

// Hooks let the caller record a table's progress on the target without the copier knowing the
// target schema. Any may be nil.
//
// Barrier, Point, Progress and Failed get conn, the copy's side connection to the target
// (Config.Target): one per table copy, opened when a hook first needs it, used by one hook at a
// time, and closed when the copy ends. Each must leave it outside a transaction when it
// returns (Barrier's when release returns).
type Hooks struct {
	// Barrier is called before the destination is locked and emptied; the copy calls
	// release right after the lock is granted (or when it gives up). The subscription's
	// barrier waits for the worker's batch in flight and holds the next ones back until
	// release, so that no batch that read the table's state before the copy writes to the
	// destination after it; it also clears a stale copy point of an earlier, failed copy. An
	// error of release (the barrier's changes did not commit) fails the copy.
	Barrier func(ctx context.Context, conn *pgx.Conn, t Table) (release func() error, err error)
	// Point is called once the copy point of a table's copy is taken (Config.CopyPoint),
	// before any row is read. It must record it durably (its own target transaction) before
	// returning.
	Point func(ctx context.Context, conn *pgx.Conn, t Table, point string) error
	// Copied is called in the target transaction that holds the copied rows, just before it
	// commits; an error rolls the copy back.
	Copied func(ctx context.Context, tx pgx.Tx, t Table, point string, rows, bytes int64) error
	// Failed is called when a table's copy fails (not when another process copies it, its
	// state changed under it, or ctx ended), so that the caller can record the error where
	// `skiff status` shows it; its own error is logged.
	Failed func(ctx context.Context, conn *pgx.Conn, t Table, err error) error
	// Merge, when set, says whether the table's destination is shared with other providers'
	// subscriptions (skiff subscribe --merge) and how conflicts are settled: "" for a
	// destination of its own (emptied, then copied), else "error", "apply-remote" or
	// "keep-local": nothing is emptied and the rows are written by key (a temporary stage,
	// then INSERT … ON CONFLICT). conn is the copy's target connection, outside a transaction.
	Merge func(ctx context.Context, conn *pgx.Conn, t Table) (string, error)
	// Conflicts is called, in the copy's target transaction, with the merge conflicts a
	// merged copy settled (provider rows whose key the destination held with other values).
	Conflicts func(ctx context.Context, tx pgx.Tx, t Table, n int64, last string) error
	// Progress is called every Config.ProgressEvery while a table's rows flow, from a
	// goroutine of the copy; an error is logged and the copy goes on.
	Progress func(ctx context.Context, conn *pgx.Conn, t Table, rows, bytes int64) error
}

// Config configures a copy run.
type Config struct {
	// Provider and Target are the connection settings of both sides (from pg.ParseConfig).
	Provider, Target *pgx.ConnConfig
	// Parallel is how many tables are copied at once; 0 means 2.
	Parallel int
	// Hooks record each table's copy point and completion.
	Hooks Hooks
	// CopyPoint takes the copy point of a table's copy: it is called on the provider
	// connection inside the copy's snapshot transaction (REPEATABLE READ, READ ONLY; SET
	// LOCAL statements may have run, no query yet), and returns the text that tells the
	// source which changes the copy holds (consumer.CopyPoints) and when its stream has
	// passed it (Manager.Passed). The source provides it: the trigger queue's is
	// trigger.CopyPoint (txid_current_snapshot()); a source that exports snapshots may set
	// the transaction's snapshot here first (SET TRANSACTION SNAPSHOT). Required when Hooks
	// record the copy (Point or Copied); without it a copy takes no point.
	CopyPoint func(ctx context.Context, prov pg.DB) (string, error)
	// Log receives start, finish and (without a terminal display) periodic progress lines;
	// nil discards them.
	Log *slog.Logger
	// Display, when set, receives a live progress display (rows, bytes, rate, ETA per table);
	// meant for a terminal. Without it progress goes to Log every LogEvery.
	Display io.Writer
	// LogEvery is the interval of progress log lines; 0 means 10 s.
	LogEvery time.Duration
	// ProgressEvery is the interval of Hooks.Progress calls; 0 means 5 s.
	ProgressEvery time.Duration
	// LockKey, when set, gives the second key of a session advisory lock (first key
	// LockClass) the copy of a table holds on the target: a table another process is copying
	// is left alone (its result is ErrBusy).
	LockKey func(Table) int32
	// LockTimeout bounds the wait for the destination's lock before it is emptied, while the
	// barrier holds the subscription's batches back (so one long reader of a destination
	// cannot stall every table of the subscription); the copy then fails, naming the lock's
	// holders, and is tried again later. 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// Capture, when set, returns how the queue captures a table (queue.Tables): its row
	// filter and key, read on prov, again inside the copy's snapshot. The copy then holds only
	// the rows the capture trigger would queue, and its handlers see the key events carry.
	Capture func(ctx context.Context, prov *pgx.Conn, t Table) (Captured, error)
	// Registry builds each table's handlers (handlers.Registry.ForRoute), as the worker's
	// does; nil means the built-in ones only.
	Registry *handlers.Registry
	// SplitRows, when positive, splits the copy of a table the provider estimates (reltuples)
	// at more rows than this into ranges of about SplitRows rows each — of its pages on a
	// provider 14+ (a plain table read without children, any key), else of its primary key —
	// copied at once by SplitJobs pairs of connections that all import the copy's exported
	// snapshot (see split.go): provider 9.2+, before 14 a primary key of one integer column,
	// the handlers' SQL form and a destination of its own (not merged); otherwise the table is
	// copied in one stream, and the copy says why. 0 never splits.
	SplitRows int64
	// SplitJobs is how many ranges of a split table are copied at once; 0 means Parallel.
	SplitJobs int
}

// Captured is how the queue captures a table.
type Captured struct {
	// Where is the capture's row filter (a boolean SQL expression over the table's columns,
	// skiff table add --where), "" for none.
	Where string
	// Key lists the key columns events carry (--key, else the primary key); empty means the
	// primary key.
	Key []string
	// Only: the capture covers the table's own rows, not its inheritance children's (a
	// capture made before skiff captured children, or a table added before it had any): it is
	// copied without them (ONLY), as its trigger captures it. Otherwise a table is copied
	// whole: a partitioned table, or one captured with its children, with each of their rows
	// once.
	Only bool
}

// Result is the outcome of one table's copy.
type Result struct {
	Table   Table
	Point   string // the copy point, "" when the copy took none (Config.CopyPoint unset)
	Rows    int64
	Bytes   int64
	Elapsed time.Duration
	Err     error
	// Binary: the rows were streamed in COPY's binary format (format.go), else in text.
	Binary bool
	// Ranges is how many ranges (of pages or of the key) the table was copied in (Config.SplitRows), 0 for one
	// stream; Parallel is the most ranges that were being copied at one time.
	Ranges, Parallel int
	// PageRanges: the ranges were of the table's pages (ctid, provider 14+), else of its key.
	PageRanges bool
}

// Copy copies every table and returns one result per table, in order. The returned error
// joins the tables' errors; tables that succeeded stay copied.
func Copy(ctx context.Context, cfg Config, tables []Table) ([]Result, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 2
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = 10 * time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
	if cfg.SplitJobs <= 0 {
		cfg.SplitJobs = cfg.Parallel
	}
	if cfg.CopyPoint == nil && (cfg.Hooks.Point != nil || cfg.Hooks.Copied != nil) {
		return nil, errors.New("copy: Config.CopyPoint is required when Hooks record the copy")
	}
	prog := newProgress(tables)
	stopDisplay := prog.run(ctx, cfg)
	results := make([]Result, len(tables))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(cfg.Parallel, max(len(tables), 1)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] = copyTable(ctx, cfg, tables[i], prog.tables[i])
			}
		}()
	}
	for i := range tables {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	stopDisplay()
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("copy %s: %w", r.Table, r.Err))
		}
	}
	return results, errors.Join(errs...)
}

// tableCopy is the copy of one table, step by step (the package doc's protocol). It holds
// three connections: prov reads the rows under the copy's snapshot, tgt writes them in one
// transaction (ttx), and side, a second target connection, serves what must commit on its own
// while ttx is open: the hooks' barrier, the copy point's publication, the progress and the
// record of a failure, one after another.
type tableCopy struct {
	cfg Config
	t   Table
	st  *tableProgress
	log *slog.Logger

	prov, tgt *pgx.Conn
	side      *pgx.Conn // nil until a hook needs it
	ttx       pgx.Tx
	provTx    bool // the provider's snapshot transaction is open
	locked    bool // the copy's advisory lock is held on tgt
	plan      *plan
	refs      []ForeignKey // the foreign keys referencing the destination
	point     string       // the copy point (Config.CopyPoint), "" without one
	merge     string       // Hooks.Merge: the destination is shared, conflicts settled so
	split     *split       // the copy is split into key ranges (nil: one stream)
	truncated bool         // the destination was emptied by TRUNCATE in ttx
}

// copyTable copies one table and reports its outcome (log line, Hooks.Failed).
func copyTable(ctx context.Context, cfg Config, t Table, st *tableProgress) Result {
	c := &tableCopy{cfg: cfg, t: t, st: st, log: cfg.Log.With("table", t.String())}
	start := time.Now()
	err := c.run(ctx)
	c.close(ctx)
	res := Result{Table: t, Point: c.point, Err: err, Elapsed: time.Since(start), Rows: st.rows.Load(), Bytes: st.bytes.Load()}
	if c.plan != nil {
		res.Binary = c.plan.binary
	}
	if c.split != nil {
		res.Ranges, res.Parallel, res.PageRanges = len(c.split.ranges), int(c.split.peak.Load()), c.split.blocks
	}
	st.finish(err)
	c.report(ctx, res)
	c.closeSide(ctx)
	return res
}

// run takes the copy's steps in order; close undoes what a failed one leaves.
func (c *tableCopy) run(ctx context.Context) error {
	if err := c.connect(ctx); err != nil {
		return err
	}
	if err := c.lock(ctx); err != nil {
		return err
	}
	if skip, err := c.skipped(); err != nil || skip {
		if err != nil {
			return err
		}
		return c.skip(ctx)
	}
	if err := c.prepare(ctx); err != nil {
		return err
	}
	if c.cfg.Hooks.Merge != nil {
		var err error
		if c.merge, err = c.cfg.Hooks.Merge(ctx, c.tgt, c.t); err != nil {
			return fmt.Errorf("target: merge settings: %w", err)
		}
		if c.merge != "" && !c.plan.sql {
			return fmt.Errorf("merged table %s: its handlers have no SQL form, and a merged copy writes by key through SQL only (not implemented for handlers run in Go, e.g. partition)", c.t)
		}
	}
	if err := c.decideSplit(ctx); err != nil {
		return err
	}
	// 1. Target transaction; the destination locked (under the barrier) and emptied — or,
	// shared with other providers (merge), left as it is. A split copy commits the emptied
	// destination here: its ranges are written by other connections.
	if err := c.begin(ctx); err != nil {
		return err
	}
	if c.merge != "" {
		if err := c.shareBarrier(ctx); err != nil {
			return err
		}
		if err := guardDest(ctx, c.ttx, c.plan.dest.String(), c.plan.replica, true); err != nil {
			return err
		}
	} else if err := c.empty(ctx); err != nil {
		return err
	}
	if c.split != nil {
		if err := c.ttx.Commit(ctx); err != nil {
			return fmt.Errorf("target: commit the emptied destination: %w", err)
		}
		c.ttx = nil
	}
	// 2. Provider snapshot and copy point; 3. published.
	if err := c.snapshot(ctx); err != nil {
		return err
	}
	if err := c.publish(ctx); err != nil {
		return err
	}
	if c.merge != "" {
		if err := c.makeStage(ctx); err != nil {
			return err
		}
	}
	// 4. The rows; 5. recorded and committed.
	if err := c.copyRows(ctx); err != nil {
		return err
	}
	if c.split != nil {
		if err := c.begin(ctx); err != nil {
			return err
		}
	}
	return c.finish(ctx)
}

// connect opens the provider and target connections the rows flow through.
func (c *tableCopy) connect(ctx context.Context) error {
	var err error
	if c.prov, err = pg.ConnectConfig(ctx, c.cfg.Provider.Copy()); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	if c.tgt, err = pg.ConnectConfig(ctx, c.cfg.Target.Copy()); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}

// lock takes the copy's advisory lock on the target (Config.LockKey): ErrBusy when another
// process is copying the table.
func (c *tableCopy) lock(ctx context.Context) error {
	if c.cfg.LockKey == nil {
		return nil
	}
	if err := c.tgt.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, $2::int4)`, int32(LockClass), c.cfg.LockKey(c.t)).Scan(&c.locked); err != nil {
		return fmt.Errorf("target: copy lock: %w", err)
	}
	if !c.locked {
		return ErrBusy
	}
	return nil
}

// prepare plans the copy (newPlan), reads the provider's row estimate for the display, and
// checks how the destination can be emptied: as replica when the role may, and foreign keys
// of other tables referencing it.
func (c *tableCopy) prepare(ctx context.Context) error {
	p, err := newPlan(ctx, c.cfg, c.prov, c.tgt, c.t)
	if err != nil {
		return err
	}
	c.plan = p
	var estimate float64
	_ = c.prov.QueryRow(ctx, `SELECT c.reltuples FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
		schemaOf(c.t.Source), c.t.Source.Name).Scan(&estimate)
	c.st.estimate.Store(max(int64(estimate), 0)) // -1: never analyzed

	// As the worker's applier: no user triggers or foreign-key checks on the copied rows when
	// the role may (they hold the provider's already-checked rows, in any table order).
	replica, err := catalog.MayReplica(ctx, c.tgt)
	if err != nil {
		return fmt.Errorf("target: check privileges: %w", err)
	}
	if c.refs, err = referencedBy(ctx, c.tgt, p.dest); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if len(c.refs) > 0 && !replica {
		return fmt.Errorf("target: %w", &ReferencedError{Table: p.dest, Keys: c.refs, Role: c.tgt.Config().User})
	}
	p.replica = replica
	if !replica {
		c.log.Warn("the target role may not SET session_replication_role: the destination's triggers and foreign keys fire during the copy; connect as a superuser (or GRANT SET ON PARAMETER session_replication_role on 15+) to avoid this")
	}
	return nil
}

// skipped says whether the table's handler skips it (handlers.Skips).
func (c *tableCopy) skipped() (bool, error) {
	reg := c.cfg.Registry
	if reg == nil {
		reg = handlers.NewRegistry()
	}
	h, err := reg.ForRoute(change.Route{Source: c.t.Source, Dest: c.t.Dest, Handler: c.t.Handler, Config: c.t.Config})
	if err != nil {
		return false, err
	}
	return handlers.Skips(h), nil
}

// skip "copies" a skipped table: nothing is read and the destination (which need not
// exist) is left alone, but the protocol's states are kept: a copy point published, the table
// marked copied at it, so that it goes to in-sync as any other.
func (c *tableCopy) skip(ctx context.Context) error {
	c.log.Info("table skipped (handler skip): nothing to copy")
	if err := c.begin(ctx); err != nil {
		return err
	}
	if err := c.snapshot(ctx); err != nil {
		return err
	}
	if c.cfg.Hooks.Point != nil {
		side, err := c.sideConn(ctx)
		if err != nil {
			return fmt.Errorf("record copy point: %w", err)
		}
		if err := c.cfg.Hooks.Point(ctx, side, c.t, c.point); err != nil {
			return fmt.Errorf("record copy point: %w", err)
		}
	}
	return c.finish(ctx)
}

// begin opens the target transaction the rows are written in, as replica when the role may.
func (c *tableCopy) begin(ctx context.Context) error {
	var err error
	if c.ttx, err = c.tgt.Begin(ctx); err != nil {
		return fmt.Errorf("target: begin: %w", err)
	}
	if c.plan != nil && c.plan.replica {
		if _, err := c.ttx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return fmt.Errorf("target: %w", err)
		}
	}
	return nil
}

// snapshot opens the provider's read-only snapshot transaction and takes its copy point; a
// split copy exports the snapshot for its ranges' connections.
func (c *tableCopy) snapshot(ctx context.Context) error {
	err := beginRead(ctx, c.prov, pg.ServerVersion(c.tgt), "")
	c.provTx = c.prov.PgConn().TxStatus() != 'I'
	if err != nil {
		return err
	}
	if c.cfg.CopyPoint != nil {
		if c.point, err = c.cfg.CopyPoint(ctx, c.prov); err != nil {
			return fmt.Errorf("provider: copy point: %w", err)
		}
	}
	if c.split != nil && pg.ServerVersion(c.prov) >= 90200 { // decideSplit: 9.2+ only
		if err := c.prov.QueryRow(ctx, "SELECT pg_catalog.pg_export_snapshot()").Scan(&c.split.snapshot); err != nil {
			return fmt.Errorf("provider: export the copy's snapshot: %w", err)
		}
	}
	return nil
}

// beginRead opens a read-only snapshot transaction on prov, REPEATABLE READ (SERIALIZABLE
// before 9.1), with the session settings a copy reads under; it imports the exported
// snapshot named snapshot unless that is "". tgtVersion is the target's server_version_num.
func beginRead(ctx context.Context, prov *pgx.Conn, tgtVersion int, snapshot string) error {
	var err error
	if pg.ServerVersion(prov) < 90100 {
		_, err = prov.Exec(ctx, "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY") // before 9.1 SERIALIZABLE is snapshot isolation
	} else {
		_, err = prov.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	}
	if err != nil {
		return fmt.Errorf("provider: begin: %w", err)
	}
	if v := pg.ServerVersion(prov); snapshot != "" && v < 90200 {
		return fmt.Errorf("provider: server_version_num %d cannot import snapshot %s (9.2+)", v, snapshot)
	} else if snapshot != "" {
		// SET TRANSACTION SNAPSHOT takes no parameter; the name comes from the server.
		if _, err := pg.Exec(ctx, prov.PgConn(), "SET TRANSACTION SNAPSHOT "+change.QuoteLiteral(snapshot)); err != nil {
			return fmt.Errorf("provider: import snapshot %s: %w", snapshot, err)
		}
	}
	// The copy evaluates the capture's --where in this (the operator's) session: resolve it as
	// the capture function does, among pg_catalog's operators and functions only, so that one
	// a writer created in public is not run with the operator's rights (docs/security.md).
	// The handlers' SQL is resolved there too.
	if _, err := prov.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	// Values as the capture trigger's events carry them (it pins its time zone to UTC): the
	// handlers' SQL compares their text.
	if _, err := prov.Exec(ctx, "SET LOCAL TimeZone = 'UTC'"); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	if pg.ServerVersion(prov) >= 90000 && tgtVersion < 90000 {
		// A target before 9.0 reads bytea only in escape format.
		if _, err := prov.Exec(ctx, "SET LOCAL bytea_output = 'escape'"); err != nil {
			return fmt.Errorf("provider: %w", err)
		}
	}
	return nil
}

// publish hands the copy point to Hooks.Point (on the side connection), then reads the
// capture's filter and key as of the snapshot.
func (c *tableCopy) publish(ctx context.Context) error {
	if c.cfg.Hooks.Point != nil {
		side, err := c.sideConn(ctx)
		if err != nil {
			return fmt.Errorf("record copy point: %w", err)
		}
		if err := c.cfg.Hooks.Point(ctx, side, c.t, c.point); err != nil {
			return fmt.Errorf("record copy point: %w", err)
		}
	}
	return c.plan.capture(ctx, c.cfg, c.prov, c.tgt)
}

// copyRows streams the rows (pipe, or through the handlers in Go: transform), reporting
// progress meanwhile.
func (c *tableCopy) copyRows(ctx context.Context) error {
	p := c.plan
	binary, why, err := p.binaryFormat(ctx, c.prov, c.tgt)
	if err != nil {
		return err
	}
	p.binary = binary
	// Rows written into the table this transaction truncated are frozen as they are written
	// (COPY FREEZE, 9.3+, a plain table): no reader rewrites every page later to set their
	// hint bits, no vacuum to freeze them. A split copy's ranges write in other transactions.
	if c.truncated && c.split == nil && c.merge == "" && p.sql && pg.ServerVersion(c.tgt) >= 90300 {
		if _, err := catalog.Lookup(ctx, c.ttx, change.Table{Schema: schemaOf(p.dest), Name: p.dest.Name}, "r"); err == nil {
			p.freeze = true
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("target: %w", err)
		}
	}
	format := "binary"
	if !binary {
		format = "text"
	}
	c.log.Info("copy started", "copy_point", c.point, "dest", p.dest.String(), "columns", len(p.cols),
		"through_handler", !p.sql, "estimated_rows", c.st.estimate.Load(), "format", format, "why_text", why, "freeze", p.freeze)
	c.st.start()
	stopProgress := c.reportProgress(ctx)
	if c.split != nil {
		err = c.copyRanges(ctx)
	} else if p.sql {
		into := p.dest
		if c.merge != "" {
			into = stage
		}
		err = pipe(ctx, c.prov, c.ttx, p, into, c.st)
	} else {
		err = p.transform(ctx, c.prov, c.ttx, c.tgt, c.st)
	}
	stopProgress()
	var pgErr *pgconn.PgError
	if err != nil && !p.replica && errors.As(err, &pgErr) && pgErr.Code == "23503" {
		err = fmt.Errorf("%w (the copy checks the destination's foreign keys because role %s may not SET session_replication_role: "+
			"connect as a superuser, or on PostgreSQL 15+ GRANT SET ON PARAMETER session_replication_role TO %s)",
			err, change.QuoteIdent(c.tgt.Config().User), change.QuoteIdent(c.tgt.Config().User))
	}
	return err
}

// finish runs Hooks.Copied in the target transaction and commits it.
func (c *tableCopy) finish(ctx context.Context) error {
	if c.merge != "" {
		if err := c.mergeStage(ctx); err != nil {
			return err
		}
	}
	if c.cfg.Hooks.Copied != nil {
		if err := c.cfg.Hooks.Copied(ctx, c.ttx, c.t, c.point, c.st.rows.Load(), c.st.bytes.Load()); err != nil {
			return fmt.Errorf("record copy: %w", err)
		}
	}
	if err := c.ttx.Commit(ctx); err != nil {
		return fmt.Errorf("target: commit: %w", err)
	}
	return nil
}

// close ends what run left open: the provider's snapshot transaction, the target transaction
// (rolled back unless committed), the advisory lock, and both connections.
func (c *tableCopy) close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	if c.provTx {
		_, _ = c.prov.Exec(ctx, "ROLLBACK")
	}
	if c.ttx != nil {
		_ = c.ttx.Rollback(ctx)
	}
	if c.locked {
		// Unlock explicitly, after the rollback: a closed connection's backend releases its
		// locks only when it has exited, and a copy that starts right after this one would
		// find the table busy.
		_, _ = c.tgt.Exec(ctx, `SELECT pg_advisory_unlock($1::int4, $2::int4)`, int32(LockClass), c.cfg.LockKey(c.t))
	}
	if c.tgt != nil {
		c.tgt.Close(ctx)
	}
	if c.prov != nil {
		c.prov.Close(ctx)
	}
}

// sideConn returns the copy's side connection to the target, connecting the first time (or
// again when a step left it closed or inside a transaction).
func (c *tableCopy) sideConn(ctx context.Context) (*pgx.Conn, error) {
	if c.side != nil && !c.side.IsClosed() && c.side.PgConn().TxStatus() == 'I' {
		return c.side, nil
	}
	c.closeSide(ctx)
	side, err := pg.ConnectConfig(ctx, c.cfg.Target.Copy())
	if err != nil {
		return nil, err
	}
	c.side = side
	return side, nil
}

func (c *tableCopy) closeSide(ctx context.Context) {
	if c.side != nil {
		c.side.Close(context.WithoutCancel(ctx))
		c.side = nil
	}
}

// report logs the copy's outcome and records a failure (Hooks.Failed) unless the table was
// busy or left copying, or ctx ended.
func (c *tableCopy) report(ctx context.Context, res Result) {
	if res.Err == nil {
		secs := res.Elapsed.Seconds()
		c.log.Info("copy done", "rows", res.Rows, "bytes", res.Bytes, "elapsed", res.Elapsed.Round(time.Millisecond),
			"rows_per_s", int64(float64(res.Rows)/secs), "mb_per_s", math.Round(float64(res.Bytes)/secs/1e5)/10,
			"copy_point", res.Point, "ranges", res.Ranges, "parallel_ranges", res.Parallel, "binary", res.Binary)
		return
	}
	if errors.Is(res.Err, context.Canceled) || errors.Is(res.Err, ErrBusy) || errors.Is(res.Err, ErrNotCopying) || ctx.Err() != nil {
		return
	}
	c.log.Error("copy failed", pg.WithHint(res.Err, "err", res.Err.Error())...)
	if c.cfg.Hooks.Failed == nil {
		return
	}
	side, err := c.sideConn(ctx)
	if err == nil {
		err = c.cfg.Hooks.Failed(ctx, side, c.t, res.Err)
	}
	if err != nil {
		c.log.Warn("cannot record the copy's error on the target", "error", err.Error())
	}
}

// reportProgress calls Hooks.Progress, on the side connection, every cfg.ProgressEvery until
// the returned function is called.
func (c *tableCopy) reportProgress(ctx context.Context) func() {
	if c.cfg.Hooks.Progress == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(c.cfg.ProgressEvery)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				side, err := c.sideConn(ctx)
				if err == nil {
					err = c.cfg.Hooks.Progress(ctx, side, c.t, c.st.rows.Load(), c.st.bytes.Load())
				}
				if err != nil && ctx.Err() == nil {
					c.log.Warn("cannot record copy progress", "error", err.Error())
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// pipe streams the provider's COPY TO STDOUT of the plan's Select into the target's COPY FROM
// STDIN through an io.Pipe, counting rows (one newline per row in COPY's text format, where
// embedded newlines are escaped) and bytes on the way, into st and also.
func pipe(ctx context.Context, prov *pgx.Conn, ttx pgx.Tx, p *plan, into change.Table, st *tableProgress, also ...*tableProgress) error {
	query := p.sel.SQL()
	if p.keyRange != "" {
		// Beside the Select's conditions, not inside their coalesce(): an index scan then
		// reads the range alone.
		if p.sel.Condition() != "" {
			query += " AND " + p.keyRange
		} else {
			query += " WHERE " + p.keyRange
		}
	}
	out := "COPY (" + query + ") TO STDOUT"
	// A plain table whose columns go unchanged is read by COPY directly (a heap scan, no
	// executor: faster; COPY reads the table without its inheritance children); a
	// partitioned one, one copied with its children (or anything else) through a query.
	relkind, children, err := relationKind(ctx, prov, p.sel.Source)
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	if relkind == "r" && p.sel.Plain() && p.keyRange == "" && (p.sel.Only || !children) {
		out = "COPY " + p.sel.Source.String() + " (" + quoteList(p.sel.SourceColumns()) + ") TO STDOUT"
	}
	out += copyOptions(p.binary, false, pg.ServerVersion(prov))
	in := "COPY " + into.String() + " (" + quoteList(p.sel.ColumnNames()) + ") FROM STDIN" +
		copyOptions(p.binary, p.freeze && into == p.dest, pg.ServerVersion(ttx.Conn()))

	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		// pgconn hands CopyTo one row per Write; a pipe write is a goroutine hand-off, so the
		// rows are gathered into 256 kB writes first.
		bw := bufio.NewWriterSize(pw, 256<<10)
		cw := &counter{w: bw, binary: p.binary, st: st, also: also, every: countEvery}
		var tw *trailerStripper
		if p.binary && pg.ServerVersion(ttx.Conn()) < 90100 {
			tw = &trailerStripper{w: bw}
			cw.w = tw
		}
		tag, err := prov.PgConn().CopyTo(ctx, cw, out)
		if err == nil && tw != nil {
			err = tw.end()
		}
		if err == nil {
			err = bw.Flush()
		}
		cw.done(tag.RowsAffected(), err == nil)
		if err != nil {
			err = fmt.Errorf("provider: %s: %w", out, err)
		}
		pw.CloseWithError(err) // nil: EOF for the reader
		readErr <- err
	}()
	_, err = ttx.Conn().PgConn().CopyFrom(ctx, pr, in)
	if err != nil {
		err = fmt.Errorf("target: %s: %w", in, err)
		// Stop the reader: it may be blocked writing into the pipe.
		pr.CloseWithError(err)
		cancel()
	}
	rerr := <-readErr
	if rerr != nil && (err == nil || strings.Contains(err.Error(), rerr.Error())) {
		// The target's COPY failed because the provider's did (the pipe handed it the
		// provider's error, which the target quotes): the provider's error says why.
		return rerr
	}
	if err != nil && rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) && !errors.Is(rerr, context.Canceled) &&
		!strings.Contains(rerr.Error(), err.Error()) {
		return errors.Join(err, rerr)
	}
	return err
}

// trailerStripper passes a binary COPY stream on without its last two bytes, the trailer
// (int16 -1), for a target before 9.1. Such a server ends a binary COPY FROM at the trailer
// without waiting for the client's CopyDone (PostgreSQL waits from 9.1 on), and answers
// CommandComplete and ReadyForQuery while the client may still be streaming: pgconn's
// CopyFrom reads and drops those while it sends, then waits after its CopyDone for a
// ReadyForQuery that never comes (the server ignores a CopyDone outside COPY), and the copy
// hung whenever the server's answer beat the end of the stream. Without the trailer, the
// server reads to the protocol's end of data (CopyDone), which also ends a binary COPY at a
// row's start, and answers only then.
type trailerStripper struct {
	w    io.Writer
	tail []byte // the stream's last bytes, held back (at most 2)
}

func (t *trailerStripper) Write(p []byte) (int, error) {
	n := len(p)
	if len(t.tail)+len(p) <= 2 {
		t.tail = append(t.tail, p...)
		return n, nil
	}
	// Pass on everything but the last two bytes of tail+p.
	if keep := len(p) - 2; keep >= 0 {
		if len(t.tail) > 0 {
			if _, err := t.w.Write(t.tail); err != nil {
				return 0, err
			}
		}
		if _, err := t.w.Write(p[:keep]); err != nil {
			return 0, err
		}
		t.tail = append(t.tail[:0], p[keep:]...)
		return n, nil
	}
	// len(p) == 1 and two bytes held: pass the older one on.
	if _, err := t.w.Write(t.tail[:1]); err != nil {
		return 0, err
	}
	t.tail = append(t.tail[:0], t.tail[1], p[0])
	return n, nil
}

// end checks that the bytes held back are the trailer.
func (t *trailerStripper) end() error {
	if len(t.tail) != 2 || t.tail[0] != 0xff || t.tail[1] != 0xff {
		return fmt.Errorf("binary COPY stream does not end with its trailer (last bytes %x)", t.tail)
	}
	return nil
}

// counter passes the COPY stream on and counts it, publishing its counts into st and also
// every `every` bytes (0: at every Write) and at the end (done). In pipe it sits where pgconn's
// CopyTo writes, one Write per row (a row's CopyData message), and at the end the row count
// is set to what the provider's COPY reports. Within the stream, a row is a newline in the text format (where
// embedded newlines are escaped) and a Write in the binary one (whose last Write is the
// trailer).
type counter struct {
	w      io.Writer
	binary bool
	st     *tableProgress
	also   []*tableProgress // counted too (a split copy's range)
	every  int64
	// rows and bytes are counted, pubRows and pubBytes published.
	rows, bytes, pubRows, pubBytes int64
}

// countEvery is how many bytes pipe's counter passes on between two publications of its
// counts.
const countEvery = 256 << 10

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.bytes += int64(n)
	if c.binary {
		c.rows++
	} else {
		nl := [1]byte{'\n'}
		c.rows += int64(bytes.Count(p[:n], nl[:]))
	}
	if c.bytes-c.pubBytes >= c.every {
		c.publish()
	}
	return n, err
}

// done publishes the last counts; when the provider's COPY completed (ok), its row count
// (rows) replaces the one counted.
func (c *counter) done(rows int64, ok bool) {
	if ok {
		c.rows = rows
	}
	c.publish()
}

func (c *counter) publish() {
	rows, bytes := c.rows-c.pubRows, c.bytes-c.pubBytes
	c.pubRows, c.pubBytes = c.rows, c.bytes
	c.st.bytes.Add(bytes)
	c.st.rows.Add(rows)
	for _, st := range c.also {
		st.bytes.Add(bytes)
		st.rows.Add(rows)
	}
}

// relationKind returns a table's relkind and whether it has (or had) inheritance children or
// partitions (relhassubclass).
func relationKind(ctx context.Context, conn *pgx.Conn, t change.Table) (relkind string, children bool, err error) {
	err = conn.QueryRow(ctx, `SELECT c.relkind::text, c.relhassubclass FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
		schemaOf(t), t.Name).Scan(&relkind, &children)
	if err != nil {
		err = fmt.Errorf("relation kind of %s: %w", t, err)
	}
	return relkind, children, err
}

func schemaOf(t change.Table) string {
	if t.Schema == "" {
		return "public"
	}
	return t.Schema
}

// columns reads the names of a table's live columns in attnum order, leaving out its
// generated ones when skipGenerated.
func columns(ctx context.Context, conn *pgx.Conn, t change.Table, skipGenerated bool) ([]string, error) {
	cols, err := liveColumns(ctx, conn, t)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, c := range cols {
		if !skipGenerated || c.Generated == 0 {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("table %s does not exist", t)
	}
	return names, nil
}

// liveColumns reads table t's live columns on conn in attnum order.
func liveColumns(ctx context.Context, conn *pgx.Conn, t change.Table) ([]catalog.Column, error) {
	oid, err := catalog.Lookup(ctx, conn, change.Table{Schema: schemaOf(t), Name: t.Name}, "")
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("table %s does not exist", t)
	}
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t, err)
	}
	cols, err := catalog.Columns(ctx, conn, oid)
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", t, err)
	}
	return cols, nil
}

// tableProgress is one table's live counters, shared with the display.
type tableProgress struct {
	name     string
	rows     atomic.Int64
	bytes    atomic.Int64
	estimate atomic.Int64
	started  atomic.Int64 // unix nanoseconds, 0 until the rows flow
	// ranges is the number of key ranges of a split copy (0: one stream), rangesDone how
	// many are copied.
	ranges, rangesDone atomic.Int64
	mu                 sync.Mutex
	done               bool
	err                error
	elapsed            time.Duration
}

func (p *tableProgress) start() { p.started.Store(time.Now().UnixNano()) }

func (p *tableProgress) finish(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.err = true, err
	if s := p.started.Load(); s != 0 {
		p.elapsed = time.Since(time.Unix(0, s))
	}
}

// DefaultLockTimeout is how long a copy waits for its destination's lock by default
// (Config.LockTimeout).
const DefaultLockTimeout = 5 * time.Second

// ForeignKey is a foreign key of Table (the referencing side).
type ForeignKey = catalog.ForeignKey

// ReferencedError says a destination cannot be emptied for its copy: other tables' foreign
// keys reference it, and the target role may not SET session_replication_role. TRUNCATE
// refuses a referenced table whatever that setting says, and a DELETE outside replica role
// would run the keys' checks and ON DELETE actions (a CASCADE would empty the referencing
// tables too).
type ReferencedError struct {
	Table change.Table
	Keys  []ForeignKey // the referencing keys, at least one
	Role  string       // the target role
}

func (e *ReferencedError) Error() string {
	k := e.Keys[0]
	more := ""
	if len(e.Keys) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(e.Keys)-1)
	}
	return fmt.Sprintf("cannot empty %s for its copy: foreign key %s of table %s references it%s; "+
		"TRUNCATE refuses such a table and a DELETE would check or cascade into %s, so skiff deletes under session_replication_role = replica, "+
		"which role %s may not set: connect as a superuser, or on PostgreSQL 15+ GRANT SET ON PARAMETER session_replication_role TO %s",
		e.Table, change.QuoteIdent(k.Name), k.Table, more, k.Table, change.QuoteIdent(e.Role), change.QuoteIdent(e.Role))
}

// referencedBy lists the foreign keys of other tables that reference table t on conn (none
// when t does not exist).
func referencedBy(ctx context.Context, conn *pgx.Conn, t change.Table) ([]ForeignKey, error) {
	oid, err := catalog.Lookup(ctx, conn, change.Table{Schema: schemaOf(t), Name: t.Name}, "")
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("foreign keys referencing %s: %w", t, err)
	}
	refs, err := catalog.ReferencedBy(ctx, conn, oid)
	if err != nil {
		return nil, fmt.Errorf("foreign keys referencing %s: %w", t, err)
	}
	return refs, nil
}

// empty empties the destination in the copy's target transaction. Inside the barrier (taken on
// the side connection) it only locks the destination against writers (LOCK TABLE, waiting at
// most cfg.LockTimeout:
// the barrier holds the subscription's batches back meanwhile, so one long reader of the
// destination must not stall every table of the subscription; a timeout names the sessions
// holding the lock), then releases the barrier: from then on the lock keeps every writer off
// until the copy commits. Then it runs TRUNCATE, or DELETE when other tables' foreign keys
// (c.refs) reference the destination: TRUNCATE refuses a referenced table whatever
// session_replication_role says; the DELETE runs as replica (the caller checked), so neither
// the keys' checks nor their ON DELETE actions fire and the referencing rows stay as they are.
func (c *tableCopy) empty(ctx context.Context) error {
	cfg, tgt, ttx, dest := c.cfg, c.tgt, c.ttx, c.plan.dest
	stmt, mode := "TRUNCATE "+dest.String(), "ACCESS EXCLUSIVE"
	if len(c.refs) > 0 {
		// EXCLUSIVE keeps writers off (the worker's too) and lets readers read the old rows
		// until the copy commits.
		stmt, mode = "DELETE FROM "+dest.String(), "EXCLUSIVE"
	}
	timeout := cfg.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	setting := "lock_timeout"
	if pg.ServerVersion(tgt) < 90300 {
		setting = "statement_timeout" // no lock_timeout before 9.3; LOCK TABLE only waits
	}
	if _, err := pg.Exec(ctx, ttx.Conn().PgConn(), fmt.Sprintf("SET LOCAL %s = %d", setting, max(timeout.Milliseconds(), 1))); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	release := func() error { return nil }
	if cfg.Hooks.Barrier != nil {
		side, err := c.sideConn(ctx)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		if release, err = cfg.Hooks.Barrier(ctx, side, c.t); err != nil {
			return fmt.Errorf("target: %w", err)
		}
	}
	lock := "LOCK TABLE " + dest.String() + " IN " + mode + " MODE"
	_, err := pg.Exec(ctx, ttx.Conn().PgConn(), lock)
	// Locked (or given up): the worker's batches may go on.
	if rerr := release(); rerr != nil && err == nil {
		return fmt.Errorf("target: %w", rerr)
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "57014") && ctx.Err() == nil {
			_ = ttx.Rollback(ctx)
			held := "a session that has ended since"
			if hs, herr := pg.RelationLockHolders(ctx, tgt, schemaOf(dest), dest.Name); herr != nil {
				held = herr.Error()
			} else if len(hs) > 0 {
				names := make([]string, len(hs))
				for i, h := range hs {
					names[i] = h.String()
				}
				held = strings.Join(names, "; ")
			}
			return fmt.Errorf("target: %s: not granted within %s (the lock timeout, during which the subscription's batches wait), held by %s: %w",
				lock, timeout, held, err)
		}
		return fmt.Errorf("target: %s: %w", lock, err)
	}
	// Locked: before anything is written (the TRUNCATE or DELETE fires triggers too).
	if err := guardDest(ctx, ttx, dest.String(), c.plan.replica, false); err != nil {
		return err
	}
	for _, sql := range []string{"SET LOCAL " + setting + " TO DEFAULT", stmt} {
		if _, err := pg.Exec(ctx, ttx.Conn().PgConn(), sql); err != nil {
			return fmt.Errorf("target: %s: %w", sql, err)
		}
	}
	c.truncated = len(c.refs) == 0
	return nil
}

// guardDest refuses to write into the destination dest in the target transaction tx when
// that would run code a role other than a superuser controls with a superuser's rights
// (catalog.ForeignCode: a trigger that fires, a rule, an index expression, a constraint, a
// default). lock takes ROW EXCLUSIVE on dest first (the lock COPY takes anyway) for a caller
// that holds no lock on it yet: from then on no such code can be added until tx ends.
func guardDest(ctx context.Context, tx pgx.Tx, dest string, replica, lock bool) error {
	super, err := catalog.IsSuperuser(ctx, tx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if !super {
		return nil
	}
	if lock {
		if _, err := pg.Exec(ctx, tx.Conn().PgConn(), "LOCK TABLE "+dest+" IN ROW EXCLUSIVE MODE"); err != nil {
			return fmt.Errorf("target: lock %s: %w", dest, err)
		}
	}
	if err := catalog.ForeignCode(ctx, tx, dest, replica); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}
