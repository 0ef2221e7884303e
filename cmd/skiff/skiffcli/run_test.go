package skiffcli

import "io"

// run is Run with the default options: the built-in handlers, the build's version.
func run(args []string, stdout, stderr io.Writer) int {
	return Run(args, stdout, stderr, Options{})
}
