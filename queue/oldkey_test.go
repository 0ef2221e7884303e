package queue

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
)

// TestUpdateOldKey: an UPDATE event carries the old key (ev_extra) exactly when the update
// changed the key's text (the capture function compares the keys' text, or, for NOT NULL
// keys of types whose equality is their text's (keyByOperator), the keys by pg_catalog's =):
// a changed key, an unchanged one, a composite key changed in either part, and keys whose
// equal values may print differently (numeric 1.0 and 1.00, float8 0 and -0, bpchar 'a' and
// 'a '), a NULL key column (--key with --key-not-unique), and a child's row of a table
// captured with its inheritance children.
func TestUpdateOldKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	add := func(spec TableSpec) {
		t.Helper()
		_, err := AddTable(ctx, c, "q", spec)
		require.NoError(t, err)
	}
	// extras returns ev_extra of the table's UPDATE events in order, "-" for NULL.
	extras := func(table string) []string {
		t.Helper()
		rows, err := c.Query(ctx, `SELECT coalesce(e.ev_extra, '-') FROM (
				SELECT * FROM skiff.event_1_0 UNION ALL SELECT * FROM skiff.event_1_1 UNION ALL SELECT * FROM skiff.event_1_2) e
			JOIN skiff.table_layout l ON l.layout_id = e.ev_layout
			WHERE l.table_name = $1 AND e.ev_op = 'U' ORDER BY e.ev_id`, table)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	// byOperator says whether the table's capture function compares keys by operator.
	byOperator := func(table string) bool {
		t.Helper()
		var src string
		require.NoError(t, c.QueryRow(ctx, `SELECT p.prosrc FROM skiff.captured_table t
			JOIN pg_proc p ON p.proname = t.func_name WHERE t.table_name = $1`, table).Scan(&src))
		return strings.Contains(src, "OPERATOR(pg_catalog.=) NEW.")
	}

	exec(t, c, `CREATE TABLE a (id int PRIMARY KEY, v text)`)
	add(TableSpec{Name: "a"})
	exec(t, c, `INSERT INTO a VALUES (1, 'x')`)
	exec(t, c, `UPDATE a SET v = 'y'`)
	exec(t, c, `UPDATE a SET id = 2`)
	exec(t, c, `UPDATE a SET id = id, v = 'z'`)
	require.Equal(t, []string{"-", "(1)", "-"}, extras("a"))

	exec(t, c, `CREATE TABLE b (id int, k text, v int, PRIMARY KEY (id, k))`)
	add(TableSpec{Name: "b"})
	exec(t, c, `INSERT INTO b VALUES (1, 'k', 0)`)
	exec(t, c, `UPDATE b SET v = 1`)
	exec(t, c, `UPDATE b SET k = 'l'`)
	exec(t, c, `UPDATE b SET id = 2`)
	exec(t, c, `UPDATE b SET k = 'l', v = 2`)
	require.Equal(t, []string{"-", "(1,k)", "(1,l)", "-"}, extras("b"))
	require.True(t, byOperator("a"))
	require.True(t, byOperator("b"))

	// Every type compared by operator, in one key.
	exec(t, c, `CREATE TABLE w (u uuid, d date, vc varchar(10), i2 int2, i8 int8, o oid, b bool, v int,
		PRIMARY KEY (u, d, vc, i2, i8, o, b))`)
	add(TableSpec{Name: "w"})
	exec(t, c, `INSERT INTO w VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001-02-03', 'x', 1, 2, 3, true, 0)`)
	exec(t, c, `UPDATE w SET v = 1`)
	exec(t, c, `UPDATE w SET d = '2001-02-04'`)
	exec(t, c, `UPDATE w SET vc = 'y', v = 2`)
	exec(t, c, `UPDATE w SET b = false`)
	exec(t, c, `UPDATE w SET i2 = i2, i8 = i8, o = o, v = 3`)
	require.Equal(t, []string{"-", "(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,2001-02-03,x,1,2,3,t)",
		"(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,2001-02-04,x,1,2,3,t)", "(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,2001-02-04,y,1,2,3,t)", "-"}, extras("w"))
	require.True(t, byOperator("w"))

	// Equal by the type's equality, printed otherwise: the key's text changed.
	exec(t, c, `CREATE TABLE n (k numeric PRIMARY KEY, v int)`)
	add(TableSpec{Name: "n"})
	exec(t, c, `INSERT INTO n VALUES (1.0, 0)`)
	exec(t, c, `UPDATE n SET v = 1`)
	exec(t, c, `UPDATE n SET k = 1.00`)
	require.Equal(t, []string{"-", "(1.0)"}, extras("n"))

	exec(t, c, `CREATE TABLE f (k float8 PRIMARY KEY, v int)`)
	add(TableSpec{Name: "f"})
	exec(t, c, `INSERT INTO f VALUES (0, 0)`)
	exec(t, c, `UPDATE f SET v = 1`)
	exec(t, c, `UPDATE f SET k = '-0'`)
	require.Equal(t, []string{"-", "(0)"}, extras("f"))

	exec(t, c, `CREATE TABLE s (k bpchar PRIMARY KEY, v int)`)
	add(TableSpec{Name: "s"})
	exec(t, c, `INSERT INTO s VALUES ('a', 0)`)
	exec(t, c, `UPDATE s SET v = 1`)
	exec(t, c, `UPDATE s SET k = 'a '`)
	require.Equal(t, []string{"-", "(a)"}, extras("s"))
	for _, tb := range []string{"n", "f", "s"} {
		require.False(t, byOperator(tb), "table %s", tb)
	}

	// A collation of the column's own (may be nondeterministic: 12+): compared as text.
	if pg.ServerVersionOf(c.PgConn()) >= 90100 {
		exec(t, c, `CREATE TABLE cc (k text COLLATE "C" PRIMARY KEY, v int)`)
		add(TableSpec{Name: "cc"})
		exec(t, c, `INSERT INTO cc VALUES ('a', 0)`)
		exec(t, c, `UPDATE cc SET v = 1`)
		exec(t, c, `UPDATE cc SET k = 'b'`)
		require.Equal(t, []string{"-", "(a)"}, extras("cc"))
		require.False(t, byOperator("cc"))
	}

	// A key that may be NULL (the user's word that it identifies rows).
	exec(t, c, `CREATE TABLE u (id int, v int)`)
	add(TableSpec{Name: "u", Key: []string{"id"}, KeyNotUnique: true})
	exec(t, c, `INSERT INTO u VALUES (NULL, 0)`)
	exec(t, c, `UPDATE u SET v = 1`)
	exec(t, c, `UPDATE u SET id = 1`)
	exec(t, c, `UPDATE u SET id = NULL`)
	require.Equal(t, []string{"-", "()", "(1)"}, extras("u"))
	require.False(t, byOperator("u"))

	// A child's row, through the parent's capture function.
	exec(t, c, `CREATE TABLE par (id int PRIMARY KEY, v int)`)
	exec(t, c, `CREATE TABLE kid (extra text) INHERITS (par)`)
	add(TableSpec{Name: "par", KeyNotUnique: true})
	exec(t, c, `INSERT INTO kid VALUES (1, 0, 'e')`)
	exec(t, c, `UPDATE par SET v = 1`)
	exec(t, c, `UPDATE par SET id = 2`)
	require.Equal(t, []string{"-", "(1)"}, extras("par"))
	require.True(t, byOperator("par"))
}
