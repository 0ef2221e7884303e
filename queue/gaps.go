package queue

import (
	"context"
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// CaptureGap is a captured table some of whose writes no capture trigger of skiff's records:
// one was disabled (ALTER TABLE … DISABLE TRIGGER, by the owner or a bulk load that forgot to
// enable it again), set to fire on replicas only, or dropped. Nothing else notices: the queue
// simply gets no events for those writes, and the targets miss them.
type CaptureGap struct {
	Queue string
	Table change.Table
	// Missing lists the operations not captured, of INSERT, UPDATE, DELETE and TRUNCATE.
	Missing []string
	// Disabled names skiff's triggers on the table that do not fire in an ordinary session
	// (disabled, or ENABLE REPLICA), quoted; Dropped those that are gone.
	Disabled []string
	Dropped  []string
}

// Problem says what the gap means and how to close it, for status and the ticker's log.
func (g CaptureGap) Problem() string {
	var fix []string
	for _, name := range g.Disabled {
		fix = append(fix, fmt.Sprintf("as the table's owner, ALTER TABLE %s ENABLE TRIGGER %s", g.Table, name))
	}
	if len(g.Dropped) > 0 {
		fix = append(fix, fmt.Sprintf("skiff table add --db PROVIDER --queue %s --refresh %s (%s dropped)", g.Queue, g.Table, strings.Join(g.Dropped, ", ")))
	}
	return fmt.Sprintf("table %s: its %s are not captured (skiff's trigger disabled or dropped), so the targets of queue %s miss them; "+
		"fix: %s; then, on each target, skiff table resync the table (the writes made meanwhile are in no queue)",
		g.Table, strings.Join(g.Missing, ", "), g.Queue, strings.Join(fix, "; then "))
}

// Trigger type bits (pg_trigger.tgtype).
const (
	tgInsert   = 1 << 2
	tgDelete   = 1 << 3
	tgUpdate   = 1 << 4
	tgTruncate = 1 << 5
)

// CaptureGaps returns every table of a trigger queue whose capture misses some operation:
// the row trigger, the TRUNCATE trigger and the statement-level INSERT trigger (when the
// capture has one) recorded for it, each either present and firing in an ordinary session
// (tgenabled O, or A), or not. Partitions and inheritance children are not looked at: their
// triggers are the parent's (from PostgreSQL 11) or given again by the ticker's maintenance.
func CaptureGaps(ctx context.Context, db pg.DB) ([]CaptureGap, error) {
	rows, err := db.Query(ctx, `SELECT q.queue_name, c.table_schema, c.table_name, c.row_trigger, c.trunc_trigger,
			'skiff_insert_q' || c.queue_id::text, t.tgname::text, t.tgtype::integer, t.tgenabled::text
		FROM skiff.captured_table c
		JOIN skiff.queue q ON q.queue_id = c.queue_id
		JOIN pg_catalog.pg_class r ON r.oid = c.table_oid
		LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.table_oid
			AND t.tgname::text IN (c.row_trigger, c.trunc_trigger, 'skiff_insert_q' || c.queue_id::text)
		WHERE c.func_name <> ''
		ORDER BY 1, 2, 3, 7`)
	if err != nil {
		return nil, wrap(err, "capture triggers", nil)
	}
	defer rows.Close()
	type state struct {
		gap                CaptureGap
		rowTrig, truncTrig string
		insTrig            string
		fires              int
		rowHasInsert       bool
		seen               map[string]bool
	}
	var tables []*state
	for rows.Next() {
		var queueName, schema, name, rowTrig, truncTrig, insTrig string
		var tgname, enabled *string
		var tgtype *int32
		if err := rows.Scan(&queueName, &schema, &name, &rowTrig, &truncTrig, &insTrig, &tgname, &tgtype, &enabled); err != nil {
			return nil, fmt.Errorf("capture triggers: %w", err)
		}
		tbl := change.Table{Schema: schema, Name: name}
		if len(tables) == 0 || tables[len(tables)-1].gap.Queue != queueName || tables[len(tables)-1].gap.Table != tbl {
			tables = append(tables, &state{gap: CaptureGap{Queue: queueName, Table: tbl}, rowTrig: rowTrig, truncTrig: truncTrig,
				insTrig: insTrig, seen: map[string]bool{}})
		}
		s := tables[len(tables)-1]
		if tgname == nil {
			continue
		}
		s.seen[*tgname] = true
		if *tgname == rowTrig && *tgtype&tgInsert != 0 {
			s.rowHasInsert = true
		}
		if *enabled == "O" || *enabled == "A" {
			s.fires |= int(*tgtype)
		} else {
			s.gap.Disabled = append(s.gap.Disabled, change.QuoteIdent(*tgname))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("capture triggers: %w", err)
	}
	var out []CaptureGap
	for _, s := range tables {
		for _, op := range []struct {
			bit  int
			name string
		}{{tgInsert, "INSERTs"}, {tgUpdate, "UPDATEs"}, {tgDelete, "DELETEs"}, {tgTruncate, "TRUNCATEs"}} {
			if s.fires&op.bit == 0 {
				s.gap.Missing = append(s.gap.Missing, op.name)
			}
		}
		if len(s.gap.Missing) == 0 {
			continue
		}
		wanted := []string{s.rowTrig, s.truncTrig}
		if s.seen[s.rowTrig] && !s.rowHasInsert {
			wanted = append(wanted, s.insTrig) // a statement-level INSERT capture
		}
		for _, n := range wanted {
			if !s.seen[n] {
				s.gap.Dropped = append(s.gap.Dropped, change.QuoteIdent(n))
			}
		}
		out = append(out, s.gap)
	}
	return out, nil
}
