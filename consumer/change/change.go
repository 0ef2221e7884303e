// Package change holds the types every part of skiff shares: a change event, the batch it
// belongs to and the position a target records. It does no I/O and imports nothing of skiff,
// so that sources, handlers and appliers can all depend on it without cycles.
package change

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Op is the kind of row change an event carries.
type Op byte

// The operations a capture trigger or a decoding plugin reports.
const (
	Insert   Op = 'I'
	Update   Op = 'U'
	Delete   Op = 'D'
	Truncate Op = 'T'
)

// The operations a handler makes of an Update when it cannot know whether the target holds the
// row before it: a consumer-side filter sees only an update's new row, so a row may move into
// the filter (the target lacks it) or out of it (the target holds it) unseen. No source emits
// them.
const (
	// Upsert writes the new row whether or not the target holds it: the row its key finds
	// (OldKey, or the row's own key) is overwritten, else the row is inserted.
	Upsert Op = 'S'
	// Remove deletes the row its key finds (as a Delete does), if the target holds one: a
	// missing row is expected, not a warning.
	Remove Op = 'R'
)

// Execute carries SQL that `skiff execute` ran on the provider (Event.Exec): every target runs
// it at its place in the stream, after the events before it and before those after it.
const Execute Op = 'X'

// String returns the SQL verb of the operation.
func (o Op) String() string {
	switch o {
	case Insert:
		return "INSERT"
	case Update:
		return "UPDATE"
	case Delete:
		return "DELETE"
	case Truncate:
		return "TRUNCATE"
	case Upsert:
		return "UPSERT"
	case Remove:
		return "REMOVE"
	case Execute:
		return "EXECUTE"
	}
	return "UNKNOWN(" + string(rune(o)) + ")"
}

// Table names a relation by schema and name, unquoted.
type Table struct {
	Schema string
	Name   string
}

// String returns the table as a quoted, schema-qualified SQL identifier.
func (t Table) String() string {
	if t.Schema == "" {
		return QuoteIdent(t.Name)
	}
	return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Name)
}

// QuoteIdent quotes an identifier for SQL text, doubling embedded quotes.
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// QuoteLiteral quotes a string as an SQL literal, doubling embedded single quotes: for
// sessions with standard_conforming_strings on (every skiff connection, see internal/pg),
// where a backslash is an ordinary character. Values go as parameters where a statement
// takes them; this is for SQL that cannot (COPY (…) TO STDOUT).
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Value is one column value in PostgreSQL's text representation. Valid is false for NULL,
// which keeps NULL and the empty string apart.
type Value struct {
	Text  string
	Valid bool
}

// Text returns a non-NULL value.
func Text(s string) Value { return Value{Text: s, Valid: true} }

// Null is the NULL value.
var Null = Value{}

// Event is one row change, in the order the provider committed it.
//
// For Insert, Update and Upsert, Columns and Values describe the new row; for Delete, the old
// row (at least its key columns); for Remove, a row holding its key (an Update's new row).
// Key names the primary-key columns, each of which appears in Columns. OldKey is set only for
// an Update (or the Upsert or Remove a handler made of one) that changed the key: the key's
// values before the update, in the order of Key. Truncate events carry only Table.
type Event struct {
	ID      int64 // provider event id (trigger queue) or a running number (logical decoding)
	TxID    int64 // provider transaction id, 0 when unknown
	Op      Op
	Table   Table
	Columns []string // column names; shared between events of one table layout, do not modify
	Values  []Value
	Key     []string // primary-key column names; shared, do not modify
	OldKey  []Value
	// Err is set by a source that could not decode the event's row (for instance a row
	// written between a DDL and the refresh of its table's capture, whose columns cannot be
	// told): only ID, TxID, Op and Table are set. A consumer that would apply the event must
	// fail with Err; one that drops it anyway (table not subscribed, row held by an initial
	// copy, set aside by an operator) need not.
	Err error
	// Exec is the SQL of an Execute event (nil for every other operation).
	Exec *Exec
}

// Exec is what an Execute event carries: SQL the provider ran in one transaction, and the
// captured tables of the queue it changed.
type Exec struct {
	// Name is where the SQL came from (the file name given to skiff execute).
	Name string
	// SQL is the script as given; targets cut it into statements as the provider did.
	SQL string
	// SearchPath is the provider session's search_path when the SQL started.
	SearchPath string
	// Tables are the captured tables of the queue whose definition the SQL changed (columns,
	// name, indexes, constraints, triggers), by their names before it; a target whose
	// subscription routes one of them through a rename or a handler cannot run it as written.
	Tables []Table
}

// Value returns the value of the named column and whether the event has that column.
func (e *Event) Value(column string) (Value, bool) {
	for i, c := range e.Columns {
		if c == column {
			return e.Values[i], true
		}
	}
	return Value{}, false
}

// KeyValues returns the values of the key columns as they identify the target row: the old key
// for an Update that changed it, the row's key columns otherwise.
func (e *Event) KeyValues() []Value {
	if e.OldKey != nil {
		return e.OldKey
	}
	out := make([]Value, len(e.Key))
	for i, k := range e.Key {
		out[i], _ = e.Value(k)
	}
	return out
}

// Position is where a source stands: for the trigger queue the tick a batch ends at, for
// logical decoding the LSN of the last commit applied. The target records it in the same
// transaction as the batch's changes.
//
// A position is of one kind: a tick (LSN 0) or an LSN (Tick 0); the zero Position is "nothing
// applied yet" and comes before every other. Positions of one source are ordered (Compare);
// positions of different kinds are not comparable — a subscription reads one source for its
// whole life, and Compare's answer for two kinds means nothing.
type Position struct {
	Tick int64  // trigger queue: id of the tick the batch ends at
	LSN  uint64 // logical decoding: end LSN of the last transaction in the batch
}

// IsZero reports whether p is the zero Position: nothing applied yet.
func (p Position) IsZero() bool { return p == Position{} }

// Compare orders two positions of one source: -1 when p comes before o, 0 when they are
// equal, +1 when p comes after o. LSNs are compared when either position has one (logical
// decoding), ticks otherwise (the trigger queue: tick ids grow with time, they come from one
// provider sequence). The zero Position comes before every other.
func (p Position) Compare(o Position) int {
	if p.LSN != 0 || o.LSN != 0 {
		return cmp.Compare(p.LSN, o.LSN)
	}
	return cmp.Compare(p.Tick, o.Tick)
}

// String returns the position as an operator reads it: "tick 42", "LSN 0/16B3748", or "none"
// for the zero Position.
func (p Position) String() string {
	switch {
	case p.LSN != 0:
		return fmt.Sprintf("LSN %X/%X", p.LSN>>32, uint32(p.LSN))
	case p.Tick != 0:
		return "tick " + strconv.FormatInt(p.Tick, 10)
	}
	return "none"
}

// Batch is a unit of replay: every change of a set of whole provider transactions, applied on
// the target in one transaction. Events are not held here: sources stream them, so that memory
// stays bounded whatever the batch size.
type Batch struct {
	ID    int64    // source batch id (trigger queue) or a running number
	Queue string   // queue (table group) the batch belongs to
	Prev  Position // position before the batch
	End   Position // position after the batch; recorded on the target with the batch
	// EndTime is the provider's clock at End (the end tick's time, or the last commit's):
	// once the batch is applied, the time since EndTime is the replication lag.
	EndTime time.Time
}

// TableState is where a subscribed table stands on a target.
type TableState string

// The states of a subscribed table, in the order a table goes through them.
const (
	// StateCopying: the initial copy runs; the worker skips the table's events.
	StateCopying TableState = "copying"
	// StateCatchingUp: the copy is done at Route.CopyPoint; the worker skips the events the
	// source says the copy holds (consumer.CopyPoints) and applies the rest.
	StateCatchingUp TableState = "catching-up"
	// StateInSync: every event of the table is applied.
	StateInSync TableState = "in-sync"
)

// Route is one subscribed table as the target records it: where its events go, in which
// state it is and which custom handler (if any) transforms them.
type Route struct {
	Source  Table
	Dest    Table
	State   TableState
	Handler string // name of a custom handler in the worker's registry, "" for none
	Config  string // the handler's configuration (JSON), "" for none
	// CopyPoint is where the table's copy was taken, "" before a copy publishes one: text
	// the source writes and reads (the trigger queue's is a txid snapshot, "xmin:xmax:xip"),
	// opaque to everything else (consumer.CopyPoints). The target keeps it in
	// skiff.table_state.copy_snapshot.
	CopyPoint string
}
