package consumer

import (
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// ExecuteError: an Execute event (skiff execute) changes a table this subscription
// replicates through a rename or a handler, where its SQL cannot run as written. The worker
// stops on it (the batch is retried) until an operator runs what the SQL means on the target
// and sets the event aside (skiff event skip).
type ExecuteError struct {
	EventID int64
	Exec    *change.Exec
	Table   change.Table // the source table
	Route   change.Route // how this subscription replicates it
}

func (e *ExecuteError) Error() string {
	how := "a rename to " + e.Route.Dest.String()
	if e.Route.Handler != "" {
		how = "handler " + e.Route.Handler + " (to " + e.Route.Dest.String() + ")"
	}
	sql := strings.TrimSpace(e.Exec.SQL)
	if len(sql) > 300 {
		sql = sql[:300] + "…"
	}
	return fmt.Sprintf("execute event %d (%s: %s) changes table %s, which this subscription replicates through %s: "+
		"it cannot run here as written. Run what it means on the target, then set the event aside: "+
		"skiff event skip --provider P --target T --queue Q --event %d --reason 'ran by hand'", e.EventID, e.Exec.Name, sql, e.Table, how, e.EventID)
}

// FailedEvent names the event, for skiff event show.
func (e *ExecuteError) FailedEvent() int64 { return e.EventID }

// executeWanted decides what this subscription does with an Execute event: run it (keep)
// when every table it changed that the subscription replicates keeps its name and has no
// handler, or when it changed no captured table at all (a new table, a function); leave it
// out when it changed only tables the subscription does not replicate; and stop with an
// ExecuteError when a table it changed reaches the target through a rename or a handler.
func (w *Worker) executeWanted(ev *change.Event, byTable map[change.Table]*tableRoute) (bool, error) {
	x := ev.Exec
	if x == nil {
		return false, fmt.Errorf("execute event %d carries no SQL", ev.ID)
	}
	mine := 0
	for _, t := range x.Tables {
		rt, ok := byTable[t]
		if !ok {
			continue
		}
		mine++
		if rt.route.Dest != t || rt.route.Handler != "" {
			return false, &ExecuteError{EventID: ev.ID, Exec: x, Table: t, Route: rt.route}
		}
	}
	if len(x.Tables) > 0 && mine == 0 {
		w.log.Info("execute event changes no table of this subscription: not run here", "worker", w.cfg.Name,
			"event_id", ev.ID, "script", x.Name)
		return false, nil
	}
	return true, nil
}
