// Command customhandler is skiff with one handler of its own: it is the whole of skiff's
// command line (skiffcli.Main) with a registry holding the built-in handlers and
// "legacy_schema", which replays the tables of schema legacy into schema app.
//
//	go build -o skiff ./examples/customhandler
//	./skiff subscribe ... --handler legacy.orders=legacy_schema
//
// The initial copy, skiff table resync and skiff compare run the same handler, so the target
// gets, and is compared with, exactly what replication writes.
package main

import (
	"encoding/json"

	"github.com/skiffdb/skiff/cmd/skiff/skiffcli"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
)

func main() {
	reg := handlers.NewRegistry() // the built-in handlers: columns, filter, renames
	err := reg.Register("legacy_schema", func(t change.Table, cfg json.RawMessage) (handlers.Handler, error) {
		return handlers.Func(func(ev *change.Event) (bool, error) {
			if ev.Table.Schema == "legacy" {
				ev.Table.Schema = "app" // new Columns/Values slices if you change those; never edit them in place
			}
			return true, nil // false drops the row; an error stops the batch, which is retried
		}), nil
	})
	if err != nil {
		panic(err)
	}
	skiffcli.Main(skiffcli.Options{Registry: reg})
}
