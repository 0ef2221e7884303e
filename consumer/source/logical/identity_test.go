package logical

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestReplicaIdentity: tables with REPLICA IDENTITY FULL (with and without a primary key) and
// USING INDEX are keyed as documented, their key-changing updates carry the old key, and a
// column added by DDL between writes is picked up; each table's replay equals the provider's.
func TestReplicaIdentity(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		full := change.Table{Schema: "public", Name: "full_pk"}
		nokey := change.Table{Schema: "public", Name: "Full no key"}
		idx := change.Table{Schema: "public", Name: "by_index"}
		p.exec(t, `CREATE TABLE full_pk (a int, id int PRIMARY KEY, t text)`)
		p.exec(t, `ALTER TABLE full_pk REPLICA IDENTITY FULL`)
		p.exec(t, `CREATE TABLE "Full no key" (a int, t text)`)
		p.exec(t, `ALTER TABLE "Full no key" REPLICA IDENTITY FULL`)
		p.exec(t, `CREATE TABLE by_index (id serial PRIMARY KEY, c1 int NOT NULL, c2 text NOT NULL, t text)`)
		p.exec(t, `CREATE UNIQUE INDEX by_index_c ON by_index (c2, c1)`)
		p.exec(t, `ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_c`)
		p.publish(t, full, nokey, idx)
		p.createSlot(t)
		s := p.source(t, nil)
		require.NoError(t, s.Resume(ctx, change.Position{}))

		p.exec(t, `INSERT INTO full_pk VALUES (1, 1, 'x'), (2, 2, NULL)`)
		p.exec(t, `INSERT INTO "Full no key" VALUES (1, 'x'), (2, NULL)`)
		p.exec(t, `INSERT INTO by_index (c1, c2, t) VALUES (1, 'a', 'x'), (2, 'b', 'y')`)
		p.exec(t, `UPDATE full_pk SET t = 'y' WHERE id = 1`)
		p.exec(t, `UPDATE full_pk SET id = 3 WHERE id = 2`)
		p.exec(t, `UPDATE "Full no key" SET t = 'z' WHERE a = 2`)
		p.exec(t, `UPDATE by_index SET t = 'z' WHERE c1 = 1`)
		p.exec(t, `UPDATE by_index SET c2 = 'c' WHERE c1 = 2`)
		p.exec(t, `DELETE FROM full_pk WHERE id = 1`)
		p.exec(t, `DELETE FROM "Full no key" WHERE a = 1`)
		p.exec(t, `DELETE FROM by_index WHERE c1 = 1`)
		// DDL between writes: the new column comes with the rows written after it.
		p.exec(t, `ALTER TABLE full_pk ADD COLUMN added text`)
		p.exec(t, `INSERT INTO full_pk VALUES (4, 4, 'w', 'new')`)
		p.exec(t, `UPDATE full_pk SET added = 'set' WHERE id = 3`)

		_, evs := collect(t, s, 16)
		byTable := map[change.Table][]change.Event{}
		for _, ev := range evs {
			require.NoError(t, ev.Err)
			byTable[ev.Table] = append(byTable[ev.Table], ev)
		}
		f := byTable[full]
		require.Len(t, f, 7)
		for _, ev := range f {
			require.Equal(t, []string{"id"}, ev.Key, "FULL with a primary key: keyed by it")
		}
		require.Nil(t, f[2].OldKey, "the key did not change")
		require.Equal(t, []change.Value{change.Text("2")}, f[3].OldKey)
		require.Equal(t, []string{"a", "id", "t"}, f[4].Columns, "a FULL delete holds the old row")
		require.Equal(t, []string{"a", "id", "t", "added"}, f[5].Columns)
		require.Equal(t, change.Text("new"), f[5].Values[3])

		n := byTable[nokey]
		require.Len(t, n, 4)
		require.Equal(t, []string{"a"}, n[2].Key, "FULL without a key: the old row's non-NULL columns")
		require.Equal(t, []change.Value{change.Text("2")}, n[2].OldKey)
		require.Equal(t, []string{"a", "t"}, n[3].Key)
		require.Equal(t, []change.Value{change.Text("1"), change.Text("x")}, n[3].Values)

		x := byTable[idx]
		require.Len(t, x, 5)
		require.ElementsMatch(t, []string{"c1", "c2"}, x[0].Key, "USING INDEX: the index's columns")
		require.Nil(t, x[2].OldKey)
		require.NotNil(t, x[3].OldKey, "the index key changed")
		require.ElementsMatch(t, []string{"c1", "c2"}, x[4].Columns, "a delete holds the identity")

		for tbl, cols := range map[change.Table][]string{
			full: {"a", "id", "t", "added"}, nokey: {"a", "t"}, idx: {"id", "c1", "c2", "t"},
		} {
			m := memTable{}
			replay(t, tbl, evs, m)
			require.Equal(t, p.providerRows(t, tbl, cols), m.dump(cols), "table %s", tbl)
		}
	})
}
