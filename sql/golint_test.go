package sql

import (
	"embed"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// notProviderSQL are the directories (relative to this package) whose SQL never runs on a
// provider or a target of a user: the test harness, the benchmark and its peers, the tests.
// Every other package's SQL may meet PostgreSQL 8.4 and is linted, new packages included.
var notProviderSQL = map[string]bool{
	".":                               true,
	"../scripts":                      true,
	"../tests":                        true,
	"../internal/pgtest":              true,
	"../internal/migrate/migratetest": true,
}

// goSQLPackages lists the directories holding Go code (not tests) outside notProviderSQL.
func goSQLPackages(t *testing.T) []string {
	var dirs []string
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if notProviderSQL[path] || strings.HasPrefix(d.Name(), ".") && path != ".." {
			return filepath.SkipDir
		}
		files, err := filepath.Glob(filepath.Join(path, "*.go"))
		if err != nil {
			return err
		}
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				dirs = append(dirs, path)
				break
			}
		}
		return nil
	})
	require.NoError(t, err)
	return dirs
}

// newer lists what SQL strings in Go code may use only behind a server_version_num branch,
// with the version that brought it. Each rule is narrow enough to fire on SQL, not on prose.
var newer = []struct {
	name string
	re   *regexp.Regexp
}{
	{"DO block (9.0)", regexp.MustCompile(`(?i)(^|;|\s)DO\s+(\$|'|LANGUAGE)`)},
	{"IF NOT EXISTS (9.1+)", regexp.MustCompile(`(?i)\bIF\s+NOT\s+EXISTS\b`)},
	{"ALTER TABLE / DROP COLUMN IF EXISTS (9.0/9.2)", regexp.MustCompile(`(?i)\b(ALTER\s+TABLE|DROP\s+COLUMN)\s+IF\s+EXISTS\b`)},
	{"format() (9.1)", regexp.MustCompile(`(?i)\bformat\s*\(`)},
	{"concat() (9.1)", regexp.MustCompile(`(?i)\bconcat(_ws)?\s*\(`)},
	{"left()/right() (9.1)", regexp.MustCompile(`(?i)\b(left|right)\s*\(`)},
	{"string_agg (9.0)", regexp.MustCompile(`(?i)\bstring_agg\b`)},
	{"ORDER BY in an aggregate (9.0)", regexp.MustCompile(`(?is)\b\w+_agg\s*\((?:[^()]|\([^()]*\))*\bORDER\s+BY\b`)},
	{"LATERAL (9.3)", regexp.MustCompile(`(?i)\bLATERAL\b`)},
	{"FILTER (WHERE) (9.4)", regexp.MustCompile(`(?i)\bFILTER\s*\(\s*WHERE\b`)},
	{"unnest of several arrays (9.4)", regexp.MustCompile(`(?i)\bunnest\s*\([^()]*,`)},
	{"writable CTE (9.1)", regexp.MustCompile(`(?is)\bWITH\s+(RECURSIVE\s+)?\w+(\s*\([^()]*\))?\s+AS\s*\(\s*(INSERT|UPDATE|DELETE)\b`)},
	{"json (9.2)", regexp.MustCompile(`(?i)::\s*jsonb?\b|\bjsonb?_\w+\s*\(|\w_to_jsonb?\s*\(|\bjsonb?\s*(->|#>|@>|<@|\?)|\s(json|jsonb)\s*(,|\)|NOT\b|NULL\b|DEFAULT\b|\[)`)},
	{"ON CONFLICT (9.5)", regexp.MustCompile(`(?i)\bON\s+CONFLICT\b`)},
	{"SKIP LOCKED (9.5)", regexp.MustCompile(`(?i)\bSKIP\s+LOCKED\b`)},
	{"FOR KEY SHARE / NO KEY UPDATE (9.3)", regexp.MustCompile(`(?i)\bFOR\s+(NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b`)},
	{"MERGE (15)", regexp.MustCompile(`(?i)\bMERGE\s+INTO\b`)},
	{"identity column (10)", regexp.MustCompile(`(?i)\bAS\s+IDENTITY\b|\battidentity\b`)},
	{"generated column (12)", regexp.MustCompile(`(?i)\battgenerated\b|\bGENERATED\s+ALWAYS\s+AS\s*\(`)},
	{"CREATE OR REPLACE TRIGGER (14)", regexp.MustCompile(`(?i)\bCREATE\s+OR\s+REPLACE\s+TRIGGER\b`)},
	{"to_reg*() (9.4)", regexp.MustCompile(`(?i)\bto_reg(class|type|proc|procedure|oper|operator|namespace|role)\s*\(`)},
	{"regnamespace/regrole (9.5)", regexp.MustCompile(`(?i)\b(regnamespace|regrole)\b`)},
	{"pg_sequences / pg_sequence_last_value (10)", regexp.MustCompile(`(?i)\bpg_sequences\b|\bpg_sequence_last_value\b`)},
	{"partitioning catalog (10)", regexp.MustCompile(`(?i)\brelispartition\b|\bpg_partitioned_table\b|\bpg_partition_\w+\s*\(`)},
	{"indnkeyatts (11)", regexp.MustCompile(`(?i)\bindnkeyatts\b`)},
	{"collations (9.1)", regexp.MustCompile(`(?i)\battcollation\b|\bCOLLATE\b|\bpg_collation\b`)},
	{"pg_range (9.2)", regexp.MustCompile(`(?i)\bpg_range\b`)},
	{"array_position / cardinality (9.5/9.4)", regexp.MustCompile(`(?i)\barray_positions?\s*\(|\bcardinality\s*\(`)},
	{"pg_table_size / pg_indexes_size (9.0)", regexp.MustCompile(`(?i)\bpg_(table|indexes)_size\b`)},
	{"WAL function names (10)", regexp.MustCompile(`(?i)\bpg_\w*wal_lsn\w*|\bpg_current_wal\w*|\bpg_walfile_name\b`)},
	{"xid8 / txid_current_if_assigned (10/13)", regexp.MustCompile(`(?i)\btxid_current_if_assigned\b|\bpg_current_xact_id\w*|\bpg_current_snapshot\b|\bpg_snapshot_\w+`)},
	{"NOTIFY payload / pg_notify (9.0)", regexp.MustCompile(`(?i)\bpg_notify\s*\(|\bNOTIFY\s+\w+\s*,`)},
	{"exported snapshots (9.2)", regexp.MustCompile(`(?i)\bpg_export_snapshot\b|\bSET\s+TRANSACTION\s+SNAPSHOT\b`)},
	{"pg_advisory_xact_lock (9.1)", regexp.MustCompile(`(?i)\bpg_(try_)?advisory_xact_lock(_shared)?\b`)},
	{"has_parameter_privilege (15)", regexp.MustCompile(`(?i)\bhas_parameter_privilege\b`)},
	{"replication views (9.1/9.4)", regexp.MustCompile(`(?i)\bpg_stat_replication\b|\bpg_replication_slots\b|\bpg_stat_wal_receiver\b`)},
	{"application_name (9.0)", regexp.MustCompile(`(?i)\bapplication_name\b`)},
	{"pg_trigger.tgisinternal (9.0)", regexp.MustCompile(`(?i)\btgisinternal\b`)},
	{"pg_stat_activity backend_xid/backend_xmin (9.4)", regexp.MustCompile(`(?i)\bbackend_xmin\b|\bbackend_xid\b`)},
	{"pg_stat_activity.state (9.2)", regexp.MustCompile(`(?i)\bcoalesce\s*\(\s*state\b|\b\w+\.state_change\b|\bwait_event\b`)},
	{"pg_blocking_pids / pg_is_in_recovery (9.6/9.0)", regexp.MustCompile(`(?i)\bpg_blocking_pids\b|\bpg_is_in_recovery\b`)},
	{"procpid/current_query (before 9.2 only)", regexp.MustCompile(`(?i)\bprocpid\b|\bcurrent_query\b`)},
	{"xlog function names (before 10 only)", regexp.MustCompile(`(?i)\bpg_\w*xlog\w*\s*\(`)},
	{"REPEATABLE READ is snapshot isolation only from 9.1", regexp.MustCompile(`(?i)\bREPEATABLE\s+READ\b`)},
	{"COPY option list (9.0) / FREEZE (9.3)", regexp.MustCompile(`(?i)\bCOPY\b[^;]*\(\s*FORMAT\b|\bCOPY\b[^;]*\bFREEZE\b`)},
	{"UNLOGGED / materialized views / event triggers (9.1/9.3)", regexp.MustCompile(`(?i)\bCREATE\s+(UNLOGGED|MATERIALIZED|EVENT\s+TRIGGER)\b`)},
	{"TABLESAMPLE / GROUPING SETS (9.5)", regexp.MustCompile(`(?i)\bTABLESAMPLE\b|\bGROUPING\s+SETS\b`)},
	{"lock_timeout (9.3)", regexp.MustCompile(`(?i)\block_timeout\b`)},
	{"gen_random_uuid / starts_with (13/11)", regexp.MustCompile(`(?i)\bgen_random_uuid\s*\(|\bstarts_with\s*\(`)},
}

// goSQLAllowed names rules a file may break with a reason the lint cannot see: the version
// branch is in the caller. Key: file relative to this package (the whole file), or file:function
// (that function only), then rule name.
var goSQLAllowed = map[string]map[string]string{
	"../consumer/source/logical/slot.go": {
		"exported snapshots (9.2)":    "the logical source runs only on 9.4+: queue.AddTable refuses a logical queue before 9.4",
		"replication views (9.1/9.4)": "the logical source runs only on 9.4+: queue.AddTable refuses a logical queue before 9.4",
	},
	"../consumer/source/logical/source.go:awaitStopped": {
		"replication views (9.1/9.4)": "the logical source runs only on 9.4+: queue.AddTable refuses a logical queue before 9.4",
	},
	"../queue/capture.go:foreignTriggerCheck": {
		"pg_trigger.tgisinternal (9.0)": "the check of statement-level INSERT captures, which exist from 10 only: its one caller is under t.version >= 100000",
	},
}

// bareWord matches a literal that is one word: a map key, a log attribute, a format name.
var bareWord = regexp.MustCompile(`^\w+$`)

// versionCmp matches the text of a comparison operand that holds a server_version_num.
var versionCmp = regexp.MustCompile(`(?i)version|^v$`)

// sqlFinding is one string literal using something a rule names, outside a version branch.
type sqlFinding struct {
	pos  token.Position
	fn   string // the function holding it, "" at package level
	rule string
	text string
}

// lintGoSQL reports the string literals of a Go file that use what PostgreSQL 8.4 lacks and
// are not guarded by a server_version_num comparison. A literal is guarded when it sits in an
// if (body or else) or switch whose condition or cases compare a version with a number like
// 90200, or when it is the first value of a variable that such a branch assigns again (the
// `col := "new"; if version < 90200 { col = "old" }` pattern). Struct tags, map keys and
// import paths are not SQL and are skipped.
func lintGoSQL(fset *token.FileSet, f *ast.File) []sqlFinding {
	var out []sqlFinding
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if ok && fd.Body != nil {
			for _, fi := range lintFunc(fset, fd.Body) {
				fi.fn = fd.Name.Name
				out = append(out, fi)
			}
			continue
		}
		// Package-level values: nothing guards them.
		if gd, ok := d.(*ast.GenDecl); ok && gd.Tok != token.IMPORT {
			out = append(out, lintNode(fset, gd, nil, nil)...)
		}
	}
	return out
}

func lintFunc(fset *token.FileSet, body *ast.BlockStmt) []sqlFinding {
	// Variables assigned inside a version branch.
	reassigned := map[string]bool{}
	guarded := map[ast.Node]bool{}
	ast.Inspect(body, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.IfStmt:
			if isVersionCond(fset, s.Cond) {
				guarded[s.Body] = true
				if s.Else != nil {
					guarded[s.Else] = true
				}
			}
		case *ast.SwitchStmt:
			versioned := s.Tag != nil && isVersionCond(fset, s.Tag)
			for _, c := range s.Body.List {
				for _, e := range c.(*ast.CaseClause).List {
					versioned = versioned || isVersionCond(fset, e)
				}
			}
			if versioned {
				guarded[s.Body] = true
			}
		}
		return true
	})
	for g := range guarded {
		ast.Inspect(g, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok {
				for _, l := range as.Lhs {
					if id, ok := l.(*ast.Ident); ok {
						reassigned[id.Name] = true
					}
				}
			}
			return true
		})
	}
	return lintNode(fset, body, guarded, reassigned)
}

// lintNode checks the literals under root, skipping the subtrees in guarded and the first
// values of the variables in reassigned.
func lintNode(fset *token.FileSet, root ast.Node, guarded map[ast.Node]bool, reassigned map[string]bool) []sqlFinding {
	var out []sqlFinding
	skip := map[ast.Node]bool{}
	ast.Inspect(root, func(n ast.Node) bool {
		if n == nil {
			return false
		}
		if guarded[n] || skip[n] {
			return false
		}
		switch s := n.(type) {
		case *ast.Field:
			if s.Tag != nil {
				skip[s.Tag] = true
			}
		case *ast.IndexExpr:
			skip[s.Index] = true
		case *ast.KeyValueExpr:
			skip[s.Key] = true
		case *ast.AssignStmt:
			for i, l := range s.Lhs {
				if id, ok := l.(*ast.Ident); ok && reassigned[id.Name] && i < len(s.Rhs) {
					skip[s.Rhs[i]] = true
				}
			}
		case *ast.BasicLit:
			if s.Kind != token.STRING {
				return false
			}
			text, err := strconv.Unquote(s.Value)
			if err != nil || bareWord.MatchString(text) {
				return false // a lone word is a key, a name or a setting, not a statement
			}
			for _, r := range newer {
				if r.re.MatchString(text) {
					out = append(out, sqlFinding{pos: fset.Position(s.Pos()), rule: r.name, text: text})
				}
			}
		}
		return true
	})
	return out
}

// isVersionCond reports whether an expression compares a server_version_num with a number
// such as 90200 (8.0 to 99.x in server_version_num form).
func isVersionCond(fset *token.FileSet, e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		b, ok := n.(*ast.BinaryExpr)
		if !ok {
			return true
		}
		switch b.Op {
		case token.LSS, token.LEQ, token.GTR, token.GEQ, token.EQL, token.NEQ:
		default:
			return true
		}
		for _, pair := range [][2]ast.Expr{{b.X, b.Y}, {b.Y, b.X}} {
			lit, ok := pair[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.INT {
				continue
			}
			v, err := strconv.Atoi(lit.Value)
			if err != nil || v < 80000 || v > 999999 {
				continue
			}
			var b strings.Builder
			ast.Inspect(pair[1], func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.Ident:
					if versionCmp.MatchString(x.Name) {
						b.WriteString("v")
					}
				}
				return true
			})
			if b.Len() > 0 {
				found = true
			}
		}
		return true
	})
	return found
}

func TestGoSQLIs84Safe(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	var bad []string
	checked := 0
	dirs := goSQLPackages(t)
	require.Contains(t, dirs, "../queue")
	require.Contains(t, dirs, "../cmd/skiff/skiffcli")
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		require.NotEmpty(t, files, dir)
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			checked++
			for _, fd := range lintGoSQL(fset, f) {
				if _, ok := goSQLAllowed[filepath.ToSlash(path)][fd.rule]; ok {
					continue
				}
				if _, ok := goSQLAllowed[filepath.ToSlash(path)+":"+fd.fn][fd.rule]; ok && fd.fn != "" {
					continue
				}
				bad = append(bad, fd.pos.String()+": "+fd.rule+": "+strings.Join(strings.Fields(fd.text), " "))
			}
		}
	}
	require.Greater(t, checked, 20)
	require.Empty(t, bad, "SQL that PostgreSQL 8.4 lacks, outside a server_version_num branch: branch on pg.ServerVersion, or list the file in goSQLAllowed with the reason")
}

// TestGoSQLAllowedStillNeeded keeps the allow list honest: each entry must still match.
func TestGoSQLAllowedStillNeeded(t *testing.T) {
	t.Parallel()
	for key, rules := range goSQLAllowed {
		path, fn, _ := strings.Cut(key, ":")
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		found := map[string]bool{}
		for _, fd := range lintGoSQL(fset, f) {
			if fn == "" || fd.fn == fn {
				found[fd.rule] = true
			}
		}
		for rule := range rules {
			require.True(t, found[rule], "%s no longer needs the exception for %q", key, rule)
		}
	}
}

// TestGoSQLLintCatches makes sure the Go lint fires on unguarded SQL and stays quiet on the
// branch patterns skiff uses, so that it can neither pass vacuously nor cry wolf.
func TestGoSQLLintCatches(t *testing.T) {
	t.Parallel()
	lint := func(src string) []string {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, "x.go", "package x\n"+src, 0)
		require.NoError(t, err)
		var rules []string
		for _, fd := range lintGoSQL(fset, f) {
			rules = append(rules, fd.rule)
		}
		return rules
	}
	bad := map[string]string{
		"LATERAL (9.3)":                                       "func f() { q(`SELECT * FROM a, LATERAL (SELECT 1) b`) }",
		"application_name (9.0)":                              "func f() { q(`SELECT application_name FROM pg_catalog.pg_stat_activity`) }",
		"pg_trigger.tgisinternal (9.0)":                       "func f() { q(`SELECT tgname FROM pg_catalog.pg_trigger WHERE NOT tgisinternal`) }",
		"unnest of several arrays (9.4)":                      "func f() { q(`SELECT * FROM unnest($1::int[], $2::text[])`) }",
		"writable CTE (9.1)":                                  "func f() { q(`WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d`) }",
		"ORDER BY in an aggregate (9.0)":                      "func f() { q(`SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM a`) }",
		"FILTER (WHERE) (9.4)":                                "func f() { q(`SELECT count(*) FILTER (WHERE x) FROM t`) }",
		"format() (9.1)":                                      "var s = `SELECT format('%I', $1)`",
		"json (9.2)":                                          "func f() { q(`SELECT row_to_json(t) FROM t`); q(`SELECT $1::jsonb`) }",
		"pg_advisory_xact_lock (9.1)":                         "func f(v int) { if v > 0 { q(`SELECT pg_advisory_xact_lock(1)`) } }",
		"REPEATABLE READ is snapshot isolation only from 9.1": "func f() { q(`BEGIN ISOLATION LEVEL REPEATABLE READ`) }",
		"COPY option list (9.0) / FREEZE (9.3)":               "func f() { q(`COPY t TO STDOUT (FORMAT binary)`) }",
		"procpid/current_query (before 9.2 only)":             "func f() { q(`SELECT procpid, current_query FROM pg_stat_activity`) }",
		"xlog function names (before 10 only)":                "func f() { q(`SELECT pg_current_xlog_location()`) }",
		"generated column (12)":                               "func f(skip bool) { if skip { q(` AND a.attgenerated = ''`) } }",
	}
	for rule, src := range bad {
		require.Contains(t, lint(src), rule, src)
	}
	good := []string{
		// the branch itself
		"func f(version int) { if version >= 90400 { q(`SELECT backend_xmin FROM pg_stat_activity`) } }",
		"func f(a *A) { if a.version < 90000 { q(`SELECT 1`) } else { q(`SELECT application_name FROM pg_stat_activity`) } }",
		"func f(v int) { switch { case v >= 90400: q(`SELECT backend_xid`); default: q(`SELECT procpid`) } }",
		// the newer form first, replaced on older servers
		"func f(a *A) { col := `a.attgenerated <> ''`; if a.version < 120000 { col = `false` }; q(`SELECT ` + col) }",
		"func f(c *C) { iso := `REPEATABLE READ`; if pg.ServerVersion(c) < 90100 { iso = `SERIALIZABLE` }; q(iso) }",
		// not SQL
		"type T struct { A string `json:\"a\"` }",
		"func f(m map[string]string) { _ = m[`application_name`]; delete(m, `application_name`) }",
		"func f() { format := `json`; _ = format }",
		"var m = map[string]string{`application_name`: `x`}",
		// what 8.4 has
		"func f() { q(`SELECT array_agg(x) FROM (SELECT x FROM t ORDER BY x) s`) }",
		"func f() { q(`SELECT unnest($1::text[]) AS k0, unnest($2::text[]) AS k1`) }",
		"func f() { q(`SELECT a FROM t LEFT JOIN u ON u.id = t.id`) }",
		"func f() { q(`SELECT pg_catalog.format_type(a.atttypid, -1) FROM a`) }",
		"func f() { q(`DROP TRIGGER IF EXISTS x ON t`) }",
		"func f() { q(`COPY t (a, b) FROM STDIN`) }",
	}
	for _, src := range good {
		require.Empty(t, lint(src), src)
	}
}

// TestMigrationsHaveNothingNewer applies the Go lint's rules to the provider and target
// migrations too (a target may be as old as its provider): they have no version branches,
// except the few listed in branched, each a newer statement run through EXECUTE behind a
// server_version_num test (older servers never parse it; the 8.4 install test proves the file
// installs there).
func TestMigrationsHaveNothingNewer(t *testing.T) {
	t.Parallel()
	branched := map[string]string{
		// skiff.ticker(): FOR UPDATE SKIP LOCKED from 9.5, NOWAIT in an exception block before.
		"provider/00013_ticker_skip_locked.sql": "SKIP LOCKED (9.5)",
		"provider/00014_ticker_lock_txid.sql":   "SKIP LOCKED (9.5)",
	}
	for _, m := range []struct {
		fsys embed.FS
		glob string
	}{{Provider, "provider/*.sql"}, {Target, "target/*.sql"}} {
		files, err := fs.Glob(m.fsys, m.glob)
		require.NoError(t, err)
		require.NotEmpty(t, files)
		for _, f := range files {
			b, err := fs.ReadFile(m.fsys, f)
			require.NoError(t, err)
			code := stripComments(string(b))
			for _, r := range newer {
				if branched[f] == r.name {
					require.Contains(t, code, "server_version_num", "%s: %s without a version branch", f, r.name)
					continue
				}
				require.False(t, r.re.MatchString(code), "%s uses %s", f, r.name)
			}
		}
	}
}
