package change

import (
	"errors"
	"fmt"
	"strings"
)

// ErrTableName is returned (wrapped, with the name and what is wrong) by ParseTableName for
// text that is not a table name.
var ErrTableName = errors.New("not a table name")

// ParseTableName reads a table name as SQL writes it, by PostgreSQL's rule: name or
// schema.name, each part either unquoted — folded to lower case (ASCII letters, as the server
// folds them), made of letters, digits, _ and $, not starting with a digit or $ — or in double
// quotes, taken exactly ("" stands for one quote). Spaces around the parts and the dot are
// ignored. A name without a schema comes back with Schema "": it follows the search_path of
// the server it is looked up on (see pg.ResolveTable), never an assumed "public".
//
// Table.String quotes a table so that ParseTableName gives it back unchanged.
func ParseTableName(s string) (Table, error) {
	var parts []string
	rest := s
	for {
		part, after, err := parseIdentPart(rest)
		if err != nil {
			return Table{}, fmt.Errorf("%w %q: %s", ErrTableName, s, err)
		}
		parts = append(parts, part)
		after = strings.TrimLeft(after, " \t\n\r")
		if after == "" {
			break
		}
		if after[0] != '.' {
			return Table{}, fmt.Errorf("%w %q: unexpected %q after %q (quote a name with spaces or punctuation: \"My Table\")",
				ErrTableName, s, after[:1], part)
		}
		rest = after[1:]
	}
	switch len(parts) {
	case 1:
		return Table{Name: parts[0]}, nil
	case 2:
		return Table{Schema: parts[0], Name: parts[1]}, nil
	}
	return Table{}, fmt.Errorf("%w %q: %d dotted parts; write name or schema.name", ErrTableName, s, len(parts))
}

// parseIdentPart reads one identifier at the start of s (after spaces) and returns it and what
// follows it.
func parseIdentPart(s string) (ident, rest string, err error) {
	s = strings.TrimLeft(s, " \t\n\r")
	if s == "" {
		return "", "", errors.New("empty name")
	}
	if s[0] == '"' {
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
			if b.Len() == 0 {
				return "", "", errors.New(`empty quoted name ""`)
			}
			return b.String(), s[i+1:], nil
		}
		return "", "", errors.New("unterminated quoted name")
	}
	i := 0
	for i < len(s) && identByte(s[i], i == 0) {
		i++
	}
	if i == 0 {
		if s[0] == '.' {
			return "", "", errors.New("empty name")
		}
		return "", "", fmt.Errorf("unexpected %q (quote a name that does not start with a letter or _)", s[:1])
	}
	return foldIdent(s[:i]), s[i:], nil
}

// identByte says whether b may appear in an unquoted identifier (first: at its start). Bytes
// of multibyte characters count as letters, as the server's scanner takes them.
func identByte(b byte, first bool) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b == '_', b >= 0x80:
		return true
	case b >= '0' && b <= '9', b == '$':
		return !first
	}
	return false
}

// foldIdent folds an unquoted identifier as the server does in a UTF-8 database: ASCII
// letters to lower case, other characters unchanged.
func foldIdent(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}
