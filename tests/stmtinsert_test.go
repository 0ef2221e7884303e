package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestStatementInsertReplicates: from a 10 (when installed) and a default-version provider,
// whose plain tables are captured with a statement-level INSERT trigger (skiff table add
// --insert-trigger statement), the statements whose
// order that trigger could upset replicate exactly: multi-row INSERTs and COPY beside UPDATEs
// and DELETEs of the same keys in one transaction, INSERT … ON CONFLICT DO UPDATE (inserts,
// updates, an update that frees a key the same statement inserts again), writable CTEs that
// delete or move keys and insert them again, with LIMIT (the main query stops reading the
// CTE), a CTE inserting parents whose children the main query inserts, and deletes cascading
// through a foreign key, inserts through an updatable view and MERGE (15+). The table cannot
// become a partition (rows routed through a parent would not fire its statement trigger).
// Both sides are then compared row by row.
func TestStatementInsertReplicates(t *testing.T) {
	t.Parallel()
	versions := []string{""}
	if slices.Contains(pgtest.Majors(), "10") && pgtest.DefaultVersion() != "10" {
		versions = append(versions, "10")
	}
	for _, v := range versions {
		t.Run("from"+v, func(t *testing.T) {
			t.Parallel()
			p := newPair(t, v, "", fkDDL+`CREATE TABLE t (id int PRIMARY KEY, v text, n int); CREATE VIEW tv AS SELECT * FROM t;`)
			prov := connect(t, p.prov)
			if pg.ServerVersion(prov) < 100000 {
				t.Skip("no transition tables before PostgreSQL 10")
			}
			out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "qs", "--insert-trigger", "statement",
				"public.t", "public.parent", "public.child", "public.other")
			require.NoError(t, err, out)
			p.subscribe(t, "qs")
			var n int
			require.NoError(t, prov.QueryRow(context.Background(), `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'skiff\_insert\_q%'`).Scan(&n))
			require.Equal(t, 4, n, "every table is captured with the statement-level INSERT trigger")
			// Rows routed through a parent would not fire the statement trigger: the server
			// refuses to make the table a partition or an inheritance child, naming skiff's
			// never-firing companion trigger.
			_, err = prov.Exec(context.Background(), `CREATE TABLE routed (id int, v text, n int) PARTITION BY RANGE (id);
				ALTER TABLE routed ATTACH PARTITION t FOR VALUES FROM (0) TO (1000000)`)
			require.ErrorContains(t, err, `prevents table "t" from becoming a partition`)
			require.ErrorContains(t, err, `trigger "skiff_captured_q`)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			defer wg.Wait()
			ticker(t, ctx, &wg, p.prov, 100*time.Millisecond, "qs")
			p.runWorker(t, ctx, &wg, "qs")

			steps := [][]string{
				{`INSERT INTO t SELECT g, 'a' || g, g FROM generate_series(1, 2000) g`,
					`UPDATE t SET v = 'updated', n = n + 1 WHERE id % 7 = 0`,
					`DELETE FROM t WHERE id % 11 = 0`,
					`INSERT INTO t SELECT g, 'back' || g, -g FROM generate_series(1, 2000) g WHERE g % 11 = 0`},
				{`COPY t FROM STDIN`},
				{`INSERT INTO t VALUES (5, 'conflict', 0), (4000, 'new', 0), (6, 'conflict', 0), (4001, 'new', 0)
					ON CONFLICT (id) DO UPDATE SET v = excluded.v || ' ' || t.v`,
					// The update moves key 8 away, the same statement inserts 8 again.
					`INSERT INTO t VALUES (8, 'first', 0), (8, 'again', 0), (9, 'first', 0), (9, 'again', 0)
					ON CONFLICT (id) DO UPDATE SET id = t.id + 100000`},
				// Through an updatable view: the statement on t fires its triggers.
				{`INSERT INTO tv SELECT g, 'view', 0 FROM generate_series(6000, 6010) g`},
				{`WITH d AS (DELETE FROM t WHERE id BETWEEN 10 AND 30 RETURNING *) INSERT INTO t SELECT id, 'reinserted ' || v, n FROM d`},
				{`WITH d AS (DELETE FROM t WHERE id BETWEEN 40 AND 60 RETURNING *) INSERT INTO t SELECT id, 'limited', n FROM d LIMIT 3`},
				{`WITH u AS (UPDATE t SET id = id + 200000 WHERE id BETWEEN 70 AND 80 RETURNING id) INSERT INTO t SELECT id - 200000, 'key reused', 0 FROM u`},
				{`WITH i AS (INSERT INTO t SELECT g, 'cte', 0 FROM generate_series(5000, 5010) g RETURNING id) DELETE FROM t WHERE id IN (SELECT id - 4900 FROM i)`},
				{`INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 100) g`,
					`INSERT INTO child SELECT g, 1 + g % 100, 'c' || g FROM generate_series(1, 500) g`},
				{`WITH p AS (INSERT INTO parent SELECT g, 'wcte' FROM generate_series(200, 210) g RETURNING id) INSERT INTO child SELECT id + 1000, id, 'wcte' FROM p`,
					`WITH p AS (INSERT INTO parent SELECT g, 'wcte limit' FROM generate_series(300, 310) g RETURNING id) INSERT INTO child SELECT id + 1000, id, 'limit' FROM p LIMIT 2`},
				{`DELETE FROM parent WHERE id % 3 = 0`, // cascades to child
					`INSERT INTO parent SELECT g, 'again' FROM generate_series(1, 100) g WHERE g % 3 = 0`,
					`INSERT INTO child SELECT g + 10000, g, 'again' FROM generate_series(1, 100) g WHERE g % 3 = 0`},
				{`INSERT INTO other SELECT g, 'o' FROM generate_series(1, 10) g`, `TRUNCATE other`, `INSERT INTO other VALUES (1, 'after truncate')`},
			}
			if pg.ServerVersion(prov) >= 150000 {
				// MERGE fires the INSERT statement trigger for its inserted rows, its row
				// trigger for its updates and deletes (as they run: before the inserts).
				steps = append(steps, []string{
					`MERGE INTO t USING (SELECT g AS id FROM generate_series(3090, 3120) g) s ON t.id = s.id
						WHEN MATCHED AND t.id % 2 = 0 THEN UPDATE SET v = 'merged'
						WHEN MATCHED THEN DELETE
						WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'merge new', 1)`,
					`MERGE INTO t USING (SELECT g AS id FROM generate_series(3091, 3099, 2) g) s ON t.id = s.id
						WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'merge again', 2)`,
				})
			}
			for _, step := range steps {
				require.NoError(t, pgx.BeginFunc(ctx, prov, func(tx pgx.Tx) error {
					for _, sql := range step {
						if sql == `COPY t FROM STDIN` {
							var data strings.Builder
							for i := 3001; i <= 3100; i++ {
								fmt.Fprintf(&data, "%d\tcopied\t0\n", i)
							}
							if _, err := tx.Conn().PgConn().CopyFrom(ctx, strings.NewReader(data.String()), sql); err != nil {
								t.Errorf("%s: %v", sql, err)
								return err
							}
							continue
						}
						if _, err := tx.Exec(ctx, sql); err != nil {
							t.Errorf("%s: %v", sql, err)
							return err
						}
					}
					return nil
				}))
			}
			p.caughtUp(t, 2*time.Minute, "qs")
			p.compare(t, "public.t", "public.parent", "public.child", "public.other")
			cancel()
		})
	}
}
