package change

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTableName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Table{
		"orders":                  {Name: "orders"},
		"Orders":                  {Name: "orders"},
		"ORDERS":                  {Name: "orders"},
		"app.Orders":              {Schema: "app", Name: "orders"},
		`"Orders"`:                {Name: "Orders"},
		`app."Orders"`:            {Schema: "app", Name: "Orders"},
		`"My Schema"."Odd Table"`: {Schema: "My Schema", Name: "Odd Table"},
		`"a.b"."c:d"`:             {Schema: "a.b", Name: "c:d"},
		`s."x""y"`:                {Schema: "s", Name: `x"y`},
		`""""`:                    {Name: `"`},
		" app . orders ":          {Schema: "app", Name: "orders"},
		"t_1$":                    {Name: "t_1$"},
		"_x":                      {Name: "_x"},
		"Ünïcödé":                 {Name: "Ünïcödé"},          // only ASCII letters fold, as in the server
		"ÉTÉ.T":                   {Schema: "ÉtÉ", Name: "t"}, // T folds, É does not
	} {
		got, err := ParseTableName(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{
		"", " ", ".", "a.", ".a", "a..b", "a.b.c", `"`, `"abc`, `""`, `a.""`, "1abc", "$a",
		"Small Table", "public.Small Table", "a-b", "a;drop table x", `"a"b`, "a.b c",
	} {
		_, err := ParseTableName(in)
		require.ErrorIs(t, err, ErrTableName, "%q", in)
	}
}

// FuzzParseTableName: a table quoted by Table.String parses back to itself, and a name that
// parses quotes to text that parses to the same table.
func FuzzParseTableName(f *testing.F) {
	for _, s := range []string{"orders", "app.Orders", `"My Schema"."Odd Table"`, `s."x""y"`, `"a.b".c`, "É.t", `""""`} {
		f.Add(s, "schema", "name")
	}
	f.Fuzz(func(t *testing.T, in, schema, name string) {
		if name != "" {
			want := Table{Schema: schema, Name: name}
			got, err := ParseTableName(want.String())
			require.NoError(t, err, "%q", want.String())
			require.Equal(t, want, got)
		}
		got, err := ParseTableName(in)
		if err != nil {
			require.True(t, errors.Is(err, ErrTableName), "%v", err)
			return
		}
		require.NotEmpty(t, got.Name)
		again, err := ParseTableName(got.String())
		require.NoError(t, err, "%q → %q", in, got.String())
		require.Equal(t, got, again)
	})
}
