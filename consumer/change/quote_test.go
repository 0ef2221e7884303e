package change

import (
	"strings"
	"testing"
)

// readQuoted reads a quoted identifier at the start of s as PostgreSQL's scanner does (from
// the opening " to the first " not doubled) and returns its name and the rest of s.
func readQuoted(s string) (name, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], true
	}
	return "", "", false
}

// FuzzQuoteIdent: whatever a name holds (quotes, dots, semicolons, dollar quotes, newlines,
// \r, backslashes, unicode), its quoted form is read back by the server's rule as exactly that
// name and ends where the quoting ends: nothing of the name can continue the SQL around it. A
// qualified Table reads back as its two parts around one dot.
func FuzzQuoteIdent(f *testing.F) {
	for _, s := range []string{"t", `a"b`, `""`, "x;DROP TABLE y", "$skiff$", "\r\n--", `\`, "é.ü", `"; SELECT 1; --`} {
		f.Add(s, "public")
	}
	f.Fuzz(func(t *testing.T, name, schema string) {
		q := QuoteIdent(name)
		got, rest, ok := readQuoted(q)
		if !ok || got != name || rest != "" {
			t.Fatalf("QuoteIdent(%q) = %s reads back as %q, rest %q", name, q, got, rest)
		}
		full := Table{Schema: schema, Name: name}.String()
		if schema == "" {
			if full != q {
				t.Fatalf("unqualified %q = %s", name, full)
			}
			return
		}
		s, rest, ok := readQuoted(full)
		if !ok || s != schema || !strings.HasPrefix(rest, ".") {
			t.Fatalf("%s: schema reads back as %q, rest %q", full, s, rest)
		}
		n, rest, ok := readQuoted(rest[1:])
		if !ok || n != name || rest != "" {
			t.Fatalf("%s: name reads back as %q, rest %q", full, n, rest)
		}
	})
}
