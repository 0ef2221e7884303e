package main

import (
	"context"
	"fmt"
	"io"
	"strings"

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
	KeyNotUnique     bool     `help:"Accept --key columns no unique index keeps unique: you guarantee no two rows ever share a key (else replay updates or deletes the wrong rows)."`
	Refresh          bool     `help:"Regenerate the trigger and layout of tables already captured (after ALTER TABLE), or change their --where/--key."`
	NoSequences      bool     `help:"Do not capture the sequences the tables' inserts draw from (serial and identity columns, DEFAULT nextval(...)); captured by default so that the target's stand where the provider's do at cut-over."`
	AlsoInOtherQueue bool     `help:"Capture a table even when another queue captures it already (each queue then gets every write)."`
	Tables           []string `arg:"" name:"table" help:"Tables or sequences: name, schema.name or quoted (\"My Schema\".\"Odd Table\")."`
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
	var key []string
	for _, k := range c.Key {
		if k = strings.TrimSpace(k); k != "" {
			key = append(key, k)
		}
	}
	specs := make([]queue.TableSpec, len(c.Tables))
	for i, t := range c.Tables {
		specs[i] = queue.TableSpec{Name: t, Where: c.Where, Key: key, Refresh: c.Refresh, NoSequences: c.NoSequences,
			AlsoInOtherQueue: c.AlsoInOtherQueue, KeyNotUnique: c.KeyNotUnique}
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
			fmt.Fprintf(out, "created queue %s\n", c.Queue)
		}
		also := ""
		if len(res.OtherQueues) > 0 {
			also = "; also captured by queue " + strings.Join(res.OtherQueues, ", ")
		}
		switch {
		case res.Unchanged && res.Sequence:
			fmt.Fprintf(out, "sequence %s: already captured by queue %s, unchanged\n", res.Table, c.Queue)
		case res.Unchanged:
			fmt.Fprintf(out, "table %s: already captured by queue %s, unchanged\n", res.Table, c.Queue)
		case res.Sequence:
			fmt.Fprintf(out, "sequence %s: captured by queue %s\n", res.Table, c.Queue)
		case res.Refreshed:
			fmt.Fprintf(out, "table %s: trigger regenerated in queue %s (layout %d)\n", res.Table, c.Queue, res.Layout)
		default:
			fmt.Fprintf(out, "table %s: captured by queue %s (layout %d%s)\n", res.Table, c.Queue, res.Layout, also)
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
	Tables []string `arg:"" name:"table" help:"Tables or sequences to stop capturing."`
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
	for _, t := range c.Tables {
		tbl, err := queue.RemoveTable(ctx, conn, c.Queue, t)
		if err != nil {
			return oneLine(err)
		}
		fmt.Fprintf(out, "%s: no longer captured by queue %s\n", tbl, c.Queue)
	}
	return nil
}

// oneLine keeps an error to one line: the server's detail lines stay out of the message.
func oneLine(err error) error {
	if !strings.Contains(err.Error(), "\n") {
		return err
	}
	return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", " "))
}
