package handlers_test

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
)

// schemaPrefix is a custom handler: it moves tables of schemas named legacy_* into app_* on
// the target (legacy_billing.invoice → app_billing.invoice), for a target whose schemas were
// renamed.
type schemaPrefix struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func (h schemaPrefix) Handle(ev *change.Event) (bool, error) {
	if rest, ok := strings.CutPrefix(ev.Table.Schema, h.From); ok {
		ev.Table.Schema = h.To + rest
	}
	return true, nil
}

// A custom handler is a Go type with a Handle method, registered by name on the worker's
// Registry and chosen per table with `skiff subscribe --handler TABLE=NAME
// --handler-config TABLE=JSON`.
func ExampleRegistry_Register() {
	reg := handlers.NewRegistry()
	err := reg.Register("schema_prefix", func(t change.Table, cfg json.RawMessage) (handlers.Handler, error) {
		h := schemaPrefix{From: "legacy_", To: "app_"}
		if len(cfg) > 0 {
			if err := json.Unmarshal(cfg, &h); err != nil {
				return nil, err
			}
		}
		return h, nil
	})
	if err != nil {
		panic(err)
	}

	table := change.Table{Schema: "legacy_billing", Name: "invoice"}
	h, err := reg.ForRoute(change.Route{Source: table, Dest: table, Handler: "schema_prefix"})
	if err != nil {
		panic(err)
	}
	ev := &change.Event{Op: change.Insert, Table: table}
	keep, err := h.Handle(ev)
	fmt.Println(keep, err, ev.Table)
	// Output: true <nil> "app_billing"."invoice"
}
