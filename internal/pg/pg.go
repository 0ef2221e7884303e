// Package pg opens connections to PostgreSQL servers of every version skiff supports (8.4 and
// up) with the session settings skiff relies on, and keeps passwords out of messages.
package pg

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sessionParams are sent in the startup packet, so they hold from the first statement on;
// all of them exist on PostgreSQL 8.4. standard_conforming_strings is off by default before 9.1
// and pgx refuses the simple protocol then; DateStyle makes dates' text form independent of
// the server's defaults. Settings that an older server would refuse at startup are applied
// after connecting (see SessionSQL).
var sessionParams = map[string]string{
	"standard_conforming_strings": "on",
	"DateStyle":                   "ISO, YMD",
	"client_min_messages":         "warning",
}

// ParseConfig parses a libpq connection string or URI (passwords may come from the URL,
// PGPASSWORD, a passfile or a service file) and adds skiff's session settings. Every
// connection made from the result, by pgx, pgxpool, database/sql or pgconn, gets them: the
// version-dependent ones through an AfterConnect hook.
func ParseConfig(connString, appName string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, parseError(connString, err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	// An application_name from the connection string or PGAPPNAME would go in the startup
	// packet, which a server before 9.0 refuses ("unrecognized configuration parameter"): it
	// is set after connecting instead, where the server has it. The user's own choice stands.
	if name, ok := cfg.RuntimeParams["application_name"]; ok {
		appName = name
		delete(cfg.RuntimeParams, "application_name")
	}
	userHook := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgconn.PgConn) error {
		if err := c.Exec(ctx, SessionSQL(ServerVersionOf(c), appName)).Close(); err != nil {
			return fmt.Errorf("session settings: %w", err)
		}
		if userHook != nil {
			return userHook(ctx, c)
		}
		return nil
	}
	return cfg, nil
}

// Connect opens one connection with skiff's session settings. appName is reported in
// pg_stat_activity (9.0+) unless the connection string sets one.
func Connect(ctx context.Context, connString, appName string) (*pgx.Conn, error) {
	cfg, err := ParseConfig(connString, appName)
	if err != nil {
		return nil, err
	}
	return ConnectConfig(ctx, cfg)
}

// ConnectConfig opens one connection from a configuration made by ParseConfig.
func ConnectConfig(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", Describe(cfg), err)
	}
	return conn, nil
}

// SessionSQL returns the SET statements that make values' text forms exact on a server of
// the given server_version_num, and name the session: IntervalStyle postgres (8.4+), the most
// float digits the server accepts (3 from 9.0 on, 2 before: 17 significant digits, exact for
// float8), and application_name where the server has it (9.0+).
//
// It also turns JIT compilation off (11+; on by default from 12). skiff's batch reads, applies
// and ticks are new SQL texts, planned once and run once: a plan whose estimated cost passes
// jit_above_cost (a batch read under enable_sort = off always does, a set-based update of a
// large run may) paid hundreds of milliseconds of LLVM compilation before its first row. A
// batch's first rows of a large transaction waited 0.45 s on that at the read's DECLARE
// alone (15, measured with log_min_duration_statement).
//
// And it turns row-level security off (9.5+), as pg_dump does: skiff reads and writes every
// row of a table, never the subset a policy would show its role. With row_security = off a
// query that a policy would filter fails instead ("query would be affected by row-level
// security policy for table ..."; see Hint), where it would otherwise copy, compare or update
// fewer rows than the table holds without a word, and run the policy's expressions, which the
// table's owner wrote, with skiff's rights. Roles that bypass row-level security (superusers,
// BYPASSRLS, a table's owner unless FORCE ROW LEVEL SECURITY) see no difference.
func SessionSQL(version int, appName string) string {
	digits := "3"
	if version > 0 && version < 90000 {
		digits = "2"
	}
	sql := "SET IntervalStyle = 'postgres'; SET extra_float_digits = " + digits
	if version >= 90500 {
		sql += "; SET row_security = off"
	}
	if version >= 110000 {
		sql += "; SET jit = off"
	}
	if appName != "" && version >= 90000 {
		sql += "; SET application_name = '" + strings.ReplaceAll(appName, "'", "''") + "'"
	}
	return sql
}

// Describe names a server for messages: user, host, port and database, never the password.
func Describe(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

var kvPasswordKey = regexp.MustCompile(`(?i)\bpassword\s*=\s*`)

// Redact returns the connection string with any password replaced by "xxxxx", for logs and
// error messages. A keyword/value password is read as libpq reads it (a quoted value runs to
// its closing quote, an unquoted one to the first whitespace not escaped by a backslash), and
// a value whose end cannot be found — an unterminated quote — is redacted to the end of the
// string, so that no part of a malformed password is ever shown.
func Redact(connString string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "(unparsable URL)"
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	var b strings.Builder
	rest := connString
	for {
		loc := kvPasswordKey.FindStringIndex(rest)
		if loc == nil {
			b.WriteString(rest)
			return b.String()
		}
		b.WriteString(rest[:loc[1]])
		b.WriteString("xxxxx")
		rest = rest[loc[1]+kvValueLen(rest[loc[1]:]):]
	}
}

// kvValueLen returns the length of the keyword/value value at the start of s, by libpq's rules;
// len(s) when a quoted value is not terminated.
func kvValueLen(s string) int {
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '\'':
				return i + 1
			}
		}
		return len(s)
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ' ', '\t', '\n', '\r', '\f', '\v':
			return i
		}
	}
	return len(s)
}

// parseError is the error of a connection string pgx could not parse. pgx's message quotes the
// string with a redaction of its own, and its reasons quote what they stumbled on, which in a
// malformed string may be a piece of a password: when the string holds a password, the
// message gives no reason at all, only the redacted string and a hint.
func parseError(connString string, err error) error {
	shown := Redact(connString)
	if !HasPassword(connString) {
		reason := err
		var pce *pgconn.ParseConfigError
		if errors.As(err, &pce) && pce.Unwrap() != nil {
			reason = pce.Unwrap()
		}
		return fmt.Errorf("parse connection string %s: %w", shown, reason)
	}
	if i := strings.Index(connString, "://"); i >= 0 {
		// A malformed URL's parts are not where they seem: a password may run into the host.
		shown = connString[:i+3] + "(not shown)"
	} else if loc := kvPasswordKey.FindStringIndex(shown); loc != nil {
		// Where the string is malformed, what follows a password may be more of it.
		shown = shown[:loc[1]] + "xxxxx"
	}
	return fmt.Errorf("parse connection string %s: malformed (the reason is not shown: the string holds a password); "+
		"quote keyword values with spaces in single quotes, percent-encode special characters in a URL, "+
		"or keep the password out of it (PGPASSWORD, a passfile, a service file)", shown)
}

// HasPassword tells whether a connection string, parsable or not, may hold a password.
func HasPassword(connString string) bool {
	if kvPasswordKey.MatchString(connString) {
		return true
	}
	if i := strings.Index(connString, "://"); i >= 0 {
		rest := connString[i+3:]
		if at := strings.LastIndexByte(rest, '@'); at >= 0 && strings.ContainsRune(rest[:at], ':') {
			return true
		}
	}
	return false
}

// ServerVersion returns server_version_num (e.g. 80400, 150004).
func ServerVersion(conn *pgx.Conn) int {
	return ServerVersionOf(conn.PgConn())
}

// ServerVersionOf returns server_version_num of a low-level connection, computed from the
// server_version parameter the server reports at startup.
func ServerVersionOf(c *pgconn.PgConn) int {
	return ParseServerVersion(c.ParameterStatus("server_version"))
}

// ParseServerVersion turns "8.4.22", "9.6.24", "15.4 (Debian ...)" or "18beta1" into the
// server_version_num form: 80422, 90624, 150004, 180000.
func ParseServerVersion(s string) int {
	nums := make([]int, 0, 3)
	n, in := 0, false
	for _, r := range s {
		if r >= '0' && r <= '9' {
			n = n*10 + int(r-'0')
			in = true
			continue
		}
		if in {
			nums = append(nums, n)
			n, in = 0, false
		}
		if r != '.' || len(nums) >= 3 {
			break
		}
	}
	if in && len(nums) < 3 {
		nums = append(nums, n)
	}
	switch {
	case len(nums) == 0:
		return 0
	case nums[0] >= 10:
		v := nums[0] * 10000
		if len(nums) > 1 {
			v += nums[1]
		}
		return v
	default:
		v := nums[0] * 10000
		if len(nums) > 1 {
			v += nums[1] * 100
		}
		if len(nums) > 2 {
			v += nums[2]
		}
		return v
	}
}

// Exec runs one statement through the extended query protocol, which refuses a string holding
// more than one statement ("cannot insert multiple commands into a prepared statement"). Every
// statement skiff builds from names or user text (DDL, --where checks) goes through it:
// pgx's Exec without arguments uses the simple protocol, where a stray ";" in that text would
// start a statement of its own.
func Exec(ctx context.Context, c *pgconn.PgConn, sql string) (pgconn.CommandTag, error) {
	res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	return res.CommandTag, res.Err
}

// rlsMessage is how PostgreSQL (9.5+) words the error of a query that row-level security
// would filter while row_security is off.
const rlsMessage = "would be affected by row-level security policy"

// Hint returns advice for an error from the server, for messages: what to do when a table's
// row-level security stopped skiff (SessionSQL turns row_security off), else the server's own
// HINT, else "". It looks at every server error the error wraps (a copy's error holds the
// provider's and the target's).
func Hint(err error) string {
	var hint string
	walkPgErrors(err, func(pgErr *pgconn.PgError) bool {
		if pgErr.Code == "42501" && strings.Contains(pgErr.Message, rlsMessage) {
			hint = "skiff copies, compares and applies every row, never the rows a policy shows its role: " +
				"let the role skiff connects as bypass row-level security (a superuser runs ALTER ROLE <role> BYPASSRLS), " +
				"or make it the table's owner (without FORCE ROW LEVEL SECURITY); see docs/roles.md"
			return false
		}
		if hint == "" {
			hint = pgErr.Hint
		}
		return true
	})
	return hint
}

// walkPgErrors calls fn with each server error in err's tree, depth first, until fn returns
// false.
func walkPgErrors(err error, fn func(*pgconn.PgError) bool) bool {
	if err == nil {
		return true
	}
	if pgErr, ok := err.(*pgconn.PgError); ok && !fn(pgErr) {
		return false
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walkPgErrors(u.Unwrap(), fn)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !walkPgErrors(e, fn) {
				return false
			}
		}
	}
	return true
}

// WithHint returns the logging arguments args followed by "hint" and Hint(err) when there
// is a hint.
func WithHint(err error, args ...any) []any {
	if h := Hint(err); h != "" {
		return append(args, "hint", h)
	}
	return args
}
