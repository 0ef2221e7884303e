package catalog

import (
	"context"

	"github.com/skiffdb/skiff/internal/pg"
)

// ReplicaIdentity returns relation oid's replica identity (9.4+): relreplident ('d' default,
// 'i' index, 'f' full, 'n' nothing) and the columns of the index behind it, in index order —
// the primary key for 'd' and, when the table has one, for 'f'; the replica identity index's
// key columns for 'i'; none for 'n'. The error is pgx.ErrNoRows when there is no such relation.
func ReplicaIdentity(ctx context.Context, db pg.DB, oid uint32) (byte, []string, error) {
	version, err := pg.VersionOf(ctx, db)
	if err != nil {
		return 0, nil, err
	}
	nkey := "i.indnatts"
	if version >= 110000 {
		nkey = "i.indnkeyatts"
	}
	var ident string
	var cols []string
	err = db.QueryRow(ctx, `SELECT c.relreplident::text,
			ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i CROSS JOIN pg_catalog.generate_series(0, 31) k
			      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k]
			      WHERE i.indrelid = c.oid AND k < `+nkey+`
			        AND (c.relreplident IN ('d', 'f') AND i.indisprimary OR c.relreplident = 'i' AND i.indisreplident)
			      ORDER BY k)
		FROM pg_catalog.pg_class c WHERE c.oid = $1`, oid).Scan(&ident, &cols)
	if err != nil {
		return 0, nil, err
	}
	var b byte
	if ident != "" {
		b = ident[0]
	}
	return b, cols, nil
}
