// Package target is the one owner of the SQL of skiff's target schema (schema skiff on a
// target, installed by the goose migrations in sql/target): subscriptions, table states, the
// copy backlog, the batch log, dead letters and the target's identity. Every statement on
// those tables is here, with types for what they hold; other packages (the applier, the
// copier, status, the CLI) call these functions, as River's packages call riverdriver.
//
// The functions take a pg.DB (a *pgx.Conn or a pgx.Tx: transactions are the caller's, so that a
// statement runs where the caller needs it, e.g. in a batch's transaction) and run one
// statement each unless their doc says otherwise. They return the driver's errors unwrapped,
// pgx.ErrNoRows included where one row was expected: the caller says what it was doing. The
// SQL runs on every target from PostgreSQL 8.4 on; what depends on the target schema's version
// takes a Version, read with ReadVersion from internal/migrate's bookkeeping, never guessed
// from the catalog.
package target

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/migrate"
)

// Key names a subscription: queue and consumer, unique together in skiff.subscription.
type Key struct {
	Queue, Consumer string
}

// Version is the installed version of the target schema (the number of the newest target
// migration applied; 0 when the schema is not installed). Its methods say what a version has.
type Version int64

// ReadVersion returns the target schema's version, as internal/migrate records it.
func ReadVersion(ctx context.Context, conn *pgx.Conn) (Version, error) {
	v, err := migrate.Version(ctx, conn, migrate.Target)
	return Version(v), err
}

// Installed says whether the target schema is installed at all.
func (v Version) Installed() bool { return v >= 1 }

// HasCopyProgress says whether table_state has copy_rows, copy_bytes and copy_progress_at (00002).
func (v Version) HasCopyProgress() bool { return v >= 2 }

// HasBacklog says whether skiff.copy_backlog exists (00003).
func (v Version) HasBacklog() bool { return v >= 3 }

// HasIdentity says whether skiff.target, the target's identity, exists (00004).
func (v Version) HasIdentity() bool { return v >= 4 }

// HasCopyError says whether table_state has copy_error and copy_error_at (00005).
func (v Version) HasCopyError() bool { return v >= 5 }

// HasDeadLetter says whether skiff.dead_letter and subscription.last_error_event exist (00006).
func (v Version) HasDeadLetter() bool { return v >= 6 }

// HasSchemaMap says whether skiff.schema_map exists (00007).
func (v Version) HasSchemaMap() bool { return v >= 7 }

// HasMerge says whether subscription has on_conflict, conflicts, last_conflict and
// last_conflict_at, the merge of several providers into shared tables (00008).
func (v Version) HasMerge() bool { return v >= 8 }
