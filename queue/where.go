package queue

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// compileWhere turns a --where filter written over the table's columns into the two PL/pgSQL
// expressions the capture function tests, one over NEW and one over OLD: each bare column
// name becomes NEW."col" / OLD."col". A filter is checked against the table as written and
// as rewritten, so that a mistake is reported at `table add`, never by a failing write.
func compileWhere(ctx context.Context, tx pgx.Tx, rel relation, cols []column, where string) (string, string, error) {
	if strings.Contains(where, "$skiff$") {
		return "", "", fmt.Errorf("table %s: --where must not contain $skiff$", rel.table())
	}
	names := make(map[string]bool, len(cols))
	for _, c := range cols {
		names[c.name] = true
	}
	check := func(sql string) error {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, sql); err != nil {
			_ = sp.Rollback(ctx)
			return err
		}
		return sp.Commit(ctx)
	}
	if err := check(`EXPLAIN SELECT 1 FROM ` + rel.table().String() + ` WHERE (` + where + `)`); err != nil {
		return "", "", fmt.Errorf("table %s: invalid --where %q: %w", rel.table(), where, err)
	}
	probe, err := qualifyColumns(where, names, "skiff_row")
	if err != nil {
		return "", "", fmt.Errorf("table %s: --where %q: %w", rel.table(), where, err)
	}
	if err := check(`EXPLAIN SELECT 1 FROM ` + rel.table().String() + ` AS skiff_row WHERE (` + probe + `)`); err != nil {
		return "", "", fmt.Errorf("table %s: --where %q cannot be used in a trigger (%s): %w", rel.table(), where, probe, err)
	}
	newExpr, _ := qualifyColumns(where, names, "NEW")
	oldExpr, _ := qualifyColumns(where, names, "OLD")
	return newExpr, oldExpr, nil
}

// qualifyColumns rewrites every bare reference to one of the columns in an SQL expression as
// alias."column". Literals, quoted identifiers, comments, qualified names (x.col), function
// names (col(...)) and type names after :: are left alone.
func qualifyColumns(expr string, columns map[string]bool, alias string) (string, error) {
	var out strings.Builder
	prev := "" // previous significant token
	i := 0
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == '-' && i+1 < len(expr) && expr[i+1] == '-':
			j := strings.IndexByte(expr[i:], '\n')
			if j < 0 {
				j = len(expr) - i
			}
			out.WriteString(expr[i : i+j])
			i += j
			continue
		case c == '/' && i+1 < len(expr) && expr[i+1] == '*':
			j := strings.Index(expr[i+2:], "*/")
			if j < 0 {
				return "", fmt.Errorf("unterminated comment")
			}
			out.WriteString(expr[i : i+2+j+2])
			i += 2 + j + 2
			continue
		case c == '\'':
			j, err := skipString(expr, i, false)
			if err != nil {
				return "", err
			}
			out.WriteString(expr[i:j])
			i, prev = j, "'"
			continue
		case (c == 'E' || c == 'e') && i+1 < len(expr) && expr[i+1] == '\'':
			j, err := skipString(expr, i+1, true)
			if err != nil {
				return "", err
			}
			out.WriteString(expr[i:j])
			i, prev = j, "'"
			continue
		case c == '$' && (i+1 < len(expr)) && (expr[i+1] == '$' || isIdentStart(rune(expr[i+1]))):
			if k := strings.IndexByte(expr[i+1:], '$'); k >= 0 {
				tag := expr[i : i+1+k+1]
				if isDollarTag(tag) {
					end := strings.Index(expr[i+len(tag):], tag)
					if end < 0 {
						return "", fmt.Errorf("unterminated dollar-quoted string")
					}
					j := i + len(tag) + end + len(tag)
					out.WriteString(expr[i:j])
					i, prev = j, "'"
					continue
				}
			}
		case c == '"':
			j := i + 1
			var name strings.Builder
			for {
				if j >= len(expr) {
					return "", fmt.Errorf("unterminated quoted identifier")
				}
				if expr[j] == '"' {
					if j+1 < len(expr) && expr[j+1] == '"' {
						name.WriteByte('"')
						j += 2
						continue
					}
					j++
					break
				}
				name.WriteByte(expr[j])
				j++
			}
			out.WriteString(rewriteIdent(expr, i, j, name.String(), prev, columns, alias))
			i, prev = j, "ident"
			continue
		case isIdentStart(rune(c)):
			j := i + 1
			for j < len(expr) && isIdentPart(rune(expr[j])) {
				j++
			}
			out.WriteString(rewriteIdent(expr, i, j, strings.ToLower(expr[i:j]), prev, columns, alias))
			i, prev = j, "ident"
			continue
		case c >= '0' && c <= '9':
			j := i + 1
			for j < len(expr) && (isIdentPart(rune(expr[j])) || expr[j] == '.') {
				j++
			}
			out.WriteString(expr[i:j])
			i, prev = j, "num"
			continue
		case c == ':' && i+1 < len(expr) && expr[i+1] == ':':
			out.WriteString("::")
			i, prev = i+2, "::"
			continue
		}
		out.WriteByte(c)
		if !unicode.IsSpace(rune(c)) {
			prev = string(c)
		}
		i++
	}
	return out.String(), nil
}

// rewriteIdent returns the identifier expr[i:j] (whose name is name), qualified with alias
// when it is a bare column reference.
func rewriteIdent(expr string, i, j int, name, prev string, columns map[string]bool, alias string) string {
	tok := expr[i:j]
	if !columns[name] || prev == "." || prev == "::" {
		return tok
	}
	k := j
	for k < len(expr) && unicode.IsSpace(rune(expr[k])) {
		k++
	}
	if k < len(expr) && (expr[k] == '(' || expr[k] == '.') {
		return tok
	}
	return alias + `."` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

func skipString(expr string, i int, backslash bool) (int, error) {
	j := i + 1
	for j < len(expr) {
		switch {
		case backslash && expr[j] == '\\':
			j += 2
			continue
		case expr[j] == '\'':
			if j+1 < len(expr) && expr[j+1] == '\'' {
				j += 2
				continue
			}
			return j + 1, nil
		}
		j++
	}
	return 0, fmt.Errorf("unterminated string literal")
}

func isDollarTag(tag string) bool {
	if len(tag) < 2 || tag[0] != '$' || tag[len(tag)-1] != '$' {
		return false
	}
	for i, r := range tag[1 : len(tag)-1] {
		if !(isIdentStart(r) || (i > 0 && r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}

func isIdentStart(r rune) bool { return r == '_' || unicode.IsLetter(r) || r >= 0x80 }
func isIdentPart(r rune) bool  { return isIdentStart(r) || (r >= '0' && r <= '9') || r == '$' }
