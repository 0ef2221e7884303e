package skiffcli

import (
	"context"
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// tableSpec is a --table value: TABLE or TABLE:DEST. Names follow change.ParseTableName (the
// one rule: unquoted parts fold to lower case, quoted parts are exact); a name without schema
// is completed from the search_path of the server it names a table of (resolve).
type tableSpec struct {
	Source change.Table
	// Dest is the destination when given (HasDest); with DestSchemaOnly ("TABLE:schema.") only
	// Dest.Schema is set: the table keeps its name in that schema.
	Dest           change.Table
	HasDest        bool
	DestSchemaOnly bool
}

// parseTableSpec reads TABLE or TABLE:DEST; a colon inside double quotes belongs to a name.
func parseTableSpec(s string) (tableSpec, error) {
	var ts tableSpec
	src, dst, hasDest := cutOutsideQuotes(s, ':')
	var err error
	if ts.Source, err = change.ParseTableName(src); err != nil {
		return ts, err
	}
	if !hasDest {
		return ts, nil
	}
	ts.HasDest = true
	if d := strings.TrimRight(dst, " \t"); strings.HasSuffix(d, ".") {
		schema, err := change.ParseTableName(d[:len(d)-1])
		if err != nil || schema.Schema != "" {
			return ts, fmt.Errorf("destination %q: write schema.name, name or schema.", dst)
		}
		ts.Dest, ts.DestSchemaOnly = change.Table{Schema: schema.Name}, true
		return ts, nil
	}
	if ts.Dest, err = change.ParseTableName(dst); err != nil {
		return ts, fmt.Errorf("destination: %w", err)
	}
	return ts, nil
}

// dest returns the destination of the source table src (resolved), given the spec.
func (ts tableSpec) dest(src change.Table) change.Table {
	switch {
	case !ts.HasDest:
		return src
	case ts.DestSchemaOnly:
		return change.Table{Schema: ts.Dest.Schema, Name: src.Name}
	}
	return ts.Dest
}

// resolve completes a table name without schema from the search_path of the server db is
// connected to (the first schema holding such a relation, else the current schema).
func resolve(ctx context.Context, db pg.DB, side string, t change.Table) (change.Table, error) {
	if t.Schema != "" {
		return t, nil
	}
	r, _, err := pg.ResolveTable(ctx, db, t)
	if err != nil {
		return t, fmt.Errorf("%s: %w", side, err)
	}
	if r.Schema == "" {
		return t, fmt.Errorf("%s: table %s: no schema of the search_path exists; qualify the name", side, t)
	}
	return r, nil
}

// cutOutsideQuotes cuts s around the first sep that is not inside double quotes, so that
// "My.Schema"."a:b" names one table.
func cutOutsideQuotes(s string, sep byte) (before, after string, found bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted // a doubled quote toggles twice
		case s[i] == sep && !quoted:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
