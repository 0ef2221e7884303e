package logical

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestDecode writes every kind of change to a table with awkward names and values and checks
// the events each plugin's stream gives: operations, columns, keys, old keys, txids, an
// unchanged TOASTed column left out of an UPDATE, generated columns left out, TRUNCATE (11+);
// then replays them and compares with the provider's rows.
func TestDecode(t *testing.T) {
	t.Parallel()
	matrix(t, versions(), func(t *testing.T, v, plugin string) {
		ctx := context.Background()
		p := newProvider(t, v, plugin)
		tbl := change.Table{Schema: `we.ird"s`, Name: `Tab "x".y`}
		gen := ""
		if p.ver >= 120000 {
			gen = ", g int GENERATED ALWAYS AS (id * 2) STORED"
		}
		p.exec(t, `CREATE SCHEMA `+change.QuoteIdent(tbl.Schema))
		p.exec(t, `CREATE TABLE `+tbl.String()+` (id int PRIMARY KEY, "Na me" text, "q""uote" varchar[], b bytea, u text,
			n numeric, f float8, bo boolean, ts timestamptz, big text`+gen+`)`)
		p.exec(t, `ALTER TABLE `+tbl.String()+` ALTER COLUMN big SET STORAGE EXTERNAL`)
		cols := []string{"id", "Na me", `q"uote`, "b", "u", "n", "f", "bo", "ts", "big"}
		p.publish(t, tbl)
		p.createSlot(t)
		s := p.source(t, nil)
		require.NoError(t, s.Resume(ctx, change.Position{}))

		tx, err := p.conn.Begin(ctx)
		require.NoError(t, err)
		var txid int64
		require.NoError(t, tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&txid))
		_, err = tx.Exec(ctx, `INSERT INTO `+tbl.String()+` VALUES
			(1, 'it''s "x" \', '{a,"b c",NULL,"d''e"}', '\x00ff27', 'ünï ☃ '' ', 1.5, 0.1, true, '2024-01-02 03:04:05.123456+02', repeat('x', 10000)),
			(2, '', '{}', '', NULL, 'NaN', '-Infinity', false, NULL, NULL)`)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		p.exec(t, `UPDATE `+tbl.String()+` SET "Na me" = 'new' WHERE id = 1`)
		p.exec(t, `UPDATE `+tbl.String()+` SET id = 20 WHERE id = 2`)
		p.exec(t, `INSERT INTO `+tbl.String()+` (id) VALUES (3)`)
		p.exec(t, `DELETE FROM `+tbl.String()+` WHERE id = 20`)

		_, evs := collect(t, s, 6)
		for i, ev := range evs {
			require.Equal(t, tbl, ev.Table, "event %d", i)
			require.Equal(t, []string{"id"}, ev.Key, "event %d", i)
			require.NoError(t, ev.Err)
			require.Positive(t, ev.TxID)
		}
		require.Equal(t, change.Insert, evs[0].Op)
		require.Equal(t, cols, evs[0].Columns, "generated column left out")
		require.Equal(t, txid, evs[0].TxID, "txid of the writing transaction")
		require.Equal(t, txid, evs[1].TxID)
		require.Equal(t, change.Text("it's \"x\" \\"), evs[0].Values[1])
		require.Equal(t, change.Text(`{a,"b c",NULL,d'e}`), evs[0].Values[2])
		require.Equal(t, change.Text(`\x00ff27`), evs[0].Values[3])
		require.Equal(t, change.Text("ünï ☃ ' "), evs[0].Values[4])
		require.Equal(t, change.Text("t"), evs[0].Values[7])
		require.Equal(t, change.Text("2024-01-02 01:04:05.123456+00"), evs[0].Values[8])
		require.Equal(t, []change.Value{change.Text("2"), change.Text(""), change.Text("{}"), change.Text(`\x`), change.Null,
			change.Text("NaN"), change.Text("-Infinity"), change.Text("f"), change.Null, change.Null}, evs[1].Values)

		require.Equal(t, change.Update, evs[2].Op)
		require.Equal(t, slices.DeleteFunc(slices.Clone(cols), func(c string) bool { return c == "big" }), evs[2].Columns,
			"the unchanged TOASTed column is left out")
		require.Nil(t, evs[2].OldKey)
		require.Greater(t, evs[2].TxID, txid)

		require.Equal(t, change.Update, evs[3].Op)
		require.Equal(t, []change.Value{change.Text("2")}, evs[3].OldKey)
		require.Equal(t, change.Text("20"), evs[3].Values[0])

		require.Equal(t, change.Insert, evs[4].Op)
		require.Equal(t, change.Delete, evs[5].Op)
		require.Equal(t, []string{"id"}, evs[5].Columns)
		require.Equal(t, []change.Value{change.Text("20")}, evs[5].Values)

		m := memTable{}
		replay(t, tbl, evs, m)
		require.Equal(t, p.providerRows(t, tbl, cols), m.dump(cols))

		if p.ver < 110000 {
			return // TRUNCATE is decoded from 11 on
		}
		p.exec(t, `TRUNCATE `+tbl.String())
		p.exec(t, `INSERT INTO `+tbl.String()+` (id, u) VALUES (4, NULL), (5, '')`)
		_, evs = collect(t, s, 3)
		require.Equal(t, change.Event{ID: evs[0].ID, TxID: evs[0].TxID, Op: change.Truncate, Table: tbl}, evs[0])
		replay(t, tbl, evs, m)
		require.Equal(t, p.providerRows(t, tbl, cols), m.dump(cols))
	})
}
