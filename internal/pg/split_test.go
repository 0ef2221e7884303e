package pg

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitStatements(t *testing.T) {
	t.Parallel()
	script := `-- a comment; not a statement
ALTER TABLE "a;b" ADD COLUMN c text DEFAULT 'x;''y';
/* nested /* comment; */ still; */ CREATE INDEX ON t (c);

CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b'::text; $body$;
SELECT E'it\'s; fine', $$;$$, a$b, $1
;;
  -- only a comment
UPDATE t SET v = 'multi
line;'`
	st, err := SplitStatements(script)
	require.NoError(t, err)
	var got []Statement
	got = append(got, st...)
	require.Equal(t, []Statement{
		{SQL: `ALTER TABLE "a;b" ADD COLUMN c text DEFAULT 'x;''y'`, Line: 2},
		{SQL: `CREATE INDEX ON t (c)`, Line: 3},
		{SQL: `CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b'::text; $body$`, Line: 5},
		{SQL: "SELECT E'it\\'s; fine', $$;$$, a$b, $1", Line: 6},
		{SQL: "UPDATE t SET v = 'multi\nline;'", Line: 9},
	}, got)
	require.Equal(t, []string{"CREATE", "INDEX", "ON", "T"}, st[1].Words(4))
	require.Equal(t, []string{"ALTER", "TABLE", "\x00quoted", "ADD"}, st[0].Words(4))

	for script, line := range map[string]int{"SELECT 1;\nSELECT 'x": 2, "SELECT 1; /* a\n\n": 1, "\n\nSELECT $a$ x": 3, `SELECT "a`: 1} {
		_, err := SplitStatements(script)
		require.ErrorContains(t, err, "line "+string(rune('0'+line))+":", script)
	}
}
