package sql

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// literalSQL tells whether an expression is SQL text fixed at compile time: a string literal
// or a concatenation of them.
func literalSQL(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.BasicLit:
		return x.Kind == token.STRING
	case *ast.BinaryExpr:
		return x.Op == token.ADD && literalSQL(x.X) && literalSQL(x.Y)
	case *ast.ParenExpr:
		return literalSQL(x.X)
	}
	return false
}

// TestGeneratedSQLIsOneStatement: SQL built at run time (from names, a --where, settings) is
// never handed to an Exec without arguments: pgx runs such a call with the simple protocol,
// where a ";" that slipped into a name or a filter would start a statement of its own. It goes
// through pg.Exec (extended protocol: one statement per call), or through Exec with arguments.
func TestGeneratedSQLIsOneStatement(t *testing.T) {
	t.Parallel()
	var found []string
	fset := token.NewFileSet()
	for _, dir := range goSQLPackages(t) {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			require.NoError(t, err)
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) != 2 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "Exec" {
					return true
				}
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "pg" {
					return true // pg.Exec(ctx, conn, sql) has three arguments anyway
				}
				pos := fset.Position(call.Pos())
				if filepath.Base(pos.Filename) == "pg.go" && strings.HasSuffix(filepath.Dir(pos.Filename), "internal/pg") {
					// pg.SessionSQL: skiff's own SET statements after connecting, the
					// application name quoted as a literal; several on purpose (one round trip).
					return true
				}
				if !literalSQL(call.Args[1]) {
					found = append(found, pos.String())
				}
				return true
			})
		}
	}
	require.Empty(t, found, "Exec of run-time SQL without arguments (use pg.Exec)")
}
