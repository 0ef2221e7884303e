package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// EventCmd is `skiff event`: look at an event the worker cannot apply and, on an operator's
// explicit request, set it aside. The worker never sets anything aside by itself.
type EventCmd struct {
	Show EventShowCmd `cmd:"" help:"Show the event the worker fails on (or --event ID): table, operation, layout, data, error."`
	Skip EventSkipCmd `cmd:"" help:"Set events of the batch the worker is applying aside into skiff.dead_letter on the target, with a reason; the rest of the batch applies."`
}

// deadLetterVersion is the target schema version that has skiff.dead_letter.
const deadLetterVersion = 6

// eventFlags are the flags both event commands take.
type eventFlags struct {
	Provider string `help:"Provider database: libpq connection string or URI." required:"" env:"SKIFF_PROVIDER"`
	Target   string `help:"Target database: libpq connection string or URI." required:"" env:"SKIFF_TARGET"`
	Queue    string `help:"Queue of the subscription." required:"" env:"SKIFF_QUEUE"`
	Consumer string `help:"Consumer name on the provider (default: the one of the queue's subscription on the target)."`
}

// EventShowCmd is `skiff event show`.
type EventShowCmd struct {
	eventFlags
	Event int64 `help:"Event id (default: the event the subscription's last error names)."`
}

// EventSkipCmd is `skiff event skip`.
type EventSkipCmd struct {
	eventFlags
	Event  []int64 `help:"Event id to set aside (repeat for several); it must be in the batch the worker is applying." required:""`
	Reason string  `help:"Why the event is set aside (kept in skiff.dead_letter)." required:""`
}

// eventSession is what both commands open: both databases, the consumer's name and open batch.
type eventSession struct {
	prov, tgt *pgx.Conn
	consumer  string
	batch     int64 // the consumer's open batch, 0 when none
	lastEvent int64 // the event the subscription's last error names, 0 when none
	lastError string
}

func openEventSession(ctx context.Context, f eventFlags, app string, need int64) (*eventSession, error) {
	s := &eventSession{}
	var err error
	if s.tgt, err = pg.Connect(ctx, f.Target, app); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if err := migrate.Require(ctx, s.tgt, migrate.Target, pg.Describe(s.tgt.Config()), need); err != nil {
		s.close(ctx)
		return nil, err
	}
	if s.consumer, _, err = consumerFor(ctx, s.tgt, f.Consumer, f.Queue, f.Target, f.Provider); err != nil {
		s.close(ctx)
		return nil, err
	}
	if s.lastEvent, s.lastError, err = apply.LastError(ctx, s.tgt, f.Queue, s.consumer); err != nil {
		s.close(ctx)
		return nil, fmt.Errorf("target: %w", err)
	}
	if s.prov, err = pg.Connect(ctx, f.Provider, app); err != nil {
		s.close(ctx)
		return nil, fmt.Errorf("provider: %w", err)
	}
	if err := requireSchema(ctx, s.prov, migrate.Provider); err != nil {
		s.close(ctx)
		return nil, err
	}
	infos, err := queue.GetConsumerInfo(ctx, s.prov)
	if err != nil {
		s.close(ctx)
		return nil, fmt.Errorf("provider: %w", err)
	}
	found := false
	for _, in := range infos {
		if in.Queue == f.Queue && in.Consumer == s.consumer {
			s.batch, found = in.CurrentBatch, true
		}
	}
	if !found {
		s.close(ctx)
		return nil, fmt.Errorf("provider: consumer %s is not registered on queue %s", s.consumer, f.Queue)
	}
	return s, nil
}

func (s *eventSession) close(ctx context.Context) {
	for _, c := range []*pgx.Conn{s.prov, s.tgt} {
		if c != nil {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}
}

// find reads an event of the consumer's open batch.
func (s *eventSession) find(ctx context.Context, q string, id int64) (*queue.BatchEvent, error) {
	if s.batch == 0 {
		return nil, fmt.Errorf("consumer %s has no open batch on queue %s: the worker is not failing on a batch (event %d may be applied already)", s.consumer, q, id)
	}
	e, err := queue.FindEvent(ctx, s.prov, q, s.batch, id)
	if errors.Is(err, queue.ErrEventNotInBatch) {
		return nil, fmt.Errorf("event %d is not in batch %d, the batch consumer %s is applying: only its events can be shown or set aside", id, s.batch, s.consumer)
	}
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	return e, nil
}

// Run prints the event.
func (c *EventShowCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	s, err := openEventSession(ctx, c.eventFlags, "skiff event show", identityVersion)
	if err != nil {
		return err
	}
	defer s.close(ctx)
	id := c.Event
	if id == 0 {
		if s.lastEvent == 0 {
			if s.lastError == "" {
				return fmt.Errorf("consumer %s of queue %s has no last error: nothing is failing (give --event ID to show an event of its open batch)", s.consumer, c.Queue)
			}
			return fmt.Errorf("the last error of consumer %s names no event (give --event ID): %s", s.consumer, oneLine(errors.New(s.lastError)))
		}
		id = s.lastEvent
	}
	e, err := s.find(ctx, c.Queue, id)
	if err != nil {
		return err
	}
	printEvent(rt.Out, e, s, c.Queue)
	return nil
}

func printEvent(w io.Writer, e *queue.BatchEvent, s *eventSession, q string) {
	p := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-11s "+format+"\n", append([]any{label}, args...)...)
	}
	of := "of " + e.Table.String()
	if e.Op == change.Execute {
		of = "(skiff execute)"
	}
	fmt.Fprintf(w, "event %d %s in batch %d (queue %s, consumer %s)\n", e.ID, of, e.BatchID, q, s.consumer)
	p("operation", "%s", e.Op)
	retried := ""
	if e.Retried {
		retried = " (put back by the retry queue)"
	}
	p("txid", "%d, written %s%s", e.TxID, e.Time.UTC().Format(time.RFC3339Nano), retried)
	cols := make([]string, len(e.Columns))
	for i, col := range e.Columns {
		cols[i] = change.QuoteIdent(col)
	}
	if e.Op != change.Execute {
		p("layout", "%d (%s)", e.Layout, strings.Join(cols, ", "))
	}
	if e.Data != nil {
		p("data", "%s", *e.Data)
	}
	if e.OldKey != nil {
		p("old key", "%s", *e.OldKey)
	}
	switch {
	case e.Event.Err != nil:
		p("decoded", "no: %s", oneLine(e.Event.Err))
	case e.Event.Exec != nil:
		tables := make([]string, len(e.Event.Exec.Tables))
		for i, t := range e.Event.Exec.Tables {
			tables[i] = t.String()
		}
		p("script", "%s (search_path %s; tables changed: %s)", e.Event.Exec.Name, e.Event.Exec.SearchPath, strings.Join(tables, ", "))
	case e.Op != change.Truncate:
		parts := make([]string, len(e.Event.Columns))
		for i, col := range e.Event.Columns {
			v := "NULL"
			if e.Event.Values[i].Valid {
				v = e.Event.Values[i].Text
			}
			parts[i] = change.QuoteIdent(col) + "=" + v
		}
		p("decoded", "%s", strings.Join(parts, " "))
	}
	if e.ID == s.lastEvent && s.lastError != "" {
		p("error", "%s", oneLine(errors.New(s.lastError)))
	}
	fmt.Fprintf(w, "to set it aside (the worker leaves it out, applies the rest of the batch and records it in skiff.dead_letter on the target):\n"+
		"  skiff event skip --provider PROVIDER --target TARGET --queue %s --consumer '%s' --event %d --reason TEXT\n", q, s.consumer, e.ID)
}

// Run sets the events aside.
func (c *EventSkipCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	s, err := openEventSession(ctx, c.eventFlags, "skiff event skip", deadLetterVersion)
	if err != nil {
		return err
	}
	defer s.close(ctx)
	for _, id := range c.Event {
		e, err := s.find(ctx, c.Queue, id)
		if err != nil {
			return err
		}
		d := apply.DeadLetter{EventID: e.ID, BatchID: e.BatchID, TxID: e.TxID, Table: e.Table, Op: e.Op, Layout: e.Layout,
			Data: e.Data, OldKey: e.OldKey, Reason: c.Reason}
		if e.Event.Err == nil && e.Op != change.Truncate {
			d.KeyColumns, d.KeyValues = e.Event.Key, e.Event.KeyValues()
		}
		switch {
		case e.ID == s.lastEvent:
			d.Error = s.lastError
		case e.Event.Err != nil:
			d.Error = e.Event.Err.Error()
		}
		if err := apply.SetAsideEvent(ctx, s.tgt, c.Queue, s.consumer, d); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		rt.Log.Warn("event set aside by the operator", "queue", c.Queue, "consumer", s.consumer, "batch_id", e.BatchID,
			"event_id", e.ID, "table", e.Table.String(), "op", e.Op.String(), "reason", c.Reason)
		fmt.Fprintf(rt.Out, "event %d of %s (%s) set aside: the worker leaves it out of batch %d and records it in skiff.dead_letter\n",
			e.ID, e.Table, e.Op, e.BatchID)
	}
	return nil
}
