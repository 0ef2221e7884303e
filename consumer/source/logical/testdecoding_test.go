package logical

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestParseTestDecoding reads lines as test_decoding prints them, awkward ones included; the
// real servers' output is checked by TestDecode.
func TestParseTestDecoding(t *testing.T) {
	t.Parallel()
	tbl := change.Table{Schema: "public", Name: "t"}
	cases := []struct {
		line string
		want tdLine
	}{
		{"BEGIN 529", tdLine{Kind: tdBegin, Xid: 529}},
		{"BEGIN", tdLine{Kind: tdBegin}},
		{"COMMIT 529 (at 2024-05-01 12:00:00.123456+00)", tdLine{Kind: tdCommit, Xid: 529,
			CommitTime: time.Date(2024, 5, 1, 12, 0, 0, 123456000, time.UTC)}},
		{"COMMIT 7 (at 2024-05-01 14:30:00+02:30)", tdLine{Kind: tdCommit, Xid: 7,
			CommitTime: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}},
		{"message: transactional: 1 prefix: p, sz: 1 content:x", tdLine{Kind: tdOther}},
		{"table public.t: INSERT: id[integer]:1 name[text]:'it''s a b' n[numeric]:NaN b[boolean]:true e[text]:'' z[text]:null",
			tdLine{Kind: tdChange, Op: change.Insert, Tables: []change.Table{tbl}, New: []tdField{
				{Name: "id", Type: "integer", Value: change.Text("1")},
				{Name: "name", Type: "text", Value: change.Text("it's a b")},
				{Name: "n", Type: "numeric", Value: change.Text("NaN")},
				{Name: "b", Type: "boolean", Value: change.Text("t")},
				{Name: "e", Type: "text", Value: change.Text("")},
				{Name: "z", Type: "text", Value: change.Null},
			}}},
		{`table "we.ird"."ta""b le": UPDATE: old-key: "I d"[character varying[]]:'{a,"b c"}' new-tuple: "I d"[character varying[]]:'{x}' "new-tuple"[bit varying]:B'0101' big[text]:unchanged-toast-datum u["My ""]:Type"[]]:'é ''q'''`,
			tdLine{Kind: tdChange, Op: change.Update, HasOld: true, Tables: []change.Table{{Schema: "we.ird", Name: `ta"b le`}},
				Old: []tdField{{Name: "I d", Type: "character varying[]", Value: change.Text(`{a,"b c"}`)}},
				New: []tdField{
					{Name: "I d", Type: "character varying[]", Value: change.Text("{x}")},
					{Name: "new-tuple", Type: "bit varying", Value: change.Text("0101")},
					{Name: "big", Type: "text", Toast: true},
					{Name: "u", Type: `"My ""]:Type"[]`, Value: change.Text("é 'q'")},
				}}},
		{"table public.t: DELETE: id[integer]:1", tdLine{Kind: tdChange, Op: change.Delete, HasOld: true, Tables: []change.Table{tbl},
			Old: []tdField{{Name: "id", Type: "integer", Value: change.Text("1")}}}},
		{"table public.t: DELETE: (no-tuple-data)", tdLine{Kind: tdChange, Op: change.Delete, Tables: []change.Table{tbl}}},
		{`table public.t, "S".u: TRUNCATE: restart_seqs cascade`, tdLine{Kind: tdTruncate, Op: change.Truncate,
			Tables: []change.Table{tbl, {Schema: "S", Name: "u"}}}},
	}
	for _, c := range cases {
		got, err := parseTestDecoding(c.line)
		require.NoError(t, err, c.line)
		require.Equal(t, c.want, got, c.line)
	}
	for _, bad := range []string{
		"table public.t: INSERT: id[integer:1",
		"table public.t: INSERT: id[integer]:'open",
		"table public: INSERT: id[integer]:1",
		"table public.t: MERGE: x",
		"table public.t: UPDATE: old-key: id[integer]:1",
		`table "public.t: INSERT: id[integer]:1`,
		"BEGIN 99999999999",
	} {
		_, err := parseTestDecoding(bad)
		require.Error(t, err, bad)
	}
}
