package compare

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
)

// keyHash is one row as the row-by-row compare streams it.
type keyHash struct {
	key, hash string
	vals      []string // the key columns' text (their output functions)
}

// rowDiff streams (key text, row hash) from both sides ordered by the key text's UTF-8 bytes
// (the same order on every server whatever its collation, and Go's string order) and merges
// them, recording the keys that differ (at most cfg.MaxRowDiffs) and returning how many do.
// For a merged pair (Pair.Merged) a target row whose key the provider lacks is another
// provider's: counted in res.OtherRows, not a difference; the rows of both sides are counted
// in res.Provider.Rows and res.Target.Rows.
func (s *sides) rowDiff(ctx context.Context, cfg Config, from fromItems, key []string, pi, ti TableInfo, pcols, tcols []Column, res *Result) (int, error) {
	keyCols := func(ti TableInfo) ([]Column, error) {
		out := make([]Column, len(key))
		for i, k := range key {
			c, ok := ti.column(k)
			if !ok {
				return nil, fmt.Errorf("key column %s missing on %s", change.QuoteIdent(k), ti.Table)
			}
			out[i] = c
		}
		return out, nil
	}
	pk, err := keyCols(pi)
	if err != nil {
		return 0, err
	}
	tk, err := keyCols(ti)
	if err != nil {
		return 0, err
	}
	query := func(from string, keys, cols []Column) string {
		k := keyExpr(keys)
		outer, inner := make([]string, len(keys)), make([]string, len(keys))
		for i, c := range keys {
			name := change.QuoteIdent(fmt.Sprintf("skiff k%d", i))
			outer[i], inner[i] = name, textExpr(c)+" AS "+name
		}
		return "SELECT k, h, " + strings.Join(outer, ", ") + " FROM (SELECT " + k + " AS k, " + rowExpr(cols) + " AS h, " +
			strings.Join(inner, ", ") + " FROM " + from + ") s ORDER BY convert_to(k, 'UTF8')"
	}
	pch := make(chan keyHash, 256)
	tch := make(chan keyHash, 256)
	perr := make(chan error, 1)
	terr := make(chan error, 1)
	go func() { perr <- stream(ctx, s.p, query(from.p, pk, pcols), len(key), pch) }()
	go func() { terr <- stream(ctx, s.t, query(from.t, tk, tcols), len(key), tch) }()

	// Past MaxRowDiffs the merge goes on (the connections stay usable for the next table)
	// but records nothing more.
	merged := res.Pair.Merged
	n := 0
	add := func(r keyHash, kind string) {
		if merged && kind == "missing on provider" {
			res.OtherRows++
			return
		}
		n++
		if len(res.Diffs) >= cfg.MaxRowDiffs {
			res.Truncated = true
			return
		}
		res.Diffs = append(res.Diffs, RowDiff{Key: r.key, Kind: kind, Values: r.vals})
	}
	p, pok := <-pch
	t, tok := <-tch
	if merged {
		res.Provider, res.Target = Sum{}, Sum{}
	}
	for pok || tok {
		if merged && pok && (!tok || p.key <= t.key) {
			res.Provider.Rows++
		}
		if merged && tok && (!pok || t.key <= p.key) {
			res.Target.Rows++
		}
		switch {
		case !tok || (pok && p.key < t.key):
			add(p, "missing on target")
			p, pok = <-pch
		case !pok || t.key < p.key:
			add(t, "missing on provider")
			t, tok = <-tch
		default:
			if p.hash != t.hash {
				add(p, "different")
			}
			p, pok = <-pch
			t, tok = <-tch
		}
	}
	return n, errors.Join(sideErr("provider", <-perr), sideErr("target", <-terr))
}

// stream sends every row of query (key text, hash, then nkey key column texts) to ch and
// closes it.
func stream(ctx context.Context, conn *pgx.Conn, query string, nkey int, ch chan<- keyHash) error {
	defer close(ch)
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		r := keyHash{vals: make([]string, nkey)}
		dest := make([]any, 2+nkey)
		dest[0], dest[1] = &r.key, &r.hash
		for i := range r.vals {
			dest[2+i] = &r.vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		select {
		case ch <- r:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return rows.Err()
}

// Summary is a one-line description of a result for humans.
func (r Result) Summary() string {
	switch {
	case r.Err != nil:
		return "ERROR: " + r.Err.Error()
	case r.Equal && r.Pair.Merged:
		return fmt.Sprintf("equal (%d rows of this provider; merged: %d other providers' rows on the target, not compared)", r.Provider.Rows, r.OtherRows)
	case r.Equal:
		return fmt.Sprintf("equal (%d rows)", r.Provider.Rows)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "DIFFERENT (provider %d rows, target %d rows)", r.Provider.Rows, r.Target.Rows)
	if r.Pair.Merged {
		fmt.Fprintf(&b, " (merged: %d of them other providers')", r.OtherRows)
	}
	return b.String()
}
