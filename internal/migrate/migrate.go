// Package migrate installs and upgrades skiff's schema on a provider or a target with goose,
// through a version store that works on every server from PostgreSQL 8.4 on (goose's own
// postgres dialect needs an identity column, PostgreSQL 10+).
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	skiffsql "github.com/skiffdb/skiff/sql"
)

// Role is which schema a database gets: a database may be provider and target at once.
type Role string

// The two schemas skiff installs.
const (
	Provider Role = "provider"
	Target   Role = "target"
)

func (r Role) fsys() (fs.FS, error) {
	switch r {
	case Provider:
		return fs.Sub(skiffsql.Provider, "provider")
	case Target:
		return fs.Sub(skiffsql.Target, "target")
	}
	return nil, fmt.Errorf("unknown schema role %q", r)
}

// Result says what Up did.
type Result struct {
	From, To int64    // schema version before and after
	Applied  []string // migration files applied, in order
}

// Up installs or upgrades the role's schema in the database cfg points at. Running it on an
// up-to-date schema changes nothing. Concurrent runs are serialised by an advisory lock.
func Up(ctx context.Context, cfg *pgx.ConnConfig, role Role) (*Result, error) {
	return upTo(ctx, cfg, role, goose.MaxVersion)
}

// open prepares the database for the role's migrations and returns a goose provider on it;
// the caller closes db. On error nothing is left open.
func open(ctx context.Context, cfg *pgx.ConnConfig, role Role) (*goose.Provider, *sql.DB, error) {
	fsys, err := role.fsys()
	if err != nil {
		return nil, nil, err
	}
	db := stdlib.OpenDB(*cfg)
	p, err := gooseProvider(ctx, db, fsys, role)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return p, db, nil
}

// gooseProvider connects, prepares the schema and makes the goose provider of a role on db.
func gooseProvider(ctx context.Context, db *sql.DB, fsys fs.FS, role Role) (*goose.Provider, error) {
	db.SetMaxOpenConns(2)
	if err := db.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := prepare(ctx, db, role); err != nil {
		return nil, fmt.Errorf("prepare %s schema: %w", role, err)
	}
	// Another install of the same role holds the lock for seconds: probe every second, give
	// up after two minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(LockID(role)), lock.WithLockTimeout(1, 120))
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectCustom, db, fsys,
		goose.WithStore(&store{table: "skiff." + string(role) + "_migrations"}),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("load %s migrations: %w", role, err)
	}
	return p, nil
}

// upTo applies the role's migrations up to and including version.
func upTo(ctx context.Context, cfg *pgx.ConnConfig, role Role, version int64) (*Result, error) {
	p, db, err := open(ctx, cfg, role)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	from, err := p.GetDBVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s schema version: %w", role, err)
	}
	results, err := p.UpTo(ctx, version)
	res := &Result{From: from, To: from}
	for _, r := range results {
		if r.Error == nil && !r.Empty {
			res.Applied = append(res.Applied, r.Source.Path)
			res.To = r.Source.Version
		}
	}
	if err != nil {
		var perr *goose.PartialError
		if errors.As(err, &perr) && perr.Failed != nil {
			return res, fmt.Errorf("install %s schema: migration %s: %w", role, perr.Failed.Source.Path, perr.Err)
		}
		return res, fmt.Errorf("install %s schema: %w", role, err)
	}
	return res, nil
}

// Version returns the installed schema version of a role, 0 when not installed (also when
// schema skiff holds only the other role's schema).
func Version(ctx context.Context, conn *pgx.Conn, role Role) (int64, error) {
	var exists bool
	if err := conn.QueryRow(ctx, existsSQL, string(role)+"_migrations").Scan(&exists); err != nil || !exists {
		return 0, wrapVersion(role, err)
	}
	var v *int64
	if err := conn.QueryRow(ctx, versionSQL(role)).Scan(&v); err != nil || v == nil {
		return 0, wrapVersion(role, err)
	}
	return *v, nil
}

// NotInstalledError says a database lacks skiff's schema of a role (or has it older than a
// command needs), and how to install it.
type NotInstalledError struct {
	Role Role
	DB   string // pg.Describe of the database: user@host:port/db
	// Have and Need are the installed and the required schema versions when the schema is
	// there but too old; Have is 0 when it is missing.
	Have, Need int64
}

func (e *NotInstalledError) Error() string {
	if e.Have > 0 {
		return fmt.Sprintf("skiff's %s schema on %s is version %d, this skiff needs %d: run skiff init %s --db ... to upgrade it",
			e.Role, e.DB, e.Have, e.Need, e.Role)
	}
	return fmt.Sprintf("skiff is not installed on the %s %s: run skiff init %s --db ... first", e.Role, e.DB, e.Role)
}

// Require checks that the database conn is connected to (named db in messages) has the
// role's schema at version need or later (need <= 1: installed at all); otherwise it returns
// a *NotInstalledError.
func Require(ctx context.Context, conn *pgx.Conn, role Role, db string, need int64) error {
	v, err := Version(ctx, conn, role)
	if err != nil {
		return fmt.Errorf("%s %s: %w", role, db, err)
	}
	if v == 0 || v < need {
		return &NotInstalledError{Role: role, DB: db, Have: v, Need: need}
	}
	return nil
}

// existsSQL says whether a table of schema skiff exists ($1: its name). A query naming a
// missing table fails when it is planned, whatever its WHERE says: look first.
const existsSQL = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'skiff' AND c.relname = $1)`

// versionSQL reads a role's schema version from its version table.
func versionSQL(role Role) string {
	return `SELECT max(version_id) FROM ` + pgx.Identifier{"skiff", string(role) + "_migrations"}.Sanitize() + ` WHERE is_applied`
}

func wrapVersion(role Role, err error) error {
	if err != nil {
		return fmt.Errorf("read %s schema version: %w", role, err)
	}
	return nil
}

func versionDB(ctx context.Context, db *sql.DB, role Role) (int64, error) {
	var exists bool
	if err := db.QueryRowContext(ctx, existsSQL, string(role)+"_migrations").Scan(&exists); err != nil || !exists {
		return 0, wrapVersion(role, err)
	}
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, versionSQL(role)).Scan(&v); err != nil {
		return 0, wrapVersion(role, err)
	}
	return v.Int64, nil
}

// UninstallResult says what Uninstall did.
type UninstallResult struct {
	// From is the schema version removed; 0 when the role was not installed (nothing done).
	From int64
	// SchemaKeptFor is the other role when its schema keeps schema skiff alive.
	SchemaKeptFor Role
	// SchemaKeptWith names what schema skiff still holds that skiff did not make (it is then
	// kept, with them).
	SchemaKeptWith []string
}

// Uninstall removes a role's schema from the database cfg points at: every migration is run
// down, newest first, under the role's migration lock, the version table is dropped, and then
// schema skiff itself unless the other role is installed in it or it holds objects skiff did
// not make. What the migrations do not know of must be gone first: a provider's queues
// (queue.DropQueue removes their capture triggers, functions and event tables). Nothing
// happens when the role is not installed.
func Uninstall(ctx context.Context, cfg *pgx.ConnConfig, role Role) (*UninstallResult, error) {
	other := Target
	if role == Target {
		other = Provider
	}
	if _, err := role.fsys(); err != nil {
		return nil, err
	}
	check := stdlib.OpenDB(*cfg)
	defer check.Close()
	res := &UninstallResult{}
	var err error
	if res.From, err = versionDB(ctx, check, role); err != nil || res.From == 0 {
		return res, err
	}
	p, db, err := open(ctx, cfg, role)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if _, err := p.DownTo(ctx, 0); err != nil {
		var perr *goose.PartialError
		if errors.As(err, &perr) && perr.Failed != nil {
			return nil, fmt.Errorf("uninstall %s schema: migration %s: %w", role, perr.Failed.Source.Path, perr.Err)
		}
		return nil, fmt.Errorf("uninstall %s schema: %w", role, err)
	}
	if _, err := db.ExecContext(ctx, `DROP TABLE `+pgx.Identifier{"skiff", string(role) + "_migrations"}.Sanitize()); err != nil {
		return nil, fmt.Errorf("uninstall %s schema: drop its version table: %w", role, err)
	}
	if v, err := versionDB(ctx, db, other); err != nil {
		return nil, err
	} else if v > 0 {
		res.SchemaKeptFor = other
		return res, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT 'relation ' || c.relname FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'skiff'
		UNION ALL
		SELECT 'function ' || p.proname FROM pg_catalog.pg_proc p
			JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'skiff'
		UNION ALL
		SELECT 'type ' || t.typname FROM pg_catalog.pg_type t
			JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
		 WHERE n.nspname = 'skiff' AND t.typrelid = 0 AND t.typname NOT LIKE '\_%'
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("uninstall %s schema: list what schema skiff holds: %w", role, err)
	}
	defer rows.Close()
	for rows.Next() {
		var what string
		if err := rows.Scan(&what); err != nil {
			return nil, fmt.Errorf("uninstall %s schema: list what schema skiff holds: %w", role, err)
		}
		res.SchemaKeptWith = append(res.SchemaKeptWith, what)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("uninstall %s schema: list what schema skiff holds: %w", role, err)
	}
	if len(res.SchemaKeptWith) > 0 {
		return res, nil
	}
	if _, err := db.ExecContext(ctx, `DROP SCHEMA skiff`); err != nil {
		return nil, fmt.Errorf("uninstall %s schema: drop schema skiff: %w", role, err)
	}
	return res, nil
}

// Latest is the newest migration version skiff ships for a role.
func Latest(role Role) (int64, error) {
	fsys, err := role.fsys()
	if err != nil {
		return 0, err
	}
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return 0, err
	}
	var max int64
	for _, f := range files {
		v, err := goose.NumericComponent(f)
		if err != nil {
			return 0, fmt.Errorf("migration %s: %w", f, err)
		}
		max = v
	}
	return max, nil
}

// LockID is the session advisory lock (pg_try_advisory_lock(bigint)) that serialises the
// installs of a role's schema in one database: "skiffm" in ASCII followed by the role's
// first letter. It must differ from every other lock skiff takes: the ticker holds
// "skifft" (ticker.LockKey) on a provider for as long as it runs, and a database may be a
// target too (skiff used "skifft" for the target's installs at first, which then waited
// for the ticker to stop).
func LockID(r Role) int64 {
	return 0x736b6966666d<<8 | int64(r[0])
}

// prepare creates what goose's store and the migrations assume: schema skiff and, for the
// provider's functions, PL/pgSQL (not installed in a new database before PostgreSQL 9.0, and
// only a superuser may create it there: a target, which has no functions, does without).
// A refusal (42501) says which privilege the role lacks, whatever the server's words
// (8.4 answers CREATE LANGUAGE with "must be owner of database").
func prepare(ctx context.Context, db *sql.DB, role Role) error {
	var hasSchema, hasPLpgSQL bool
	var user, database string
	err := db.QueryRowContext(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'skiff'),
		EXISTS (SELECT 1 FROM pg_catalog.pg_language WHERE lanname = 'plpgsql'),
		current_user::text, pg_catalog.current_database()::text`).Scan(&hasSchema, &hasPLpgSQL, &user, &database)
	if err != nil {
		return err
	}
	if !hasPLpgSQL && role == Provider {
		if _, err := db.ExecContext(ctx, "CREATE LANGUAGE plpgsql"); err != nil {
			if refused(err) {
				return fmt.Errorf("create language plpgsql: PL/pgSQL is not installed in database %s and role %s may not create it: "+
					"only the database's owner or a superuser may (run skiff init provider as one of them, or have one run CREATE LANGUAGE plpgsql first): %w",
					pgx.Identifier{database}.Sanitize(), pgx.Identifier{user}.Sanitize(), err)
			}
			return fmt.Errorf("create language plpgsql: %w", err)
		}
	}
	if !hasSchema {
		if _, err := db.ExecContext(ctx, "CREATE SCHEMA skiff"); err != nil {
			var pgErr interface{ SQLState() string }
			// Another installer may have created it meanwhile (42P06 duplicate_schema).
			switch {
			case errors.As(err, &pgErr) && pgErr.SQLState() == "42P06":
			case refused(err):
				return fmt.Errorf("create schema skiff: role %s lacks the CREATE privilege on database %s "+
					"(GRANT CREATE ON DATABASE %s TO %s, or run skiff init %s as the database's owner): %w",
					pgx.Identifier{user}.Sanitize(), pgx.Identifier{database}.Sanitize(), pgx.Identifier{database}.Sanitize(), pgx.Identifier{user}.Sanitize(), role, err)
			default:
				return fmt.Errorf("create schema skiff: %w", err)
			}
		}
	}
	return nil
}

// refused reports whether err is the server's insufficient_privilege (42501).
func refused(err error) bool {
	var pgErr interface{ SQLState() string }
	return errors.As(err, &pgErr) && pgErr.SQLState() == "42501"
}

// store is goose's version table, written with what PostgreSQL 8.4 has (a serial key, no
// identity column).
type store struct {
	table string // schema-qualified, trusted: built from a fixed role name
}

var _ database.StoreExtender = (*store)(nil)

func (s *store) Tablename() string { return s.table }

func (s *store) CreateVersionTable(ctx context.Context, db database.DBTxConn) error {
	_, err := db.ExecContext(ctx, `CREATE TABLE `+s.table+` (
		id serial PRIMARY KEY,
		version_id bigint NOT NULL,
		is_applied boolean NOT NULL,
		tstamp timestamptz NOT NULL DEFAULT now())`)
	return err
}

func (s *store) Insert(ctx context.Context, db database.DBTxConn, req database.InsertRequest) error {
	_, err := db.ExecContext(ctx, `INSERT INTO `+s.table+` (version_id, is_applied) VALUES ($1, true)`, req.Version)
	return err
}

func (s *store) Delete(ctx context.Context, db database.DBTxConn, version int64) error {
	_, err := db.ExecContext(ctx, `DELETE FROM `+s.table+` WHERE version_id = $1`, version)
	return err
}

func (s *store) GetMigration(ctx context.Context, db database.DBTxConn, version int64) (*database.GetMigrationResult, error) {
	var r database.GetMigrationResult
	err := db.QueryRowContext(ctx, `SELECT tstamp, is_applied FROM `+s.table+` WHERE version_id = $1 ORDER BY tstamp DESC LIMIT 1`, version).
		Scan(&r.Timestamp, &r.IsApplied)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %d", database.ErrVersionNotFound, version)
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *store) GetLatestVersion(ctx context.Context, db database.DBTxConn) (int64, error) {
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version_id) FROM `+s.table).Scan(&v); err != nil {
		return 0, err
	}
	if !v.Valid {
		return 0, database.ErrVersionNotFound
	}
	return v.Int64, nil
}

func (s *store) ListMigrations(ctx context.Context, db database.DBTxConn) ([]*database.ListMigrationsResult, error) {
	rows, err := db.QueryContext(ctx, `SELECT version_id, is_applied FROM `+s.table+` ORDER BY id DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*database.ListMigrationsResult
	for rows.Next() {
		var r database.ListMigrationsResult
		if err := rows.Scan(&r.Version, &r.IsApplied); err != nil {
			return nil, err
		}
		out = append(out, &r)
	}
	return out, rows.Err()
}

func (s *store) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	var exists bool
	err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname || '.' || c.relname = $1)`, s.table).Scan(&exists)
	return exists, err
}
