package skiffcli

import (
	"log/slog"
	"strings"

	"github.com/skiffdb/skiff/internal/pg"
)

// warnPasswordArgs warns when a connection string on the command line holds a password: every
// local user can read a process's arguments (ps, /proc/PID/cmdline) for as long as it runs.
// The value itself is never logged.
func warnPasswordArgs(log *slog.Logger, args []string) {
	for _, a := range args {
		if (strings.Contains(a, "://") || strings.Contains(strings.ToLower(a), "password")) && pg.HasPassword(a) {
			log.Warn("a password is on the command line, where every local user can read it (ps); " +
				"give it with PGPASSWORD, a passfile (~/.pgpass), a service file or --config instead")
			return
		}
	}
}
