package sql

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// forbidden lists constructs PostgreSQL 8.4 lacks, which a provider migration must not use.
var forbidden = []struct {
	name string
	re   *regexp.Regexp
}{
	{"DO block", regexp.MustCompile(`(?i)(^|;|\s)DO\s+(\$|'|LANGUAGE)`)},
	{"IF NOT EXISTS", regexp.MustCompile(`(?i)\bIF\s+NOT\s+EXISTS\b`)},
	{"format()", regexp.MustCompile(`(?i)\bformat\s*\(`)},
	{"string_agg", regexp.MustCompile(`(?i)\bstring_agg\b`)},
	{"json", regexp.MustCompile(`(?i)json`)},
	{"ON CONFLICT", regexp.MustCompile(`(?i)\bON\s+CONFLICT\b`)},
	{"identity column", regexp.MustCompile(`(?i)\bGENERATED\b[\s\S]*?\bAS\s+IDENTITY\b`)},
	{"pg_advisory_xact_lock", regexp.MustCompile(`(?i)pg_advisory_xact_lock`)},
	{"trigger WHEN", regexp.MustCompile(`(?i)\bCREATE\s+(CONSTRAINT\s+)?TRIGGER\b[^;]*?\bWHEN\b`)},
}

// stripComments removes -- comments so that prose may name what code must not use.
func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestProviderMigrationsAre84Safe(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(Provider, "provider/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := fs.ReadFile(Provider, f)
		require.NoError(t, err)
		require.Empty(t, lint(string(b)), "%s uses constructs PostgreSQL 8.4 lacks", f)
	}
}

// TestLintCatchesForbidden makes sure each rule fires, so the lint cannot pass vacuously.
func TestLintCatchesForbidden(t *testing.T) {
	t.Parallel()
	bad := map[string]string{
		"DO block":              "DO $$ BEGIN END $$;",
		"IF NOT EXISTS":         "CREATE TABLE IF NOT EXISTS x (a int);",
		"format()":              "SELECT format('%I', 'x');",
		"string_agg":            "SELECT string_agg(a, ',') FROM x;",
		"json":                  "SELECT row_to_json(x) FROM x;",
		"ON CONFLICT":           "INSERT INTO x VALUES (1) ON CONFLICT DO NOTHING;",
		"identity column":       "CREATE TABLE x (a int GENERATED ALWAYS AS IDENTITY);",
		"pg_advisory_xact_lock": "SELECT pg_advisory_xact_lock(1);",
		"trigger WHEN":          "CREATE TRIGGER t AFTER UPDATE ON x FOR EACH ROW WHEN (OLD.a <> NEW.a) EXECUTE PROCEDURE f();",
	}
	for name, sql := range bad {
		require.Contains(t, lint(sql), name, sql)
	}
	require.Empty(t, lint("-- a comment may say DO $$ or format(\nSELECT 1;"))
	require.Empty(t, lint("CREATE TRIGGER t AFTER UPDATE ON x FOR EACH ROW EXECUTE PROCEDURE f();\nSELECT CASE WHEN true THEN 1 END;"))
}

func lint(sql string) []string {
	code := stripComments(sql)
	var found []string
	for _, f := range forbidden {
		if f.re.MatchString(code) {
			found = append(found, f.name)
		}
	}
	return found
}
