package queue

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// recordLiteral writes values as record_out does: a field is quoted when it is empty or holds
// a quote, a backslash, a parenthesis, a comma or whitespace, with " and \ doubled; NULL is an
// empty unquoted field.
func recordLiteral(vals []change.Value) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		if !v.Valid {
			continue
		}
		if v.Text != "" && !strings.ContainsAny(v.Text, "\"\\(),\t\n\v\f\r ") {
			b.WriteString(v.Text)
			continue
		}
		b.WriteByte('"')
		b.WriteString(strings.NewReplacer(`"`, `""`, `\`, `\\`).Replace(v.Text))
		b.WriteByte('"')
	}
	b.WriteByte(')')
	return b.String()
}

// FuzzParseRecord: the event decoder never panics on any input, and reads back exactly the
// values of every record literal record_out can write.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"", "a", "a|b", `a"b|\`, "(x)|,|", "|||", "é|\n"} {
		f.Add(s, uint16(0))
	}
	f.Fuzz(func(t *testing.T, in string, nulls uint16) {
		_, _ = parseRecord(in, nil) // any input: an error or values, never a panic
		fields := strings.Split(in, "|")
		vals := make([]change.Value, len(fields))
		for i, s := range fields {
			vals[i] = change.Text(s)
			if i < 16 && nulls&(1<<i) != 0 {
				vals[i] = change.Null
			}
		}
		lit := recordLiteral(vals)
		got, err := parseRecord(lit, nil)
		require.NoError(t, err, lit)
		require.Equal(t, vals, got, lit)
	})
}

// FuzzQualifyColumns: the --where rewriter never panics, and what it accepts stays one
// expression: rewriting its output again changes nothing (the tokenizer reads its own output
// the way it read the input: literals, quoted names and comments where they were), and the
// output has the input's balance (it would have been refused otherwise).
func FuzzQualifyColumns(f *testing.F) {
	for _, s := range []string{
		`status = 'a'`, `"Odd col" > 1 AND id < 5`, `id::text = 'x' -- c`, `E'\\'' = note`,
		`$q$a;b$q$ = note`, `(id) IN (1, 2)`, `note ~ 'x;y'`, `/* ; */ id = 1`, `a.id = id`, `lower(note) = 'x'`,
	} {
		f.Add(s)
	}
	cols := map[string]bool{"id": true, "status": true, "note": true, "Odd col": true}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := qualifyColumns(in, cols, "skiff_row")
		if err != nil {
			return
		}
		again, err := qualifyColumns(out, cols, "skiff_row")
		require.NoError(t, err, "rewritten %q from %q", out, in)
		require.Equal(t, out, again, "from %q", in)
	})
}
