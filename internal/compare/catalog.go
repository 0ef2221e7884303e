package compare

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
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
	// Format is the column's declared type without modifier (format_type(atttypid, -1),
	// qualified outside pg_catalog): what a literal of its value is cast to (a cast to it
	// never truncates; the column's modifier applies on assignment).
	Format string
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
func Describe(ctx context.Context, conn pg.DB, t change.Table) (TableInfo, error) {
	info := TableInfo{Table: t}
	schema := t.Schema
	if schema == "" {
		schema = "public"
	}
	relid, err := catalog.Lookup(ctx, conn, change.Table{Schema: schema, Name: t.Name}, "rp")
	if errors.Is(err, pgx.ErrNoRows) {
		return info, fmt.Errorf("%s: %w", t, ErrNoTable)
	}
	if err != nil {
		return info, fmt.Errorf("look up table %s: %w", t, err)
	}
	cols, err := catalog.Columns(ctx, conn, relid)
	if err != nil {
		return info, fmt.Errorf("read columns of %s: %w", t, err)
	}
	// A domain is hashed as its base type (a domain over float8 prints like a float8).
	for _, c := range cols {
		info.Columns = append(info.Columns, Column{Name: c.Name, Type: c.Base.Name, Output: c.Output, Generated: c.Generated != 0,
			Format: c.BareType})
	}
	info.Key = catalog.PrimaryKey(cols)
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

// textExpr is a column's value as text, through its type's output function when known (as
// the capture trigger writes it), else a cast.
func textExpr(c Column) string {
	id := change.QuoteIdent(c.Name)
	if c.Output == "" {
		return "(" + id + ")::text"
	}
	return "pg_catalog.textin(" + c.Output + "(" + id + "))"
}
