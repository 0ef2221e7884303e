package skiffcli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// TableCmd is `skiff table`: which tables and sequences a queue captures on the provider.
type TableCmd struct {
	Add    TableAddCmd    `cmd:"" help:"Capture tables (triggers) or sequences in a queue, creating the queue when missing."`
	Remove TableRemoveCmd `cmd:"" help:"Stop capturing tables or sequences (drops their triggers)."`
	Resync TableResyncCmd `cmd:"" help:"Copy tables of a subscription again while the others keep replicating (the worker copies them)."`
}

// TableAddCmd is `skiff table add`.
type TableAddCmd struct {
	DB               string   `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_DB"`
	Queue            string   `help:"Queue (table group) to capture into; created when missing (and said so)." required:""`
	Where            string   `help:"Capture only rows for which this SQL condition over the table's columns is true."`
	Key              []string `help:"Columns identifying a row, for a table without a primary key (comma-separated); a non-deferrable unique index over NOT NULL columns must keep them unique." sep:","`
	KeyNotUnique     bool     `help:"Accept a key no unique index keeps unique: --key columns without such an index, or the key (primary key or --key) of a table with inheritance children (or of a partitioned table before PostgreSQL 11), which no index can keep unique across them. You guarantee no two rows ever share a key (else replay updates or deletes the wrong rows)."`
	Refresh          bool     `help:"Regenerate the trigger and layout of tables already captured (after ALTER TABLE), or change their --where/--key."`
	NoSequences      bool     `help:"Do not capture the sequences the tables' inserts draw from (serial and identity columns, DEFAULT nextval(...)); captured by default so that the target's stand where the provider's do at cut-over."`
	AlsoInOtherQueue bool     `help:"Capture a table even when another queue captures it already (each queue then gets every write)."`
	Source           string   `help:"How a new queue captures its tables: trigger (capture triggers and the ticker; every version from 8.4) or logical (no trigger: each subscription streams from a logical replication slot; 9.4+, wal_level = logical, the worker's provider role needs REPLICATION). Chosen when the queue is created; an existing queue keeps its source. Default: the queue's, trigger for a new queue." enum:",trigger,logical" default:""`
	Plugin           string   `help:"Output plugin of a new logical queue: pgoutput (10+; the queue's tables go into a publication, which needs the tables' owner) or test_decoding (9.4+). Default: pgoutput on 10+, test_decoding before." enum:",pgoutput,test_decoding" default:""`
	InsertTrigger    string   `help:"How a trigger queue captures INSERTs (PostgreSQL 10+): statement (one statement-level trigger with a transition table per INSERT or COPY: about half the cost per row of a multi-row INSERT, a little more per one-row INSERT; a plain table without --where or triggers of its own) or row. Default: what the capture has (kept by --refresh), row for a new one. With statement, the server refuses to ATTACH the table as a partition or make it an inheritance child (an error naming trigger skiff_captured_q<N>): skiff table remove it first." enum:",row,statement" default:""`
	Tables           []string `arg:"" name:"table" help:"Tables or sequences, as SQL writes them: name, schema.name or quoted (\"My Schema\".\"Odd Table\"); unquoted parts fold to lower case, a name without schema follows the search_path."`
}

// Run captures the tables in one transaction: all of them, or none when one fails. Tables
// captured already with the same settings are left unchanged, so the command can be run again.
func (c *TableAddCmd) Run(rt *Runtime) error {
	return tableAdd(rt.Ctx, c, rt.Out)
}

func tableAdd(ctx context.Context, c *TableAddCmd, out io.Writer) error {
	conn, err := pg.Connect(ctx, c.DB, "skiff table add")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSchema(ctx, conn, migrate.Provider); err != nil {
		return err
	}
	var key []string
	for _, k := range c.Key {
		if k = strings.TrimSpace(k); k != "" {
			key = append(key, k)
		}
	}
	specs := make([]queue.TableSpec, len(c.Tables))
	for i, t := range c.Tables {
		specs[i] = queue.TableSpec{Name: t, Where: c.Where, Key: key, Refresh: c.Refresh, NoSequences: c.NoSequences,
			AlsoInOtherQueue: c.AlsoInOtherQueue, KeyNotUnique: c.KeyNotUnique, Source: c.Source, Plugin: c.Plugin,
			InsertTrigger: c.InsertTrigger}
	}
	results, err := queue.AddTables(ctx, conn, c.Queue, specs)
	if err != nil {
		if len(specs) > 1 {
			err = fmt.Errorf("%w (nothing was captured: table add takes all its tables or none)", err)
		}
		return oneLine(err)
	}
	for _, res := range results {
		if res.QueueCreated {
			if res.Kind.Logical() {
				pub := ""
				if res.Kind.Publication != "" {
					pub = ", publication " + res.Kind.Publication
				}
				fmt.Fprintf(out, "created logical queue %s (plugin %s%s)\n", c.Queue, res.Kind.Plugin, pub)
			} else {
				fmt.Fprintf(out, "created queue %s\n", c.Queue)
			}
		}
		also := ""
		if res.WithChildren {
			also = ", with its partitions or children"
		}
		if len(res.OtherQueues) > 0 {
			also += "; also captured by queue " + strings.Join(res.OtherQueues, ", ")
		}
		switch {
		case res.Unchanged && res.Sequence:
			fmt.Fprintf(out, "sequence %s: already captured by queue %s, unchanged\n", res.Table, c.Queue)
		case res.Unchanged:
			fmt.Fprintf(out, "table %s: already captured by queue %s, unchanged\n", res.Table, c.Queue)
		case res.Sequence:
			fmt.Fprintf(out, "sequence %s: captured by queue %s\n", res.Table, c.Queue)
		case res.Refreshed:
			fmt.Fprintf(out, "table %s: trigger regenerated in queue %s (layout %d%s)\n", res.Table, c.Queue, res.Layout, also)
			if res.RenamedFrom != (change.Table{}) {
				fmt.Fprintf(out, "table %s was renamed from %s: its events carry the new name from now on; "+
					"subscriptions route it with skiff subscribe --table %s:DEST --no-copy (events of a table not subscribed are ignored)\n",
					res.Table, res.RenamedFrom, res.Table)
			}
		case res.Kind.Logical():
			fmt.Fprintf(out, "table %s: captured by logical queue %s (no trigger; decoded from each subscription's slot%s)\n", res.Table, c.Queue, also)
		default:
			fmt.Fprintf(out, "table %s: captured by queue %s (layout %d%s)\n", res.Table, c.Queue, res.Layout, also)
		}
		for _, a := range res.Children {
			if a.Rows > 0 {
				fmt.Fprintf(out, "table %s: %d rows written while it had no capture trigger queued (%s captures it with its children)\n",
					a.Child, a.Rows, res.Table)
			}
		}
		for _, s := range res.Sequences {
			fmt.Fprintf(out, "sequence %s: captured by queue %s (used by table %s)\n", s, c.Queue, res.Table)
		}
	}
	return nil
}

// TableRemoveCmd is `skiff table remove`.
type TableRemoveCmd struct {
	DB     string   `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_DB"`
	Queue  string   `help:"Queue the tables are captured by." required:""`
	Tables []string `arg:"" name:"table" help:"Tables or sequences to stop capturing (names as for table add)."`
}

// Run removes each table's capture in turn; the first failure stops it.
func (c *TableRemoveCmd) Run(rt *Runtime) error {
	return tableRemove(rt.Ctx, c, rt.Out)
}

func tableRemove(ctx context.Context, c *TableRemoveCmd, out io.Writer) error {
	conn, err := pg.Connect(ctx, c.DB, "skiff table remove")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := requireSchema(ctx, conn, migrate.Provider); err != nil {
		return err
	}
	for _, t := range c.Tables {
		tbl, err := queue.RemoveTable(ctx, conn, c.Queue, t)
		if err != nil {
			return oneLine(err)
		}
		fmt.Fprintf(out, "%s: no longer captured by queue %s\n", tbl, c.Queue)
	}
	return nil
}

// oneLine keeps an error to one line: lines (the server's detail, pgx's one line per
// connection attempt) are joined with "; ", a line equal to an earlier one is left out.
func oneLine(err error) error {
	msg := err.Error()
	if !strings.Contains(msg, "\n") {
		return err
	}
	var b strings.Builder
	var seen []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l == "" || slices.Contains(seen, l) {
			continue
		}
		if len(seen) > 0 {
			if strings.HasSuffix(seen[len(seen)-1], ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		seen = append(seen, l)
		b.WriteString(l)
	}
	return &singleLineError{msg: b.String(), err: err}
}

// singleLineError is an error shown on one line that still unwraps to the original.
type singleLineError struct {
	msg string
	err error
}

func (e *singleLineError) Error() string { return e.msg }
func (e *singleLineError) Unwrap() error { return e.err }
