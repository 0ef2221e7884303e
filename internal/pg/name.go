package pg

import (
	"context"
	"fmt"

	"github.com/skiffdb/skiff/consumer/change"
)

// ResolveTable gives a table name the schema the server would: a name without one (as
// change.ParseTableName returns it) gets the first schema of the session's search_path —
// current_schemas(true): the temporary schema, pg_catalog and the path's existing schemas, in
// the server's order — that holds a relation of that name. found reports whether the relation
// exists; when it does not, an unqualified name gets the session's current_schema() (where
// CREATE TABLE would put it), or stays unqualified when the path names no existing schema.
// Written for every server from 8.4 on (no to_regclass, which is 9.4+; no LATERAL): a name
// that does not resolve is an answer, not an error that would abort a transaction.
func ResolveTable(ctx context.Context, q DB, t change.Table) (resolved change.Table, found bool, err error) {
	if t.Schema != "" {
		err = q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)`,
			t.Schema, t.Name).Scan(&found)
		if err != nil {
			return t, false, fmt.Errorf("look up table %s: %w", t, err)
		}
		return t, found, nil
	}
	var inPath, current *string
	err = q.QueryRow(ctx, `SELECT
		(SELECT p[i] FROM (SELECT p, pg_catalog.generate_subscripts(p, 1) AS i
		                   FROM (SELECT pg_catalog.current_schemas(true) AS p) a) b
		 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		               WHERE n.nspname = b.p[b.i] AND c.relname = $1)
		 ORDER BY i LIMIT 1),
		pg_catalog.current_schema()`, t.Name).Scan(&inPath, &current)
	if err != nil {
		return t, false, fmt.Errorf("look up table %s in the search_path: %w", t, err)
	}
	switch {
	case inPath != nil:
		return change.Table{Schema: *inPath, Name: t.Name}, true, nil
	case current != nil:
		return change.Table{Schema: *current, Name: t.Name}, false, nil
	}
	return t, false, nil
}
