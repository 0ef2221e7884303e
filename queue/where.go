package queue

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/pg"
)

// compileWhere turns a --where filter written over the table's columns into the two PL/pgSQL
// expressions the capture function tests, one over NEW and one over OLD: each bare column
// name becomes NEW."col" / OLD."col". A filter is checked against the table as written and
// as rewritten, so that a mistake is reported at `table add`, never by a failing write.
//
// The filter runs inside the SECURITY DEFINER capture function, with skiff's owner's rights,
// on every write: it is also checked to be one expression (balanced parentheses, no ";"), and,
// resolved as the function resolves it (search_path pg_catalog, pg_temp), to call no volatile
// function and nothing — function, operator, relation — that a role other than a superuser or
// the role running table add owns, since such a role could change what it does (checkWhereDeps).
func compileWhere(ctx context.Context, tx pgx.Tx, rel relation, cols []catalog.Column, where string) (string, string, error) {
	names := make(map[string]bool, len(cols))
	for _, c := range cols {
		names[c.Name] = true
	}
	probe, err := qualifyColumns(where, names, "skiff_row")
	if err != nil {
		return "", "", fmt.Errorf("table %s: --where %q: %w", rel.table(), where, err)
	}
	if err := inSavepoint(ctx, tx, func(sp pgx.Tx) error {
		_, err := pg.Exec(ctx, sp.Conn().PgConn(), "EXPLAIN SELECT 1 FROM "+rel.table().String()+" WHERE (\n"+where+"\n)")
		return err
	}); err != nil {
		return "", "", fmt.Errorf("table %s: invalid --where %q: %w", rel.table(), where, err)
	}
	if err := inSavepoint(ctx, tx, func(sp pgx.Tx) error {
		return checkWhereDeps(ctx, sp, rel, probe)
	}); err != nil {
		return "", "", fmt.Errorf("table %s: --where %q cannot be used in a trigger: %w", rel.table(), where, err)
	}
	newExpr, _ := qualifyColumns(where, names, "NEW")
	oldExpr, _ := qualifyColumns(where, names, "OLD")
	return newExpr, oldExpr, nil
}

// inSavepoint runs f in a savepoint that is always rolled back, so that what f creates is gone
// and an error of f does not abort the caller's transaction.
func inSavepoint(ctx context.Context, tx pgx.Tx, f func(sp pgx.Tx) error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	err = f(sp)
	if rbErr := sp.Rollback(ctx); err == nil && rbErr != nil {
		return rbErr
	}
	return err
}

// funcIDs finds the functions a stored expression tree calls: FuncExpr's funcid, and the
// opfuncid of operator nodes (OpExpr, DistinctExpr, NullIfExpr, ScalarArrayOpExpr).
var funcIDs = regexp.MustCompile(`:(?:funcid|opfuncid) (\d+)`)

// whereProbeView is the temporary view checkWhereDeps reads a filter's dependencies from.
const whereProbeView = "skiff_where_probe"

// checkWhereDeps resolves the filter (already rewritten over the alias skiff_row) as the
// capture function will, with search_path pg_catalog, pg_temp, in a temporary view, and reads
// what it refers to from pg_depend. It refuses volatile functions (a filter must give the
// capture, the copy and compare the same answer) and every function, operator or relation not
// owned by a superuser or by the current role: their owner could replace or redefine them, and
// the capture function would run the new code with its owner's rights. Unqualified names that
// are not in pg_catalog do not resolve at all here, as in the function. It runs in a savepoint
// the caller rolls back.
func checkWhereDeps(ctx context.Context, tx pgx.Tx, rel relation, probe string) error {
	c := tx.Conn().PgConn()
	if _, err := pg.Exec(ctx, c, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
		return err
	}
	if _, err := pg.Exec(ctx, c, "CREATE TEMPORARY VIEW "+whereProbeView+" AS SELECT 1 AS x FROM "+
		rel.table().String()+" AS skiff_row WHERE (\n"+probe+"\n)"); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `
		WITH deps AS (
		    SELECT d.refclassid, d.refobjid FROM pg_catalog.pg_depend d
		     WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
		       AND d.objid IN (SELECT r.oid FROM pg_catalog.pg_rewrite r
		                        WHERE r.ev_class = 'pg_temp.`+whereProbeView+`'::pg_catalog.regclass)
		       AND NOT (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = $1)),
		funcs AS (
		    SELECT refobjid AS oid FROM deps WHERE refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
		    UNION
		    SELECT o.oprcode::oid FROM deps JOIN pg_catalog.pg_operator o ON o.oid = deps.refobjid
		     WHERE deps.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass)
		SELECT 'function ' || p.oid::pg_catalog.regprocedure::text, p.provolatile = 'v', a.rolname,
		       a.rolsuper OR a.rolname = current_user
		  FROM funcs JOIN pg_catalog.pg_proc p ON p.oid = funcs.oid JOIN pg_catalog.pg_roles a ON a.oid = p.proowner
		UNION ALL
		SELECT 'operator ' || o.oid::pg_catalog.regoperator::text, false, a.rolname, a.rolsuper OR a.rolname = current_user
		  FROM deps JOIN pg_catalog.pg_operator o ON o.oid = deps.refobjid JOIN pg_catalog.pg_roles a ON a.oid = o.oprowner
		 WHERE deps.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
		UNION ALL
		SELECT 'relation ' || c.oid::pg_catalog.regclass::text, false, a.rolname, a.rolsuper OR a.rolname = current_user
		  FROM deps JOIN pg_catalog.pg_class c ON c.oid = deps.refobjid JOIN pg_catalog.pg_roles a ON a.oid = c.relowner
		 WHERE deps.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
		 ORDER BY 1`, rel.oid)
	if err != nil {
		return err
	}
	type dep struct {
		what, owner       string
		volatile, trusted bool
	}
	deps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dep, error) {
		var d dep
		err := r.Scan(&d.what, &d.volatile, &d.owner, &d.trusted)
		return d, err
	})
	if err != nil {
		return fmt.Errorf("read the filter's dependencies: %w", err)
	}
	// pg_depend leaves out the objects of the server itself (random() among them): the
	// volatility of every function the filter calls is read from the stored rule's tree.
	var tree string
	if err := tx.QueryRow(ctx, `SELECT ev_action::text FROM pg_catalog.pg_rewrite
		WHERE ev_class = 'pg_temp.`+whereProbeView+`'::pg_catalog.regclass`).Scan(&tree); err != nil {
		return fmt.Errorf("read the filter's plan tree: %w", err)
	}
	if strings.Contains(tree, "{SUBLINK ") {
		return fmt.Errorf("a filter is a condition over the row's own columns: subqueries are not allowed " +
			"(they would read other rows with skiff's rights on every write, and the copy would see other rows than the capture did)")
	}
	var called []uint32
	for _, m := range funcIDs.FindAllStringSubmatch(tree, -1) {
		if n, err := strconv.ParseUint(m[1], 10, 32); err == nil && n != 0 {
			called = append(called, uint32(n))
		}
	}
	if len(called) > 0 {
		var volatile []string
		rows, err := tx.Query(ctx, `SELECT 'function ' || oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc
			WHERE oid = ANY ($1) AND provolatile = 'v' ORDER BY 1`, called)
		if err == nil {
			volatile, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return fmt.Errorf("read the filter's functions: %w", err)
		}
		for _, f := range volatile {
			deps = append(deps, dep{what: f, volatile: true})
		}
	}
	for _, d := range deps {
		if d.volatile {
			return fmt.Errorf("%s is volatile: a filter must give the capture, the initial copy and compare the same answer for a row", d.what)
		}
		if !d.trusted {
			return fmt.Errorf("%s is owned by role %q, not by a superuser or by you: "+
				"its owner could change it, and the capture trigger runs the filter with skiff's rights", d.what, d.owner)
		}
	}
	return nil
}

// qualifyColumns rewrites every bare reference to one of the columns in an SQL expression as
// alias."column". Literals, quoted identifiers, comments, qualified names (x.col), function
// names (col(...)) and type names after :: are left alone. It refuses what would let the text
// reach beyond one expression where it is placed: unbalanced parentheses and ";" outside
// literals, quoted identifiers and comments.
func qualifyColumns(expr string, columns map[string]bool, alias string) (string, error) {
	var out strings.Builder
	prev := "" // previous significant token
	i, depth := 0, 0
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
		switch c {
		case '(':
			depth++
		case ')':
			if depth--; depth < 0 {
				return "", fmt.Errorf("unbalanced parentheses: a filter is one expression")
			}
		case ';':
			return "", fmt.Errorf(`a filter is one expression: ";" is not allowed outside literals`)
		}
		out.WriteByte(c)
		if !unicode.IsSpace(rune(c)) {
			prev = string(c)
		}
		i++
	}
	if depth != 0 {
		return "", fmt.Errorf("unbalanced parentheses: a filter is one expression")
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
