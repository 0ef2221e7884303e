package copier

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/catalog"
)

// The copy's stream is in COPY's binary format when both ends can read it the same way
// (binaryFormat), else in its text format. Binary spares the provider's output functions and
// text escaping, and the target's line parsing and input functions: measured on a 2 GB table
// of (bigint, int, text), about 15% less CPU in the target's backend, which limits the copy.
//
// Binary COPY carries each value in its type's send/recv form, which is only the same on
// both ends for the same type: a column is copied in binary only when it is read unchanged
// (no handler computes it) and its provider and target columns have the same built-in type
// (binaryTypes: its OID, fixed across versions, and the same modifier). A table with any
// other column is copied in text: a type mismatch (int4 → int8: text converts, binary
// fails), a domain, an enum or composite type (OIDs differ between databases; an array's
// binary form names its element type's OID), a type without send/recv. Date-time values
// are sent as integers or floats by the servers' integer_datetimes (off on some builds
// before 10): both must agree.

// binaryTypes are the built-in types (pg_type OIDs, the same in every version from 8.4) whose
// send/recv forms are the same in every version skiff supports, and their arrays.
var binaryTypes = map[uint32]bool{
	16: true, 1000: true, // bool
	17: true, 1001: true, // bytea
	18: true, 1002: true, // "char"
	19: true, 1003: true, // name
	20: true, 1016: true, // int8
	21: true, 1005: true, // int2
	23: true, 1007: true, // int4
	25: true, 1009: true, // text
	26: true, 1028: true, // oid
	114: true, 199: true, // json
	650: true, 651: true, // cidr
	700: true, 1021: true, // float4
	701: true, 1022: true, // float8
	790: true, 791: true, // money
	829: true, 1040: true, // macaddr
	869: true, 1041: true, // inet
	1042: true, 1014: true, // bpchar
	1043: true, 1015: true, // varchar
	1082: true, 1182: true, // date
	1083: true, 1183: true, // time
	1114: true, 1115: true, // timestamp
	1184: true, 1185: true, // timestamptz
	1186: true, 1187: true, // interval
	1266: true, 1270: true, // timetz
	1560: true, 1561: true, // bit
	1562: true, 1563: true, // varbit
	1700: true, 1231: true, // numeric
	2950: true, 2951: true, // uuid
	3802: true, 3807: true, // jsonb
}

// binaryFormat says whether the plan's rows can be streamed in COPY's binary format (see
// above); why says, when not, the first reason (for the copy's log line).
func (p *plan) binaryFormat(ctx context.Context, prov, tgt *pgx.Conn) (ok bool, why string, err error) {
	if !p.sql {
		return false, "its handlers have no SQL form", nil
	}
	pd, td := prov.PgConn().ParameterStatus("integer_datetimes"), tgt.PgConn().ParameterStatus("integer_datetimes")
	if pd != td {
		return false, fmt.Sprintf("integer_datetimes differs (provider %q, target %q)", pd, td), nil
	}
	src, err := typedColumns(ctx, prov, p.sel.Source)
	if err != nil {
		return false, "", fmt.Errorf("provider: %w", err)
	}
	dst, err := typedColumns(ctx, tgt, p.dest)
	if err != nil {
		return false, "", fmt.Errorf("target: %w", err)
	}
	for _, c := range p.sel.Columns {
		if c.Source == "" {
			return false, fmt.Sprintf("column %s is computed by the handlers", c.Name), nil
		}
		s, d := src[c.Source], dst[c.Name]
		switch {
		case s.TypeOID != d.TypeOID || s.Type != d.Type:
			return false, fmt.Sprintf("column %s has type %s on the provider, %s on the target", c.Name, s.Type, d.Type), nil
		case !binaryTypes[s.TypeOID]:
			return false, fmt.Sprintf("column %s has type %s, not one of the built-in types copied in binary", c.Name, s.Type), nil
		}
	}
	return true, "", nil
}

// typedColumns reads table t's live columns on conn by name.
func typedColumns(ctx context.Context, conn *pgx.Conn, t change.Table) (map[string]catalog.Column, error) {
	cols, err := liveColumns(ctx, conn, t)
	if err != nil {
		return nil, err
	}
	out := make(map[string]catalog.Column, len(cols))
	for _, c := range cols {
		out[c.Name] = c
	}
	return out, nil
}

// copyOptions returns the options of a COPY on a server of server_version_num v: the binary
// format, and FREEZE (a COPY FROM into a table the transaction truncated, 9.3+). The option
// list arrives in 9.0; 8.4 knows only the old syntax. The format is a string literal: 9.0's
// grammar takes no keyword there ((FORMAT binary) is a syntax error on 9.0), every later one
// takes both.
func copyOptions(binary, freeze bool, v int) string {
	var opts []string
	if binary {
		if v < 90000 {
			return " WITH BINARY"
		}
		opts = append(opts, "FORMAT 'binary'")
	}
	if freeze && v >= 90300 {
		opts = append(opts, "FREEZE")
	}
	if len(opts) == 0 {
		return ""
	}
	return " (" + strings.Join(opts, ", ") + ")"
}
