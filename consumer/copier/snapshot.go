package copier

import "github.com/skiffdb/skiff/change"

// Snapshot is the provider snapshot a table was copied under.
type Snapshot = change.Snapshot
