package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// secs turns seconds into a duration rounded to the second, for messages.
func secs(s float64) time.Duration {
	return (time.Duration(s * float64(time.Second))).Round(time.Second)
}

// Text writes the report for humans: one block per queue, its consumers with their lag and
// tables, then long transactions and problems.
func Text(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	p("provider %s", r.Provider)
	if r.Target != "" {
		p("   target %s", r.Target)
	}
	p("   at %s\n", r.GeneratedAt.Format(time.RFC3339))
	if len(r.Queues) == 0 {
		p("no queue on the provider (skiff table add creates one)\n")
	}
	for _, q := range r.Queues {
		if q.Source == "logical" {
			p("\nqueue %s\tlogical (%s)\n", q.Name, q.Plugin)
		} else {
			p("\nqueue %s\tlast tick %d\t%s ago\t%d events pending\n", q.Name, q.LastTick, secs(q.TickAgeSeconds), q.PendingEvents)
		}
		if q.Stall != "" {
			p("  ! %s\n", q.Stall)
		}
		if len(q.Consumers) == 0 {
			p("  no consumer (skiff subscribe registers one)\n")
		}
		for _, c := range q.Consumers {
			batch := "idle"
			if c.CurrentBatch != 0 {
				batch = fmt.Sprintf("batch %d → tick %d", c.CurrentBatch, c.BatchEndTick)
			}
			switch sl := c.Slot; {
			case sl != nil && !sl.Missing:
				lag := "unknown"
				if sl.LagSeconds != nil {
					lag = secs(*sl.LagSeconds).String()
				}
				active := "inactive"
				if sl.Active {
					active = "streaming"
				}
				p("  consumer %s\tslot %s %s\tconfirmed %s\tlag %s, %s\tWAL kept %s\n", c.Name, sl.Name, active, sl.ConfirmedLSN,
					lag, bytesText(sl.LagBytes), bytesText(sl.RetainedWALBytes))
			case sl != nil:
				p("  consumer %s\tslot %s missing\n", c.Name, sl.Name)
			case q.Source == "logical":
				p("  consumer %s\tno slot\n", c.Name)
			default:
				p("  consumer %s\tlag %s, %d events\tat tick %d\t%s\tseen %s ago\n", c.Name, secs(c.LagSeconds), c.LagEvents,
					c.LastTick, batch, secs(c.LastSeenSeconds))
			}
			if c.Stall != "" {
				p("    ! %s\n", c.Stall)
			}
			s := c.Subscription
			if s == nil {
				continue
			}
			applied := "never"
			if s.AppliedAt != nil {
				applied = s.AppliedAt.UTC().Format(time.RFC3339)
			}
			at := fmt.Sprintf("tick %d", s.Tick)
			if q.Source == "logical" {
				at = "LSN " + s.LSN
				if s.LSN == "" {
					at = "no LSN yet"
				}
			}
			p("    target at %s\t%d batches, %d events applied\tlast applied %s\n", at, s.BatchesApplied, s.EventsApplied, applied)
			if s.LastError != "" {
				at := ""
				if s.LastErrorAt != nil {
					at = " at " + s.LastErrorAt.UTC().Format(time.RFC3339)
				}
				p("    last error%s: %s\n", at, oneLine(s.LastError, 600))
				if s.LastErrorEvent != 0 {
					p("    (skiff event show describes event %d; skiff event skip sets it aside)\n", s.LastErrorEvent)
				}
			}
			if s.Merge != "" {
				p("    merged (tables shared with other providers), conflicts settled by %s: %d so far", s.Merge, s.Conflicts)
				if s.LastConflict != "" {
					p(", last: %s", oneLine(s.LastConflict, 300))
				}
				p("\n")
			}
			if s.DeadLetters > 0 || s.DeadLettersPending > 0 {
				p("    %d events set aside by an operator (skiff.dead_letter)", s.DeadLetters)
				if s.DeadLettersPending > 0 {
					p(", %d more requested in the batch being applied", s.DeadLettersPending)
				}
				p("\n")
			}
			for _, t := range s.Tables {
				name := t.Source
				if t.Dest != t.Source {
					name += " → " + t.Dest
				}
				extra := ""
				if t.CopyRows > 0 {
					extra = fmt.Sprintf("%d rows, %.1f MB copied", t.CopyRows, float64(t.CopyBytes)/1e6)
				}
				if t.CopyBacklog > 0 {
					if extra != "" {
						extra += ", "
					}
					extra += fmt.Sprintf("%d events waiting for the copy", t.CopyBacklog)
				}
				state := t.State
				if t.Skipped {
					name, state = t.Source, "skipped"
				}
				p("    %s\t%s since %s\t%s\n", name, state, t.Since.UTC().Format(time.RFC3339), extra)
				if t.CopyError != "" {
					at := ""
					if t.CopyErrorAt != nil {
						at = " at " + t.CopyErrorAt.UTC().Format(time.RFC3339)
					}
					p("      ! copy failed%s (the worker copies it again): %s\n", at, oneLine(t.CopyError, 600))
				}
			}
		}
	}
	if len(r.LongTransactions) > 0 {
		p("\nlong provider transactions (hold back event table rotation):\n")
		for _, t := range r.LongTransactions {
			p("  pid %d\t%s@%s\t%s old\t%s\txmin %s\t%s\n", t.PID, t.User, t.Database, secs(t.AgeSeconds), t.State, t.XMin, oneLine(t.Query, 160))
		}
	}
	if len(r.Problems) > 0 {
		p("\nproblems:\n")
		for _, s := range r.Problems {
			p("  - %s\n", oneLine(s, 800))
		}
	}
	return tw.Flush()
}

// oneLine puts s on one line of at most max runes (errors end with their cause: keep
// enough of them).
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
