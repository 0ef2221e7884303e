package target

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	skiffsql "github.com/skiffdb/skiff/sql"
)

// targetTables lists the tables the target migrations create in schema skiff.
func targetTables(t *testing.T) []string {
	t.Helper()
	create := regexp.MustCompile(`(?i)\bCREATE\s+TABLE\s+skiff\.(\w+)`)
	var names []string
	err := fs.WalkDir(skiffsql.Target, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(skiffsql.Target, path)
		if err != nil {
			return err
		}
		for _, m := range create.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(names, m[1]) {
				names = append(names, m[1])
			}
		}
		return nil
	})
	require.NoError(t, err)
	slices.Sort(names)
	return names
}

// ownerFinding is a piece of Go code outside this package that names a target table as SQL.
type ownerFinding struct {
	pos  string
	text string
}

// sqlWord is a word that makes a string literal naming a target table SQL rather than prose
// (a help text or a message may name a table: "records it in skiff.dead_letter").
var sqlWord = regexp.MustCompile(`(?i)\b(select|insert|update|delete|truncate|copy|lock|from|join|into|alter|drop|create|grant|returning|where)\b`)

// lintOwner reports the string literals of f that read as SQL on a target table (a name
// among tables, as skiff.name or "skiff"."name", in a literal with an SQL word or alone), and
// composite literals such as pgx.Identifier{"skiff", "name"}. Struct tags (kong's help texts)
// are prose.
func lintOwner(fset *token.FileSet, f *ast.File, tables []string) []ownerFinding {
	qualified := regexp.MustCompile(`(?i)"?\bskiff"?\s*\.\s*"?(` + strings.Join(tables, "|") + `)\b`)
	tags := map[*ast.BasicLit]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if fl, ok := n.(*ast.Field); ok && fl.Tag != nil {
			tags[fl.Tag] = true
		}
		return true
	})
	var out []ownerFinding
	str := func(e ast.Expr) (string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			s, ok := str(n)
			if !ok || tags[n] || !qualified.MatchString(s) {
				return true
			}
			bare := strings.TrimSpace(qualified.ReplaceAllString(s, "")) == ""
			if bare || sqlWord.MatchString(s) {
				out = append(out, ownerFinding{fset.Position(n.Pos()).String(), s})
			}
		case *ast.CompositeLit:
			var schema, table bool
			for _, e := range n.Elts {
				s, ok := str(e)
				if !ok {
					continue
				}
				schema = schema || s == "skiff"
				table = table || slices.Contains(tables, s)
			}
			if schema && table {
				out = append(out, ownerFinding{fset.Position(n.Pos()).String(), "composite literal naming skiff and a target table"})
			}
		}
		return true
	})
	return out
}

// TestOneOwner fails when Go code outside internal/target (tests aside) holds SQL on a table
// of the target schema: this package is the one owner of that SQL.
func TestOneOwner(t *testing.T) {
	t.Parallel()
	tables := targetTables(t)
	for _, want := range []string{"subscription", "table_state", "copy_backlog", "batch_log", "dead_letter", "target"} {
		require.Contains(t, tables, want, "the target migrations create skiff.%s", want)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	self, err := filepath.Abs(".")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var bad []ownerFinding
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		bad = append(bad, lintOwner(fset, f, tables)...)
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, files, 50, "the walk found the repository's Go files")
	require.Empty(t, bad, "SQL on the target schema outside internal/target: add a function to internal/target and call it")
}

// TestOneOwnerCatches checks the lint on the forms SQL takes and the prose it must leave alone.
func TestOneOwnerCatches(t *testing.T) {
	t.Parallel()
	tables := []string{"subscription", "copy_backlog", "target"}
	for _, src := range []string{
		"func f() { q(`SELECT tick FROM skiff.subscription WHERE sub_id = $1`) }",
		"func f() { q(`delete from skiff.copy_backlog`) }",
		"func f() { q(`SELECT 1 FROM \"skiff\".\"subscription\"`) }",
		"func f() { q(`SELECT ` + col + ` FROM skiff.subscription s`) }",
		"func f() { q(\"SELECT \" + tbl); tbl := \"skiff.subscription\" }",
		"func f() { q(`INSERT INTO skiff.target VALUES (1)`) }",
		"func f() { c.CopyFrom(ctx, pgx.Identifier{\"skiff\", \"copy_backlog\"}, cols, rows) }",
	} {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, "x.go", "package x\n"+src, 0)
		require.NoError(t, err)
		require.NotEmpty(t, lintOwner(fset, f, tables), src)
	}
	for _, src := range []string{
		"// SELECT tick FROM skiff.subscription: prose in a comment\nfunc f() {}",
		"type C struct { Skip int `help:\"Set events aside into skiff.copy_backlog on the target.\"` }",
		"func f() { p(\"%d events set aside by an operator (skiff.subscription)\") }",
		"func f() { q(`SELECT max(version_id) FROM skiff.target_migrations`) }",
		"func f() { q(`SELECT 1 FROM skiff.queue`) }",
		"func f() { x := []string{\"skiff\", \"ticker\"} }",
	} {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, "x.go", "package x\n"+src, parser.ParseComments)
		require.NoError(t, err)
		require.Empty(t, lintOwner(fset, f, tables), src)
	}
}
