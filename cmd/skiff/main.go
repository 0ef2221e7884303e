// Command skiff replicates PostgreSQL tables from a provider to a target through capture
// triggers and an in-database event queue, on every server from PostgreSQL 8.4 on.
//
// It is skiffcli.Main with the built-in handlers; a binary with custom handlers is the same
// few lines with a registry of its own (examples/customhandler).
package main

import "github.com/skiffdb/skiff/cmd/skiff/skiffcli"

// version is set by the linker (-X main.version=...); without it, --version tells what the
// build knows.
var version string

func main() {
	skiffcli.Main(skiffcli.Options{Version: version})
}
