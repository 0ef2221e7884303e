package queue

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// ddlQueue is a provider with table d captured by queue q and consumer c registered.
type ddlQueue struct {
	p   *provider
	c   *pgx.Conn
	src *Source
}

func newDDLQueue(t *testing.T, ddl string) *ddlQueue {
	t.Helper()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, ddl)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "d"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	return &ddlQueue{p: p, c: c, src: src}
}

func (q *ddlQueue) tick(t *testing.T) {
	t.Helper()
	_, err := ForceTick(context.Background(), q.c, "q")
	require.NoError(t, err)
}

// read ticks and reads one batch: every event as "OP col=val ..." or "ERR message".
func (q *ddlQueue) read(t *testing.T) []string {
	t.Helper()
	q.tick(t)
	_, evs := readBatch(t, q.src)
	out := make([]string, len(evs))
	for i, ev := range evs {
		if ev.Err != nil {
			out[i] = "ERR " + ev.Err.Error()
			continue
		}
		parts := []string{ev.Op.String(), ev.Table.Name}
		for j, col := range ev.Columns {
			v := "NULL"
			if ev.Values[j].Valid {
				v = ev.Values[j].Text
			}
			parts = append(parts, col+"="+v)
		}
		parts = append(parts, "key="+strings.Join(ev.Key, ","))
		out[i] = strings.Join(parts, " ")
	}
	return out
}

// TestDecodeAcrossDDL: rows written between DDL and the refresh of the capture decode into
// the columns they were written with, under the columns' current names, without the values of
// columns dropped since; where the order of a row and a drop is unknown (same tick interval)
// and the field count leaves a choice, the event carries a DecodeError that names table,
// event and remedies.
func TestDecodeAcrossDDL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newDDLQueue(t, `CREATE TABLE d (id int PRIMARY KEY, a text, b text)`)
	q.tick(t)
	exec(t, q.c, `INSERT INTO d VALUES (1, 'a1', 'b1')`)
	q.tick(t)
	exec(t, q.c, `ALTER TABLE d DROP COLUMN a, ADD COLUMN z text`) // same width, other columns
	q.tick(t)
	exec(t, q.c, `INSERT INTO d VALUES (2, 'b2', 'z2')`)
	exec(t, q.c, `UPDATE d SET id = 10 WHERE id = 1`)
	exec(t, q.c, `ALTER TABLE d ADD COLUMN w int`)
	exec(t, q.c, `INSERT INTO d VALUES (3, 'b3', 'z3', 3)`)
	exec(t, q.c, `ALTER TABLE d RENAME COLUMN b TO "B b"`)
	exec(t, q.c, `DELETE FROM d WHERE id = 2`)
	exec(t, q.c, `TRUNCATE d`)
	require.Equal(t, []string{
		"INSERT d id=1 B b=b1 key=id", // a was dropped since: its value is left out
		"INSERT d id=2 B b=b2 z=z2 key=id",
		"UPDATE d id=10 B b=b1 z=NULL key=id",
		"INSERT d id=3 B b=b3 z=z3 w=3 key=id",
		"DELETE d id=2 B b=b2 z=z2 w=NULL key=id",
		"TRUNCATE d key=",
	}, q.read(t))

	// A drop and an add committed between the same two ticks as rows of the same width:
	// which columns those rows hold cannot be told.
	exec(t, q.c, `INSERT INTO d VALUES (4, 'b4', 'z4', 4)`)
	exec(t, q.c, `ALTER TABLE d DROP COLUMN z, ADD COLUMN y text`)
	exec(t, q.c, `INSERT INTO d VALUES (5, 'b5', 5, 'y5')`)
	got := q.read(t)
	require.Len(t, got, 2)
	for _, e := range got {
		require.Contains(t, e, `ERR decode event`)
		require.Contains(t, e, `of "public"."d" (layout 1): row has 4 fields`)
		require.Contains(t, e, `(dropped a, added and dropped column 4, added w, added y)`)
		require.Contains(t, e, `it may hold ("id", "B b", column 4 (added and dropped since), "w") or ("id", "B b", "w", "y")`)
		require.Contains(t, e, "skiff table add --refresh \"public\".\"d\"")
		require.Contains(t, e, "skiff table resync")
		require.Contains(t, e, "skiff event skip --event")
	}

	// After the refresh, rows use the new layout.
	res, err := AddTable(ctx, q.c, "q", TableSpec{Name: "d", Refresh: true})
	require.NoError(t, err)
	require.Greater(t, res.Layout, int32(1))
	exec(t, q.c, `INSERT INTO d VALUES (6, 'b6', 6, 'y6')`)
	require.Equal(t, []string{`INSERT d id=6 B b=b6 w=6 y=y6 key=id`}, q.read(t))
}

// TestDecodeOldLayouts: layouts made before column numbers were recorded (provider schema
// version 2) decode rows written after DDL where the catalog makes their columns certain, and
// refuse them, saying why, where it does not.
func TestDecodeOldLayouts(t *testing.T) {
	t.Parallel()
	old := func(q *ddlQueue) {
		exec(t, q.c, `UPDATE skiff.table_layout SET column_attnums = NULL, natts = NULL, created_xmin = NULL`)
	}
	t.Run("never dropped a column", func(t *testing.T) {
		t.Parallel()
		q := newDDLQueue(t, `CREATE TABLE d (id int PRIMARY KEY, a text)`)
		old(q)
		exec(t, q.c, `INSERT INTO d VALUES (1, 'a1')`)
		exec(t, q.c, `ALTER TABLE d ADD COLUMN extra int`)
		exec(t, q.c, `INSERT INTO d VALUES (2, 'a2', 2)`)
		require.Equal(t, []string{"INSERT d id=1 a=a1 key=id", "INSERT d id=2 a=a2 extra=2 key=id"}, q.read(t))
	})
	t.Run("a column dropped before the layout", func(t *testing.T) {
		t.Parallel()
		q := newDDLQueue(t, `CREATE TABLE d (id int PRIMARY KEY, gone text, a text); ALTER TABLE d DROP COLUMN gone`)
		old(q)
		exec(t, q.c, `INSERT INTO d VALUES (1, 'a1')`)
		exec(t, q.c, `ALTER TABLE d ADD COLUMN extra int`)
		exec(t, q.c, `INSERT INTO d VALUES (2, 'a2', 2)`)
		require.Equal(t, []string{"INSERT d id=1 a=a1 key=id", "INSERT d id=2 a=a2 extra=2 key=id"}, q.read(t))
	})
	t.Run("a rename on a table with a dropped column", func(t *testing.T) {
		t.Parallel()
		q := newDDLQueue(t, `CREATE TABLE d (id int PRIMARY KEY, gone text, a text); ALTER TABLE d DROP COLUMN gone`)
		old(q)
		exec(t, q.c, `INSERT INTO d VALUES (1, 'a1')`)
		exec(t, q.c, `ALTER TABLE d RENAME COLUMN a TO b`)
		got := q.read(t)
		require.Len(t, got, 1)
		require.Contains(t, got[0], `ERR decode event 1 of "public"."d" (layout 1): row has 2 fields: layout 1 was made before skiff recorded column numbers`)
	})
}

// TestDecodeRenamedAndDroppedTable: rows of a table renamed or dropped before the refresh
// decode under the name of their layout (the subscription's route), and a dropped table's rows
// of another width than their layout's are refused, saying why.
func TestDecodeRenamedAndDroppedTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newDDLQueue(t, `CREATE TABLE d (id int PRIMARY KEY, a text)`)
	exec(t, q.c, `INSERT INTO d VALUES (1, 'a1')`)
	exec(t, q.c, `ALTER TABLE d RENAME TO d2`)
	exec(t, q.c, `INSERT INTO d2 VALUES (2, 'a2')`)
	require.Equal(t, []string{"INSERT d id=1 a=a1 key=id", "INSERT d id=2 a=a2 key=id"}, q.read(t))
	res, err := AddTable(ctx, q.c, "q", TableSpec{Name: "d2", Refresh: true})
	require.NoError(t, err)
	require.Equal(t, "d", res.RenamedFrom.Name, "the refresh says the table was renamed")
	exec(t, q.c, `INSERT INTO d2 VALUES (3, 'a3')`)
	exec(t, q.c, `ALTER TABLE d2 ADD COLUMN extra int`)
	exec(t, q.c, `INSERT INTO d2 VALUES (4, 'a4', 4)`)
	exec(t, q.c, `DROP TABLE d2`)
	got := q.read(t)
	require.Len(t, got, 2)
	require.Equal(t, "INSERT d2 id=3 a=a3 key=id", got[0])
	require.Contains(t, got[1], `ERR decode event 4 of "public"."d2" (layout 2): row has 3 fields: "public"."d2" no longer exists, so the columns it had after layout 2 was made cannot be read`)
}
