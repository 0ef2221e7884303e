package pg

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// Statement is one statement of an SQL script, as SplitStatements cuts it.
type Statement struct {
	// SQL is the statement's text without its ending semicolon, leading blanks and comments
	// removed: what is sent to the server.
	SQL string
	// Line is the script's line (from 1) SQL starts on.
	Line int
}

// SplitStatements cuts an SQL script into statements at the semicolons outside string
// literals ('…', E'…' with backslash escapes, $tag$…$tag$), quoted identifiers and comments
// (-- and nested /* */), as psql does; statements with nothing but blanks and comments are
// left out. An unterminated quote or comment is an error naming its line. Sessions run with
// standard_conforming_strings on (internal/pg), so a backslash in '…' is an ordinary
// character.
func SplitStatements(script string) ([]Statement, error) {
	var out []Statement
	line := 1
	content := -1 // offset of the statement's first byte that is not a blank or a comment
	contentLine := 0
	mark := func(i int) {
		if content < 0 {
			content, contentLine = i, line
		}
	}
	n := len(script)
	for i := 0; i < n; {
		c := script[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f':
			i++
		case c == '-' && i+1 < n && script[i+1] == '-':
			for i < n && script[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < n && script[i+1] == '*':
			open := line
			depth := 0
			for i < n {
				switch {
				case script[i] == '/' && i+1 < n && script[i+1] == '*':
					depth++
					i += 2
				case script[i] == '*' && i+1 < n && script[i+1] == '/':
					depth--
					i += 2
				default:
					if script[i] == '\n' {
						line++
					}
					i++
				}
				if depth == 0 {
					break
				}
			}
			if depth > 0 {
				return nil, fmt.Errorf("line %d: comment not closed", open)
			}
		case c == ';':
			if content >= 0 {
				out = append(out, Statement{SQL: script[content:i], Line: contentLine})
			}
			i++
			content = -1
		case c == '\'' || c == '"':
			mark(i)
			open := line
			escapes := c == '\'' && i > 0 && (script[i-1] == 'E' || script[i-1] == 'e') &&
				(i < 2 || !wordByte(script[i-2]))
			i++
			closed := false
			for i < n {
				switch {
				case escapes && script[i] == '\\' && i+1 < n:
					if script[i+1] == '\n' {
						line++
					}
					i += 2
					continue
				case script[i] == c && i+1 < n && script[i+1] == c:
					i += 2
					continue
				case script[i] == c:
					closed = true
				case script[i] == '\n':
					line++
				}
				i++
				if closed {
					break
				}
			}
			if !closed {
				what := "string literal"
				if c == '"' {
					what = "quoted identifier"
				}
				return nil, fmt.Errorf("line %d: %s not closed", open, what)
			}
		case c == '$' && (i == 0 || !wordByte(script[i-1])):
			mark(i)
			tag, ok := dollarTag(script[i:])
			if !ok {
				i++
				continue
			}
			open := line
			end := strings.Index(script[i+len(tag):], tag)
			if end < 0 {
				return nil, fmt.Errorf("line %d: %s quote not closed", open, tag)
			}
			body := script[i : i+len(tag)+end+len(tag)]
			line += strings.Count(body, "\n")
			i += len(body)
		default:
			mark(i)
			i++
		}
	}
	if content >= 0 {
		out = append(out, Statement{SQL: strings.TrimRight(script[content:], " \t\r\n\f"), Line: contentLine})
	}
	for i := range out {
		out[i].SQL = strings.TrimRight(out[i].SQL, " \t\r\n\f")
	}
	return out, nil
}

// wordByte: a byte that continues an identifier (so a $ or E after it starts nothing).
func wordByte(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b >= 0x80
}

// dollarTag returns the dollar-quote tag s starts with ($$ or $name$), if any; $1 is a
// parameter, not a tag.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		b := s[j]
		switch {
		case b == '$':
			return s[:j+1], true
		case b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= 0x80:
		case b >= '0' && b <= '9' && j > 1:
		default:
			return "", false
		}
	}
	return "", false
}

// Words returns the first n words of a statement, upper-cased, skipping comments and
// punctuation: its verb and what follows ("CREATE", "UNIQUE", "INDEX", "CONCURRENTLY"). A
// quoted identifier or a literal counts as a word that matches no keyword.
func (s Statement) Words(n int) []string {
	var out []string
	q := s.SQL
	for i := 0; i < len(q) && len(out) < n; {
		c := q[i]
		switch {
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 4
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(q) && q[j] != c {
				j++
			}
			out = append(out, "\x00quoted")
			i = j + 1
		case wordByte(c) && !(c >= '0' && c <= '9'):
			j := i
			for j < len(q) && wordByte(q[j]) {
				j++
			}
			out = append(out, strings.ToUpper(q[i:j]))
			i = j
		default:
			i++
		}
	}
	return out
}

// ErrorLine returns the script line an error of statement s points at: the line of the
// server's error position (PostgreSQL counts characters from 1), else the statement's first.
func (s Statement) ErrorLine(err error) int {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Position <= 0 {
		return s.Line
	}
	line, chars := s.Line, int(pe.Position)-1
	for i := 0; i < len(s.SQL) && chars > 0; {
		r, size := utf8.DecodeRuneInString(s.SQL[i:])
		if r == '\n' {
			line++
		}
		i += size
		chars--
	}
	return line
}
