package apply

import (
	"context"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

func TestHexToEscape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`\x`, ``},
		{`\x414243`, `ABC`},
		{`\x5c`, `\\`},
		{`\x00017f80ff`, `\000\001\177\200\377`},
		{`\x27223a7e20`, `'":~ `},
		{`abc\\`, `abc\\`}, // escape format already: unchanged
	} {
		got, err := hexToEscape(change.Text(c.in))
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got.Text, c.in)
	}
	got, err := hexToEscape(change.Null)
	require.NoError(t, err)
	require.False(t, got.Valid)
	_, err = hexToEscape(change.Text(`\x4g`))
	require.ErrorContains(t, err, "hex format")
}

// TestByteaEscapeForOldTargets: a target before 9.0 reads bytea only in escape format, while
// a 9.0+ provider captures hex. The applier converts bytea columns, domains over bytea and
// old key values; the target (here one that reads both formats) ends up with the same bytes.
func TestByteaEscapeForOldTargets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tg := newTarget(t, "", `CREATE DOMAIN blob AS bytea;
		CREATE TABLE b (k bytea PRIMARY KEY, v bytea, d blob, s text)`)
	tg.a.byteaEscape = true // what Open sets for a server before 9.0
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	hx := func(b []byte) change.Value { return change.Text(`\x` + hex.EncodeToString(b)) }
	bt := change.Table{Schema: "public", Name: "b"}
	cols, key := []string{"k", "v", "d", "s"}, []string{"k"}
	ev := func(id int64, op change.Op, old []change.Value, vals ...change.Value) change.Event {
		return change.Event{ID: id, Op: op, Table: bt, Columns: cols, Key: key, Values: vals, OldKey: old}
	}
	evs := []change.Event{
		ev(1, change.Insert, nil, hx([]byte{1}), hx(all), hx([]byte(`back\slash`)), change.Text(`\x41 stays text`)),
		ev(2, change.Insert, nil, hx([]byte{2}), hx(nil), change.Null, change.Null),
		ev(3, change.Insert, nil, hx([]byte{'\\', 0}), change.Null, hx([]byte{0xff}), change.Null),
	}
	require.NoError(t, tg.apply(t, evs))
	require.Equal(t, `\377`, evs[2].Values[2].Text, "the domain's value was sent in escape format")
	require.Equal(t, `\x41 stays text`, evs[0].Values[3].Text, "a text column is not converted")
	// A key change (old key in hex) and a delete by key.
	upd := []change.Event{
		ev(4, change.Update, []change.Value{hx([]byte{2})}, hx([]byte{3}), hx([]byte("new")), change.Null, change.Null),
		ev(5, change.Delete, nil, hx([]byte{'\\', 0}), change.Null, change.Null, change.Null),
	}
	require.NoError(t, tg.apply(t, upd))
	require.Equal(t, `\002`, upd[0].OldKey[0].Text)

	rows, err := tg.conn.Query(ctx, `SELECT encode(k, 'hex'), encode(v, 'hex'), encode(d, 'hex'), s FROM b ORDER BY k`)
	require.NoError(t, err)
	var got [][4]*string
	for rows.Next() {
		var r [4]*string
		require.NoError(t, rows.Scan(&r[0], &r[1], &r[2], &r[3]))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	p := func(s string) *string { return &s }
	require.Equal(t, [][4]*string{
		{p("01"), p(hex.EncodeToString(all)), p(hex.EncodeToString([]byte(`back\slash`))), p(`\x41 stays text`)},
		{p("03"), p(hex.EncodeToString([]byte("new"))), nil, nil},
	}, got)
}
