package queue

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"

	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestFloatDigitsPinByVersion: the capture function pins the most float digits the server
// accepts, as pg.SessionSQL does for the copy: 3 from 9.0 on (exact float4 text), 2 before.
// The server here is new; the version passed decides the branch.
func TestFloatDigitsPinByVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pg.Connect(ctx, pgtest.Shared(t, "").NewDB(t), "skiff-test")
	require.NoError(t, err)
	defer conn.Close(ctx)
	exec(t, conn, `CREATE TABLE f (id int PRIMARY KEY, r real)`)
	var oid uint32
	require.NoError(t, conn.QueryRow(ctx, `SELECT 'f'::regclass::oid`).Scan(&oid))
	cols, err := catalog.Columns(ctx, conn, oid)
	require.NoError(t, err)
	own := "3"
	if pg.ServerVersion(conn) < 90000 {
		own = "2"
	}
	for version, want := range map[int]string{80422: "2", 90000: "3", 90124: "3", pg.ServerVersion(conn): own} {
		pins, err := settingPins(ctx, conn, cols, version)
		require.NoError(t, err)
		require.Contains(t, pins, pin{"extra_float_digits", want}, "server_version_num %d", version)
	}
}

// TestWhereBackslashPin: before 9.1 a writing session reads backslashes in a --where literal
// as escapes (standard_conforming_strings off by default), so a filter with a backslash gets
// the setting pinned on in its capture function. Old servers are not installed here: the
// session below turns the setting off, as an 8.4 writer has it, and the pin is added by hand.
func TestWhereBackslashPin(t *testing.T) {
	t.Parallel()
	where := `s LIKE 'a\_%'`
	require.Equal(t, []pin{{"standard_conforming_strings", "on"}}, wherePins(where, 80422))
	require.Empty(t, wherePins(where, 90100))
	require.Empty(t, wherePins(`s LIKE 'a%'`, 80422))

	ctx := context.Background()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE s (id int PRIMARY KEY, s text)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "s", Where: where})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)

	writer := p.conn(t)
	exec(t, writer, `SET standard_conforming_strings = off`)
	insert := func(a, b int) {
		_, err := writer.Exec(ctx, `INSERT INTO s VALUES ($1, $2), ($3, $4)`, a, "a_"+strconv.Itoa(a), b, "ab"+strconv.Itoa(b))
		require.NoError(t, err)
	}
	insert(1, 2) // without the pin: 'a\_%' reads as 'a_%', both rows pass

	var tg trigger
	var oid uint32
	require.NoError(t, c.QueryRow(ctx, `SELECT queue_id, layout_id, func_name, row_trigger, trunc_trigger, table_oid
		FROM skiff.captured_table`).Scan(&tg.queueID, &tg.layout, &tg.funcName, &tg.rowTrig, &tg.truncTrig, &oid))
	cols, err := catalog.Columns(ctx, c, oid)
	require.NoError(t, err)
	names := map[string]bool{"id": true, "s": true}
	tg.table, tg.key = change.Table{Schema: "public", Name: "s"}, []string{"id"}
	tg.whereNew, _ = qualifyColumns(where, names, "NEW")
	tg.whereOld, _ = qualifyColumns(where, names, "OLD")
	tg.pins, err = settingPins(ctx, c, cols, 80422)
	require.NoError(t, err)
	tg.pins = append(tg.pins, wherePins(where, 80422)...)
	exec(t, c, tg.function())
	// A new session compiles the function anew.
	writer = p.conn(t)
	exec(t, writer, `SET standard_conforming_strings = off`)
	insert(3, 4) // with the pin: only 'a_3' passes

	_, err = ForceTick(ctx, c, "q")
	require.NoError(t, err)
	src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c"})
	require.NoError(t, err)
	_, evs := readBatch(t, src)
	var got []string
	for _, e := range evs {
		got = append(got, e.Values[0].Text)
	}
	want := []string{"1", "2", "3"}
	if pg.ServerVersion(c) < 90100 {
		want = []string{"1", "3"} // a real old server: table add pinned the setting already
	}
	require.Equal(t, want, got)
}
