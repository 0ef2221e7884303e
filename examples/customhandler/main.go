// Command customhandler is skiff with a handler of its own: the whole of skiff's command
// line (skiffcli.Main) with the built-in handlers and "legacy" (package legacy), which
// replays the tables of schema legacy into schema app and can split a column out of a table
// into a table of its own (one provider row, two target rows).
//
//	go build -o skiff ./examples/customhandler
//	./skiff subscribe ... --handler legacy.users=legacy \
//	    --handler-config 'legacy.users={"split_column": "email", "split_table": "user_emails"}'
//
// The worker, the initial copy, skiff table resync and skiff compare run the same handler, so
// the target gets, and is compared with, exactly what replication writes. docs/handlers.md
// describes the handler API.
package main

import (
	"github.com/skiffdb/skiff/cmd/skiff/skiffcli"
	"github.com/skiffdb/skiff/examples/customhandler/legacy"
)

func main() {
	skiffcli.Main(skiffcli.WithHandler(legacy.Name, legacy.New))
}
