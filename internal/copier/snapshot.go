package copier

import "github.com/skiffdb/skiff/consumer/change"

// Snapshot is the provider snapshot a table was copied under.
type Snapshot = change.Snapshot
