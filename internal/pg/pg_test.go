package pg

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestParseServerVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		"8.4.22":               80422,
		"9.6.24":               90624,
		"15.4 (Debian 15.4-1)": 150004,
		"18beta1":              180000,
		"10.23":                100023,
		"9.1.24rc1":            90124,
		"":                     0,
	} {
		require.Equal(t, want, ParseServerVersion(in), in)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db":        "postgres://u:xxxxx@h:5432/db",
		"postgres://u@h/db?password=secret":    "postgres://u@h/db?password=xxxxx",
		"host=h password=secret dbname=d":      "host=h password=xxxxx dbname=d",
		"host=h password = 'se cret' dbname=d": "host=h password = xxxxx dbname=d",
		"host=h dbname=d":                      "host=h dbname=d",
	} {
		got := Redact(in)
		require.Equal(t, want, got, in)
		require.NotContains(t, got, "secret")
	}
}

func TestSessionSQL(t *testing.T) {
	t.Parallel()
	require.Equal(t, "SET IntervalStyle = 'postgres'; SET extra_float_digits = 2", SessionSQL(80422, "skiff"),
		"8.4 accepts at most 2 float digits and has no application_name")
	require.Equal(t, "SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET application_name = 'x'", SessionSQL(90422, "x"),
		"row_security exists from 9.5")
	require.Equal(t, "SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET row_security = off; SET application_name = 'it''s'", SessionSQL(100004, "it's"))
	require.Equal(t, "SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET row_security = off; SET jit = off; SET application_name = 'it''s'", SessionSQL(150004, "it's"),
		"JIT compilation off from 11, where the setting exists")
}

func TestHint(t *testing.T) {
	t.Parallel()
	require.Empty(t, Hint(errors.New("no server error")))
	own := &pgconn.PgError{Code: "42P01", Message: "relation does not exist", Hint: "the server's hint"}
	require.Equal(t, "the server's hint", Hint(fmt.Errorf("read: %w", own)))
	rls := &pgconn.PgError{Code: "42501", Message: `query would be affected by row-level security policy for table "accounts"`}
	// A copy's error: the target's COPY failed because the provider's did.
	copyErr := errors.Join(fmt.Errorf("target: %w", &pgconn.PgError{Code: "57014", Message: "COPY from stdin failed"}),
		fmt.Errorf("provider: %w", rls))
	require.Contains(t, Hint(fmt.Errorf("copy: %w", copyErr)), "BYPASSRLS")
	require.Equal(t, []any{"a", 1, "hint", Hint(rls)}, WithHint(rls, "a", 1))
	require.Equal(t, []any{"a", 1}, WithHint(errors.New("x"), "a", 1))
}
