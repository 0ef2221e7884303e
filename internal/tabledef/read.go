// Package tabledef reads a provider table's definition from the catalog and creates the
// table on a target (`skiff subscribe --create-tables`, as pglogical's synchronize_structure
// and Londiste's `add-table --create` do): columns with their types, NOT NULL, defaults and
// collations, the primary key, the sequences its columns draw from, the enum types and domains
// its columns use; its other indexes after the initial copy. Foreign keys, CHECK constraints,
// triggers, grants and comments are not created.
//
// The catalog is read with search_path = pg_catalog, so that every name the server prints
// (types, sequences in defaults, functions, operator classes) is schema-qualified and means on
// the target what it meant on the provider. Every query runs on PostgreSQL 8.4.
package tabledef

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// Def is a provider table's definition.
type Def struct {
	Table   change.Table
	Columns []Column
	// PrimaryKey names the primary key's columns in key order (nil: no primary key), and
	// PrimaryKeyName its constraint.
	PrimaryKey     []string
	PrimaryKeyName string
	// Indexes are the table's other valid indexes.
	Indexes []Index
}

// Column is one live column of a provider table.
type Column struct {
	Name string
	// Type is format_type(atttypid, atttypmod), schema-qualified outside pg_catalog.
	Type    string
	TypeOID uint32
	NotNull bool
	// Default is the default's expression (pg_get_expr), "" for none; for a generated
	// column, the generation expression.
	Default string
	// DefaultFuncs are the functions outside pg_catalog the default calls.
	DefaultFuncs []change.Table
	// Identity is attidentity (10+): 'a' (ALWAYS), 'd' (BY DEFAULT), 0 for none.
	Identity byte
	// Generated is true for a stored generated column (12+).
	Generated bool
	// Collation is the column's collation, quoted and qualified, when it is not its type's
	// (9.1+); "" otherwise.
	Collation string
}

// Index is an index of a provider table, other than its primary key's.
type Index struct {
	Name   string
	Unique bool
	// Body is what follows the table's name in pg_get_indexdef: "USING btree (a, b) …".
	Body string
	// Columns are the table columns the index reads (keys, expressions, predicate).
	Columns []string
}

// Sequence is a provider sequence's definition.
type Sequence struct {
	Name change.Table
	// Type is the sequence's type (10+: format_type(seqtypid)); "" before 10 (bigint).
	Type                              string
	Start, Increment, Min, Max, Cache int64
	Cycle                             bool
	// OwnedBy is the table and column owning the sequence (serial, identity), if any.
	OwnedBy       change.Table
	OwnedByColumn string
	// Identity is true for the sequence of an identity column (10+).
	Identity bool
}

// Type is a user type a column uses, as the target needs it created.
type Type struct {
	OID  uint32
	Name change.Table
	// Kind is pg_type.typtype: 'e' enum, 'd' domain, 'b' base, 'c' composite, 'r' range, …
	Kind byte
	// Array: this is an array type; Elem is its element type.
	Array bool
	Elem  uint32
	// Labels are an enum's labels in sort order.
	Labels []string
	// Base is a domain's base type (format_type), BaseOID its oid; NotNull, Default and
	// Checks (constraint name → pg_get_constraintdef) its constraints.
	Base    string
	BaseOID uint32
	NotNull bool
	Default string
	Checks  [][2]string
}

// catalogTx runs fn in a read-only transaction of conn whose search_path is pg_catalog alone.
func catalogTx(ctx context.Context, conn *pgx.Conn, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL search_path = pg_catalog`); err != nil {
			return err
		}
		return fn(tx)
	})
}

// ReadTable reads the definition of table t of the provider conn.
func ReadTable(ctx context.Context, conn *pgx.Conn, t change.Table) (*Def, error) {
	var d *Def
	err := catalogTx(ctx, conn, func(tx pgx.Tx) error {
		var err error
		d, err = readTable(ctx, tx, pg.ServerVersion(conn), t)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("provider: definition of table %s: %w", t, err)
	}
	return d, nil
}

func readTable(ctx context.Context, tx pgx.Tx, version int, t change.Table) (*Def, error) {
	oid, err := catalog.Lookup(ctx, tx, t, "")
	if err != nil {
		return nil, fmt.Errorf("look up: %w", err)
	}
	cols, err := catalog.Columns(ctx, tx, oid)
	if err != nil {
		return nil, fmt.Errorf("columns: %w", err)
	}
	d := &Def{Table: t}
	names := map[int16]string{}
	for _, c := range cols {
		d.Columns = append(d.Columns, Column{Name: c.Name, Type: c.Type, TypeOID: c.TypeOID, NotNull: c.NotNull, Default: c.Default,
			Identity: c.Identity, Generated: c.Generated == 's', Collation: c.Collation})
		names[c.Num] = c.Name
	}

	// Functions outside pg_catalog that defaults call: the target may lack them.
	rows, err := tx.Query(ctx, `SELECT ad.adnum, n.nspname, p.proname
		FROM pg_catalog.pg_attrdef ad
		JOIN pg_catalog.pg_depend dep ON dep.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND dep.objid = ad.oid
			AND dep.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
		JOIN pg_catalog.pg_proc p ON p.oid = dep.refobjid
		JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE ad.adrelid = $1 AND n.nspname <> 'pg_catalog'
		ORDER BY 1, 2, 3`, oid)
	if err != nil {
		return nil, fmt.Errorf("functions of defaults: %w", err)
	}
	for rows.Next() {
		var num int16
		var f change.Table
		if err := rows.Scan(&num, &f.Schema, &f.Name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("functions of defaults: %w", err)
		}
		for i := range d.Columns {
			if d.Columns[i].Name == names[num] {
				d.Columns[i].DefaultFuncs = append(d.Columns[i].DefaultFuncs, f)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("functions of defaults: %w", err)
	}

	// Indexes. The primary key's constraint is found by relation and type (conindid is 9.0+).
	rows, err = tx.Query(ctx, `SELECT ic.relname, i.indisprimary, i.indisunique, i.indkey::text,
			pg_catalog.pg_get_indexdef(i.indexrelid), pg_catalog.quote_ident(ic.relname),
			pg_catalog.quote_ident(n.nspname), pg_catalog.quote_ident(c.relname),
			coalesce((SELECT con.conname FROM pg_catalog.pg_constraint con WHERE con.conrelid = i.indrelid AND con.contype = 'p' AND i.indisprimary), ''),
			ARRAY(SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum > 0
				AND (a.attnum = ANY (i.indkey) OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep
					WHERE dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.objid = i.indexrelid
					AND dep.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.refobjid = i.indrelid
					AND dep.refobjsubid = a.attnum))
				ORDER BY a.attnum)
		FROM pg_catalog.pg_index i
		JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
		JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE i.indrelid = $1 AND i.indisvalid
		ORDER BY ic.relname`, oid)
	if err != nil {
		return nil, fmt.Errorf("indexes: %w", err)
	}
	for rows.Next() {
		var ix Index
		var primary bool
		var indkey, def, qIndex, qSchema, qTable, pkName string
		if err := rows.Scan(&ix.Name, &primary, &ix.Unique, &indkey, &def, &qIndex, &qSchema, &qTable, &pkName, &ix.Columns); err != nil {
			rows.Close()
			return nil, fmt.Errorf("indexes: %w", err)
		}
		if primary {
			d.PrimaryKeyName = pkName
			for _, f := range strings.Fields(indkey) {
				n, err := strconv.Atoi(f)
				if err != nil || names[int16(n)] == "" {
					rows.Close()
					return nil, fmt.Errorf("primary key %s: key %q is not a column", change.QuoteIdent(ix.Name), indkey)
				}
				d.PrimaryKey = append(d.PrimaryKey, names[int16(n)])
			}
			continue
		}
		body, ok := indexBody(def, ix.Unique, qIndex, qSchema, qTable)
		if !ok {
			rows.Close()
			return nil, fmt.Errorf("index %s: cannot read its definition %q", change.QuoteIdent(ix.Name), def)
		}
		ix.Body = body
		d.Indexes = append(d.Indexes, ix)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("indexes: %w", err)
	}
	return d, nil
}

// indexBody cuts "CREATE [UNIQUE] INDEX idx ON [ONLY] [schema.]table " off an index
// definition of pg_get_indexdef, given the server's quoting of the names, and returns the
// rest ("USING method (…) …").
func indexBody(def string, unique bool, qIndex, qSchema, qTable string) (string, bool) {
	prefix := "CREATE INDEX "
	if unique {
		prefix = "CREATE UNIQUE INDEX "
	}
	prefix += qIndex + " ON "
	rest, ok := strings.CutPrefix(def, prefix)
	if !ok {
		return "", false
	}
	for _, only := range []string{"ONLY ", ""} {
		for _, tbl := range []string{qSchema + "." + qTable, qTable} {
			if body, ok := strings.CutPrefix(rest, only+tbl+" USING "); ok {
				return "USING " + body, true
			}
		}
	}
	return "", false
}

// ReadSequence reads the definition of sequence s of the provider conn.
func ReadSequence(ctx context.Context, conn *pgx.Conn, s change.Table) (*Sequence, error) {
	var out *Sequence
	err := catalogTx(ctx, conn, func(tx pgx.Tx) error {
		var err error
		out, err = readSequence(ctx, tx, pg.ServerVersion(conn), s)
		return err
	})
	return out, err
}

func readSequence(ctx context.Context, tx pgx.Tx, version int, s change.Table) (*Sequence, error) {
	out := &Sequence{Name: s}
	wrap := func(what string, err error) error {
		return fmt.Errorf("provider: definition of sequence %s: %s: %w", s, what, err)
	}
	var oid uint32
	err := tx.QueryRow(ctx, `SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'S'`, s.Schema, s.Name).Scan(&oid)
	if err != nil {
		return nil, wrap("look up", err)
	}
	if version >= 100000 {
		err = tx.QueryRow(ctx, `SELECT pg_catalog.format_type(seqtypid, NULL), seqstart, seqincrement, seqmin, seqmax, seqcache, seqcycle
			FROM pg_catalog.pg_sequence WHERE seqrelid = $1`, oid).
			Scan(&out.Type, &out.Start, &out.Increment, &out.Min, &out.Max, &out.Cache, &out.Cycle)
	} else {
		err = tx.QueryRow(ctx, `SELECT start_value, increment_by, min_value, max_value, cache_value, is_cycled FROM `+s.String()).
			Scan(&out.Start, &out.Increment, &out.Min, &out.Max, &out.Cache, &out.Cycle)
	}
	if err != nil {
		return nil, wrap("parameters", err)
	}
	var owner change.Table
	var col, deptype string
	err = tx.QueryRow(ctx, `SELECT n.nspname, c.relname, a.attname, d.deptype::text
		FROM pg_catalog.pg_depend d
		JOIN pg_catalog.pg_class c ON c.oid = d.refobjid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = $1
		AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
		LIMIT 1`, oid).Scan(&owner.Schema, &owner.Name, &col, &deptype)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return nil, wrap("owner", err)
	}
	out.OwnedBy, out.OwnedByColumn, out.Identity = owner, col, deptype == "i"
	return out, nil
}

// readType reads a type of the provider.
func readType(ctx context.Context, tx pgx.Tx, version int, oid uint32) (*Type, error) {
	t := &Type{OID: oid}
	var kind string
	var typlen int16
	err := tx.QueryRow(ctx, `SELECT n.nspname, t.typname, t.typtype::text, t.typelem, t.typlen, t.typbasetype,
			CASE WHEN t.typbasetype <> 0 THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) ELSE '' END,
			t.typnotnull, coalesce(pg_catalog.pg_get_expr(t.typdefaultbin, 0), '')
		FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1`, oid).
		Scan(&t.Name.Schema, &t.Name.Name, &kind, &t.Elem, &typlen, &t.BaseOID, &t.Base, &t.NotNull, &t.Default)
	if err != nil {
		return nil, fmt.Errorf("type %d: %w", oid, err)
	}
	t.Kind = kind[0]
	t.Array = t.Elem != 0 && typlen == -1 && t.Kind == 'b'
	switch t.Kind {
	case 'e':
		order := "e.oid" // 8.4: labels sort in oid order
		if version >= 90100 {
			order = "e.enumsortorder"
		}
		rows, err := tx.Query(ctx, `SELECT e.enumlabel FROM pg_catalog.pg_enum e WHERE e.enumtypid = $1 ORDER BY `+order, oid)
		if err != nil {
			return nil, fmt.Errorf("labels of type %s: %w", t.Name, err)
		}
		if t.Labels, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("labels of type %s: %w", t.Name, err)
		}
	case 'd':
		rows, err := tx.Query(ctx, `SELECT c.conname, pg_catalog.pg_get_constraintdef(c.oid)
			FROM pg_catalog.pg_constraint c WHERE c.contypid = $1 AND c.contype = 'c' ORDER BY c.conname`, oid)
		if err != nil {
			return nil, fmt.Errorf("constraints of domain %s: %w", t.Name, err)
		}
		for rows.Next() {
			var c [2]string
			if err := rows.Scan(&c[0], &c[1]); err != nil {
				rows.Close()
				return nil, fmt.Errorf("constraints of domain %s: %w", t.Name, err)
			}
			t.Checks = append(t.Checks, c)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("constraints of domain %s: %w", t.Name, err)
		}
	}
	return t, nil
}
