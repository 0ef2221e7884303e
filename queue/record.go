package queue

import (
	"errors"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

var errMalformed = errors.New("malformed record literal")

// parseRecord splits a record literal as record_out writes it — (f1,f2,...) — into values,
// appending them to dst. An empty unquoted field is NULL; "" is the empty string; inside
// quotes "" stands for " and a backslash escapes the next character (record_out doubles both
// " and \). Values without escapes share s's memory.
func parseRecord(s string, dst []change.Value) ([]change.Value, error) {
	if len(s) < 2 || s[0] != '(' || s[len(s)-1] != ')' {
		return dst, errMalformed
	}
	i, end := 1, len(s)-1
	for {
		if i < end && s[i] == '"' {
			// Quoted field: copy only when it holds an escape.
			seg := i + 1
			j := seg
			var b *strings.Builder
			for {
				k := indexAnyOf(s[j:end], '"', '\\', '\\')
				if k < 0 {
					return dst, errMalformed
				}
				pos := j + k
				if s[pos] == '\\' {
					if pos+1 >= end {
						return dst, errMalformed
					}
					b = grow(b, len(s)-seg)
					b.WriteString(s[seg:pos])
					b.WriteByte(s[pos+1])
					j, seg = pos+2, pos+2
					continue
				}
				if pos+1 < end && s[pos+1] == '"' {
					b = grow(b, len(s)-seg)
					b.WriteString(s[seg:pos])
					b.WriteByte('"')
					j, seg = pos+2, pos+2
					continue
				}
				if b == nil {
					dst = append(dst, change.Text(s[seg:pos]))
				} else {
					b.WriteString(s[seg:pos])
					dst = append(dst, change.Text(b.String()))
				}
				i = pos + 1
				break
			}
		} else {
			k := indexAnyOf(s[i:end], ',', '"', '\\')
			if k < 0 {
				k = end - i
			} else if s[i+k] != ',' {
				return dst, errMalformed // record_out quotes every field holding " or \
			}
			if k == 0 {
				dst = append(dst, change.Null)
			} else {
				dst = append(dst, change.Text(s[i:i+k]))
			}
			i += k
		}
		if i == end {
			return dst, nil
		}
		if s[i] != ',' {
			return dst, errMalformed
		}
		i++
	}
}

// indexAnyOf is strings.IndexAny(s, string([]byte{a, b, c})) without the set IndexAny builds
// at every call, which costs more than the scan of a short field.
func indexAnyOf(s string, a, b, c byte) int {
	for i := 0; i < len(s); i++ {
		if x := s[i]; x == a || x == b || x == c {
			return i
		}
	}
	return -1
}

func grow(b *strings.Builder, n int) *strings.Builder {
	if b != nil {
		return b
	}
	b = &strings.Builder{}
	b.Grow(n)
	return b
}
