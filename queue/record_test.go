package queue

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

func TestParseRecord(t *testing.T) {
	t.Parallel()
	T, N := change.Text, change.Null
	cases := []struct {
		in   string
		want []change.Value
	}{
		{`()`, []change.Value{N}},
		{`(1)`, []change.Value{T("1")}},
		{`(1,,"")`, []change.Value{T("1"), N, T("")}},
		{`(,)`, []change.Value{N, N}},
		{`("a ""b"" \\c",x)`, []change.Value{T(`a "b" \c`), T("x")}},
		{`("(1,2)","{a,b}","line1
line2")`, []change.Value{T("(1,2)"), T("{a,b}"), T("line1\nline2")}},
		{`("{""a b"",NULL}",é)`, []change.Value{T(`{"a b",NULL}`), T("é")}},
		{`(,"")`, []change.Value{N, T("")}},
	}
	for _, c := range cases {
		got, err := parseRecord(c.in, nil)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
	for _, bad := range []string{``, `(`, `1,2`, `("a)`, `(a"b)`, `("a"b)`, `("a\`} {
		_, err := parseRecord(bad, nil)
		require.Error(t, err, bad)
	}
}

func TestQualifyColumns(t *testing.T) {
	t.Parallel()
	cols := map[string]bool{"status": true, "Odd Col": true, "n": true, "text": true}
	cases := map[string]string{
		`status = 'active'`:                   `NEW."status" = 'active'`,
		`"Odd Col" > 3 AND n IS NOT NULL`:     `NEW."Odd Col" > 3 AND NEW."n" IS NOT NULL`,
		`status = 'status' -- status`:         `NEW."status" = 'status' -- status`,
		`t.status = 1 OR lower(status) = 'x'`: `t.status = 1 OR lower(NEW."status") = 'x'`,
		`n::text = E'n\'' AND $$n$$ = 'n'`:    `NEW."n"::text = E'n\'' AND $$n$$ = 'n'`,
		`STATUS in ('a','b') /* n */`:         `NEW."status" in ('a','b') /* n */`,
		`n(1) = 2`:                            `n(1) = 2`,
	}
	for in, want := range cases {
		got, err := qualifyColumns(in, cols, "NEW")
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := qualifyColumns(`status = 'x`, cols, "NEW")
	require.Error(t, err)
}
