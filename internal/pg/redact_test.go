package pg

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// marker starts every piece of a fuzzed password: any fragment of the password that reaches
// a message carries it.
const marker = "Qz7"

// markedPassword turns fuzz input into a password each of whose pieces (split wherever a
// parser might cut it: whitespace, quotes, backslashes, '=', '@', ':', '/') starts with marker.
func markedPassword(in string) string {
	var b strings.Builder
	b.WriteString(marker)
	for _, r := range in {
		if r == 0 {
			continue
		}
		b.WriteRune(r)
		if strings.ContainsRune(" \t\r\n'\\=@:/?&%#", r) {
			b.WriteString(marker)
		}
	}
	return b.String()
}

// FuzzRedact: whatever a password holds, and however the connection string around it is
// malformed, neither Redact nor the error of ParseConfig shows any piece of it.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{"secret", "abc def", `abc\ def`, "a'b", "'", `\`, "x=y z", "p@ss:w/rd", "%zz", "a b c=d"} {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, in string, form uint8) {
		p := markedPassword(in)
		quoted := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p) + "'"
		forms := []string{
			"host=h password=" + quoted + " dbname=d",
			"host=h password=" + p + " dbname=d", // raw: often malformed
			"password = " + p,
			"host=h password='" + p, // unterminated
			"postgres://u:" + url.PathEscape(p) + "@h/db",
			"postgres://u:" + p + "@h/db", // raw: often malformed
			"postgres://u@h/db?password=" + url.QueryEscape(p),
		}
		i := int(form) % len(forms)
		cs := forms[i]
		if _, err := ParseConfig(cs, "skiff-test"); err != nil {
			require.NotContains(t, err.Error(), marker, "error of %q", cs)
			return
		}
		// A well-formed string (quoted or escaped: every marked piece is the password, not
		// the start of another keyword a raw form makes of it): Redact hides all of it.
		if i == 0 || i == 4 || i == 6 {
			require.NotContains(t, Redact(cs), marker, "Redact(%q)", cs)
		}
	})
}

func TestRedactMalformed(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"host=x password='abc def":           "host=x password=xxxxx",
		`host=x password=abc\ def user`:      "host=x password=xxxxx user",
		"host=x password='a\\'b c' port=1":   "host=x password=xxxxx port=1",
		"password=s3 host=x port=notanumber": "password=xxxxx host=x port=notanumber",
		"host=x PASSWORD=a password=b":       "host=x PASSWORD=xxxxx password=xxxxx",
	} {
		require.Equal(t, want, Redact(in), in)
	}
	_, err := ParseConfig("host=x password='abc def", "skiff-test")
	require.ErrorContains(t, err, "parse connection string host=x password=xxxxx: malformed (the reason is not shown")
	_, err = ParseConfig("host='x dbname=d", "skiff-test")
	require.EqualError(t, err, "parse connection string host='x dbname=d: unterminated quoted string in connection info string")
}
