package skiffcli

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// ExecuteCmd is `skiff execute`: DDL through the queue. The files run on the provider in one
// transaction, with the capture of the tables they change refreshed and an event per file
// queued in the same transaction; every worker runs each file on its target at that point of
// the stream, in the batch's transaction.
type ExecuteCmd struct {
	Provider string   `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Queue    string   `help:"Queue whose tables the SQL changes (its workers run it on their targets)." required:"" env:"SKIFF_QUEUE"`
	Files    []string `arg:"" name:"FILE.sql" help:"SQL files, run in order in one provider transaction (DDL: statements that can run in a transaction)." type:"existingfile"`
}

// Run executes the files.
func (c *ExecuteCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	scripts := make([]queue.Script, 0, len(c.Files))
	for _, f := range c.Files {
		text, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		stmts, err := pg.SplitStatements(string(text))
		if err != nil {
			return fmt.Errorf("%s %w (nothing changed)", f, err)
		}
		if len(stmts) == 0 {
			return fmt.Errorf("%s: no SQL statement (nothing changed)", f)
		}
		for _, st := range stmts {
			if why := notInTransaction(st); why != "" {
				return fmt.Errorf("%s line %d: %s (nothing changed)", f, st.Line, why)
			}
		}
		scripts = append(scripts, queue.Script{Name: f, SQL: string(text), Statements: stmts})
	}
	conn, err := pg.Connect(ctx, c.Provider, "skiff execute")
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// skiff.insert_event comes with provider schema 6.
	if err := migrate.Require(ctx, conn, migrate.Provider, pg.Describe(conn.Config()), 6); err != nil {
		return err
	}
	done, err := queue.Execute(ctx, conn, c.Queue, scripts)
	if err != nil {
		return fmt.Errorf("execute: %w (nothing changed on the provider, nothing queued)", err)
	}
	for _, d := range done {
		fmt.Fprintf(rt.Out, "%s: executed on the provider, queued as event %d\n", d.Script, d.EventID)
		for _, t := range d.Refreshed {
			fmt.Fprintf(rt.Out, "    capture of %s refreshed\n", t)
		}
		for _, t := range d.Dropped {
			fmt.Fprintf(rt.Out, "    table %s dropped: its capture stays until skiff table remove\n", t)
		}
		rt.Log.Info("executed", "queue", c.Queue, "script", d.Script, "event_id", d.EventID, "tables_changed", len(d.Changed))
	}
	return nil
}

// notInTransaction says why a statement cannot be executed through the queue ("" when it
// can): it cannot run inside a transaction block, it ends or starts one, it changes the
// worker's session beyond the batch, or it needs psql.
func notInTransaction(st pg.Statement) string {
	if strings.HasPrefix(st.SQL, `\`) {
		return "a psql meta-command: execute sends SQL statements only"
	}
	w := st.Words(8)
	has := func(word string) bool { return slices.Contains(w, word) }
	at := func(i int, word string) bool { return i < len(w) && w[i] == word }
	verb := ""
	if len(w) > 0 {
		verb = w[0]
	}
	if len(w) > 1 && slices.Contains([]string{"DATABASE", "TABLESPACE", "SUBSCRIPTION", "SYSTEM", "INDEX", "UNIQUE", "TRANSACTION", "PREPARED", "ALL"}, w[1]) {
		verb += " " + w[1]
	}
	cannot := verb + " cannot run inside a transaction block: execute runs the files in one transaction on the provider and in a batch's transaction on each target; run it on each side yourself"
	switch {
	case at(0, "VACUUM"), at(0, "DISCARD"),
		at(0, "CREATE") && (at(1, "DATABASE") || at(1, "TABLESPACE") || at(1, "SUBSCRIPTION")),
		at(0, "DROP") && (at(1, "DATABASE") || at(1, "TABLESPACE") || at(1, "SUBSCRIPTION")),
		at(0, "ALTER") && at(1, "SYSTEM"),
		(at(0, "CREATE") || at(0, "DROP") || at(0, "REINDEX")) && has("CONCURRENTLY"),
		at(0, "REINDEX") && (has("DATABASE") || has("SYSTEM")),
		at(0, "CLUSTER") && (len(w) == 1 || len(w) == 2 && at(1, "VERBOSE")):
		return cannot
	case at(0, "BEGIN"), at(0, "START"), at(0, "COMMIT"), at(0, "END"), at(0, "ABORT"),
		at(0, "ROLLBACK") && !at(1, "TO"), at(0, "PREPARE") && at(1, "TRANSACTION"):
		return verb + ": execute makes the transaction itself (one on the provider for all files, the batch's on each target)"
	case at(0, "SET") && !at(1, "LOCAL") && !at(1, "CONSTRAINTS") && !at(1, "TRANSACTION"), at(0, "RESET"):
		return verb + " would outlast the batch's transaction on the targets' worker connections: use SET LOCAL"
	case at(0, "COPY") && (has("STDIN") || has("STDOUT")):
		return "COPY from or to the client: execute takes no data"
	}
	return ""
}
