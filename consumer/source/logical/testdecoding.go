package logical

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/skiffdb/skiff/consumer/change"
)

// tdKind is what a line of test_decoding's output is.
type tdKind int

const (
	tdOther    tdKind = iota // a line skiff does not use (a logical message)
	tdBegin                  // BEGIN [xid]
	tdCommit                 // COMMIT [xid] [(at timestamp)]
	tdChange                 // table T: INSERT|UPDATE|DELETE: ...
	tdTruncate               // table T1, T2: TRUNCATE: flags (11+)
)

// tdField is one column of a tuple as test_decoding prints it: name[type]:value.
type tdField struct {
	Name, Type string
	Value      change.Value
	// Toast: the value is an unchanged TOASTed datum ("unchanged-toast-datum"): not in the
	// record, the row keeps the value it has.
	Toast bool
}

// tdLine is a parsed line of test_decoding's output.
type tdLine struct {
	Kind       tdKind
	Xid        uint32 // BEGIN and COMMIT with include-xids; 0 otherwise
	CommitTime time.Time
	Op         change.Op
	Tables     []change.Table // one for a change, every truncated table for TRUNCATE
	// Old is the old key (UPDATE with old-key, DELETE); nil for none ((no-tuple-data) or an
	// UPDATE that did not change the key). New is the new row (INSERT, UPDATE).
	Old, New []tdField
	HasOld   bool
}

// parseTestDecoding parses one line of test_decoding output (PostgreSQL 9.4 to 18, options
// include-xids, include-timestamp, skip-empty-xacts).
//
// The format, from contrib/test_decoding: names are quote_identifier'd (quoted when not
// lower-case ASCII letters, digits and _ or a keyword, "" for a quote), types are
// format_type_be (which may hold spaces, brackets and quoted names: `character varying[]`,
// `"My Type"`), values are `null`, `unchanged-toast-datum`, unquoted for integers, oid,
// floats and numeric, `true`/`false` for bool, `B'0101'` for bit strings, and otherwise a
// literal in single quotes with quotes doubled. Null columns of an old key are not printed.
func parseTestDecoding(line string) (tdLine, error) {
	p := &tdParser{s: line}
	switch {
	case line == "BEGIN" || strings.HasPrefix(line, "BEGIN "):
		p.pos = len("BEGIN")
		l := tdLine{Kind: tdBegin}
		xid, err := p.optXid()
		if err != nil {
			return l, p.errorf("%v", err)
		}
		l.Xid = xid
		return l, p.end()
	case line == "COMMIT" || strings.HasPrefix(line, "COMMIT "):
		p.pos = len("COMMIT")
		l := tdLine{Kind: tdCommit}
		xid, err := p.optXid()
		if err != nil {
			return l, p.errorf("%v", err)
		}
		l.Xid = xid
		if p.eat(" (at ") {
			end := strings.LastIndexByte(p.s, ')')
			if end < p.pos {
				return l, p.errorf("commit timestamp without ')'")
			}
			ts, err := parseTimestamp(p.s[p.pos:end])
			if err != nil {
				return l, p.errorf("commit timestamp: %v", err)
			}
			l.CommitTime = ts
			p.pos = end + 1
		}
		return l, p.end()
	case strings.HasPrefix(line, "table "):
		p.pos = len("table ")
		return p.change()
	}
	return tdLine{Kind: tdOther}, nil
}

type tdParser struct {
	s   string
	pos int
}

func (p *tdParser) errorf(format string, args ...any) error {
	return fmt.Errorf("test_decoding line %q at %d: %s", p.s, p.pos, fmt.Sprintf(format, args...))
}

func (p *tdParser) eat(prefix string) bool {
	if strings.HasPrefix(p.s[p.pos:], prefix) {
		p.pos += len(prefix)
		return true
	}
	return false
}

func (p *tdParser) end() error {
	if p.pos != len(p.s) {
		return p.errorf("unexpected %q", p.s[p.pos:])
	}
	return nil
}

// optXid reads " 1234" when it follows.
func (p *tdParser) optXid() (uint32, error) {
	if !strings.HasPrefix(p.s[p.pos:], " ") || p.pos+1 >= len(p.s) || p.s[p.pos+1] < '0' || p.s[p.pos+1] > '9' {
		return 0, nil
	}
	p.pos++
	start := p.pos
	for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
		p.pos++
	}
	x, err := strconv.ParseUint(p.s[start:p.pos], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("xid: %w", err)
	}
	return uint32(x), nil
}

// ident reads an identifier as quote_identifier writes it.
func (p *tdParser) ident() (string, error) {
	if p.pos < len(p.s) && p.s[p.pos] == '"' {
		var b strings.Builder
		i := p.pos + 1
		for {
			j := strings.IndexByte(p.s[i:], '"')
			if j < 0 {
				return "", p.errorf("unterminated quoted name")
			}
			b.WriteString(p.s[i : i+j])
			i += j + 1
			if i < len(p.s) && p.s[i] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			break
		}
		p.pos = i
		return b.String(), nil
	}
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 'A' && c <= 'Z' || c >= 0x80 {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		return "", p.errorf("name expected")
	}
	return p.s[start:p.pos], nil
}

// table reads schema.name.
func (p *tdParser) table() (change.Table, error) {
	schema, err := p.ident()
	if err != nil {
		return change.Table{}, err
	}
	if !p.eat(".") {
		return change.Table{}, p.errorf("'.' expected after schema %q", schema)
	}
	name, err := p.ident()
	if err != nil {
		return change.Table{}, err
	}
	return change.Table{Schema: schema, Name: name}, nil
}

func (p *tdParser) change() (tdLine, error) {
	var l tdLine
	for {
		t, err := p.table()
		if err != nil {
			return l, err
		}
		l.Tables = append(l.Tables, t)
		if !p.eat(", ") {
			break
		}
	}
	switch {
	case p.eat(": INSERT:"):
		l.Kind, l.Op = tdChange, change.Insert
	case p.eat(": UPDATE:"):
		l.Kind, l.Op = tdChange, change.Update
	case p.eat(": DELETE:"):
		l.Kind, l.Op = tdChange, change.Delete
	case p.eat(": TRUNCATE:"):
		// The flags (restart_seqs, cascade) change nothing here: every truncated table is
		// listed, and sequences are replicated on their own.
		l.Kind, l.Op = tdTruncate, change.Truncate
		return l, nil
	default:
		return l, p.errorf("INSERT, UPDATE, DELETE or TRUNCATE expected")
	}
	if len(l.Tables) != 1 {
		return l, p.errorf("a row change names one table")
	}
	if p.eat(" (no-tuple-data)") {
		return l, p.end()
	}
	var err error
	switch l.Op {
	case change.Insert:
		l.New, err = p.fields(false)
	case change.Delete:
		l.HasOld = true
		l.Old, err = p.fields(false)
	case change.Update:
		if p.eat(" old-key:") {
			l.HasOld = true
			if l.Old, err = p.fields(true); err != nil {
				return l, err
			}
			if !p.eat(" new-tuple:") {
				return l, p.errorf("new-tuple expected")
			}
		}
		if p.eat(" (no-tuple-data)") {
			return l, p.end()
		}
		l.New, err = p.fields(false)
	}
	if err != nil {
		return l, err
	}
	return l, p.end()
}

// fields reads " name[type]:value" items up to the end of the line (or, for an old key, up to
// " new-tuple:").
func (p *tdParser) fields(old bool) ([]tdField, error) {
	var out []tdField
	for p.pos < len(p.s) {
		if old && strings.HasPrefix(p.s[p.pos:], " new-tuple:") {
			break
		}
		if !p.eat(" ") {
			return nil, p.errorf("' ' expected before a column")
		}
		var f tdField
		var err error
		if f.Name, err = p.ident(); err != nil {
			return nil, err
		}
		if f.Type, err = p.typeName(); err != nil {
			return nil, err
		}
		if !p.eat(":") {
			return nil, p.errorf("':' expected after column %q", f.Name)
		}
		if err := p.value(&f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// typeName reads "[type]": brackets nest (integer[]), quoted names may hold anything.
func (p *tdParser) typeName() (string, error) {
	if !p.eat("[") {
		return "", p.errorf("'[' expected")
	}
	start, depth, quoted := p.pos, 0, false
	for ; p.pos < len(p.s); p.pos++ {
		c := p.s[p.pos]
		switch {
		case c == '"':
			quoted = !quoted // a doubled quote toggles twice
		case quoted:
		case c == '[':
			depth++
		case c == ']':
			if depth == 0 {
				t := p.s[start:p.pos]
				p.pos++
				return t, nil
			}
			depth--
		}
	}
	return "", p.errorf("unterminated type name")
}

func (p *tdParser) value(f *tdField) error {
	rest := p.s[p.pos:]
	token := func() string {
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		return rest[:i]
	}
	switch {
	case strings.HasPrefix(rest, "'"):
		s, n, err := quoted(rest)
		if err != nil {
			return p.errorf("column %q: %v", f.Name, err)
		}
		f.Value = change.Text(s)
		p.pos += n
	case strings.HasPrefix(rest, "B'"):
		s, n, err := quoted(rest[1:])
		if err != nil {
			return p.errorf("column %q: %v", f.Name, err)
		}
		f.Value = change.Text(s)
		p.pos += n + 1
	default:
		t := token()
		switch t {
		case "":
			return p.errorf("column %q: value expected", f.Name)
		case "null":
			f.Value = change.Null
		case "unchanged-toast-datum":
			f.Toast = true
		case "true":
			f.Value = change.Text("t")
		case "false":
			f.Value = change.Text("f")
		default:
			f.Value = change.Text(t)
		}
		p.pos += len(t)
	}
	return nil
}

// quoted reads a single-quoted literal with doubled quotes at the start of s and returns its
// text and length.
func quoted(s string) (string, int, error) {
	var b strings.Builder
	i := 1
	for {
		j := strings.IndexByte(s[i:], '\'')
		if j < 0 {
			return "", 0, fmt.Errorf("unterminated quoted value")
		}
		b.WriteString(s[i : i+j])
		i += j + 1
		if i < len(s) && s[i] == '\'' {
			b.WriteByte('\'')
			i++
			continue
		}
		return b.String(), i, nil
	}
}

// parseTimestamp reads timestamptz_to_str's ISO output ("2024-05-01 12:00:00.123456+00",
// offsets may have minutes and seconds; BC years are refused).
func parseTimestamp(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999-07:00:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read %q", s)
}
