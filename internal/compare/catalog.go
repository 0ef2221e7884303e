package compare

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Column is one live column of a table as the catalog describes it.
type Column struct {
	Name string
	Type string // pg_type.typname of the column's type (e.g. "float8", "_int4")
	// Output is the type's output function, quoted and schema-qualified.
	Output string
	// Generated: a generated column (12+), which replication never writes.
	Generated bool
}

// TableInfo is what compare needs to know of one side's table.
type TableInfo struct {
	Table   change.Table
	Columns []Column // live columns in attnum order
	Key     []string // primary-key columns in key order; empty when the table has none
}

// ErrNoTable is returned when a table does not exist on a side.
var ErrNoTable = errors.New("table does not exist")

// Describe reads a table's columns and primary key from the catalog. The queries use only
// what PostgreSQL 8.4 has.
func Describe(ctx context.Context, conn *pgx.Conn, t change.Table) (TableInfo, error) {
	info := TableInfo{Table: t}
	schema := t.Schema
	if schema == "" {
		schema = "public"
	}
	var relid uint32
	err := conn.QueryRow(ctx, `SELECT c.oid FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, t.Name).Scan(&relid)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, fmt.Errorf("%s: %w", t, ErrNoTable)
	}
	if err != nil {
		return info, fmt.Errorf("look up table %s: %w", t, err)
	}
	// A domain is hashed as its base type (a domain over float8 prints like a float8).
	generated := "false"
	if pg.ServerVersion(conn) >= 120000 {
		generated = "a.attgenerated <> ''"
	}
	rows, err := conn.Query(ctx, `SELECT a.attnum, a.attname, coalesce(bt.typname, t.typname), fn.nspname, f.proname, `+generated+`
		FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_catalog.pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
		JOIN pg_catalog.pg_proc f ON f.oid = t.typoutput
		JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, relid)
	if err != nil {
		return info, fmt.Errorf("read columns of %s: %w", t, err)
	}
	byNum := map[int16]string{}
	for rows.Next() {
		var num int16
		var c Column
		var fnSchema, fn string
		if err := rows.Scan(&num, &c.Name, &c.Type, &fnSchema, &fn, &c.Generated); err != nil {
			rows.Close()
			return info, fmt.Errorf("read columns of %s: %w", t, err)
		}
		c.Output = change.QuoteIdent(fnSchema) + "." + change.QuoteIdent(fn)
		byNum[num] = c.Name
		info.Columns = append(info.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return info, fmt.Errorf("read columns of %s: %w", t, err)
	}
	var indkey string
	err = conn.QueryRow(ctx, `SELECT indkey::text FROM pg_catalog.pg_index
		WHERE indrelid = $1 AND indisprimary`, relid).Scan(&indkey)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return info, fmt.Errorf("read primary key of %s: %w", t, err)
	}
	for _, f := range strings.Fields(indkey) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return info, fmt.Errorf("primary key of %s: bad indkey %q", t, indkey)
		}
		if name, ok := byNum[int16(n)]; ok {
			info.Key = append(info.Key, name)
		}
	}
	return info, nil
}

// column returns the named column and whether it exists.
func (ti TableInfo) column(name string) (Column, bool) {
	for _, c := range ti.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// valueExpr is the SQL expression whose text form stands for a column in the row hash. Every
// server version must give the same text for the same value: float text forms changed in
// PostgreSQL 12 (shortest exact digits) and bytea_output does not exist before 9.0, so floats,
// float arrays and bytea are hashed through their binary send form in hex. (Floats inside
// composite or geometric values are still hashed by their text.)
func valueExpr(c Column) string {
	id := change.QuoteIdent(c.Name)
	switch c.Type {
	case "float4":
		return "encode(float4send(" + id + "), 'hex')"
	case "float8":
		return "encode(float8send(" + id + "), 'hex')"
	case "bytea":
		return "encode(" + id + ", 'hex')"
	case "_float4", "_float8":
		// Arrays' elements the same way, with the bounds (array_dims is NULL for an empty
		// array): unnest yields the elements in storage order, the dimensions say the shape.
		send := strings.TrimPrefix(c.Type, "_") + "send"
		return "CASE WHEN " + id + " IS NULL THEN NULL ELSE coalesce(array_dims(" + id + "), '') || " +
			"ARRAY(SELECT encode(" + send + "(skiff_e), 'hex') FROM unnest(" + id + ") AS skiff_e)::text END"
	}
	return id
}

// rowExpr is the md5 of the row's canonical text: a ROW literal of the compared columns.
// ROW(...)::text keeps NULL (an empty field) apart from the empty string (two double quotes).
func rowExpr(cols []Column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = valueExpr(c)
	}
	return "md5(ROW(" + strings.Join(parts, ", ") + ")::text)"
}

// keyExpr is the text of a row's key, used to name and order rows in a row-by-row compare.
func keyExpr(cols []Column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = valueExpr(c)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")::text"
}
