package target

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
)

// SchemaMap returns the schema map of subscription k (provider schema → target schema);
// empty when it has none or does not exist. v says whether the schema has the table.
func SchemaMap(ctx context.Context, db pg.DB, v Version, k Key) (map[string]string, error) {
	out := map[string]string{}
	if !v.HasSchemaMap() {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT m.source_schema, m.dest_schema FROM skiff.schema_map m
		JOIN skiff.subscription s ON s.sub_id = m.sub_id WHERE s.queue = $1 AND s.consumer = $2`, k.Queue, k.Consumer)
	if err != nil {
		return nil, err
	}
	var src, dst string
	_, err = pgx.ForEachRow(rows, []any{&src, &dst}, func() error {
		out[src] = dst
		return nil
	})
	return out, err
}

// SetSchemaMap records the entries of m in the schema map of subscription id, replacing an
// entry of the same provider schema; entries not in m stay.
func SetSchemaMap(ctx context.Context, db pg.DB, id int32, m map[string]string) error {
	for src, dst := range m {
		if _, err := db.Exec(ctx, `DELETE FROM skiff.schema_map WHERE sub_id = $1 AND source_schema = $2`, id, src); err != nil {
			return err
		}
		if _, err := db.Exec(ctx, `INSERT INTO skiff.schema_map (sub_id, source_schema, dest_schema) VALUES ($1, $2, $3)`,
			id, src, dst); err != nil {
			return err
		}
	}
	return nil
}
