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
}

// rowDiff streams (key text, row hash) from both sides ordered by the key text's UTF-8 bytes
// (the same order on every server whatever its collation, and Go's string order) and merges
// them, recording the keys that differ.
func (s *sides) rowDiff(ctx context.Context, cfg Config, from fromItems, key []string, pi, ti TableInfo, pcols, tcols []Column, res *Result) error {
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
		return err
	}
	tk, err := keyCols(ti)
	if err != nil {
		return err
	}
	query := func(from string, keys, cols []Column) string {
		k := keyExpr(keys)
		return "SELECT k, h FROM (SELECT " + k + " AS k, " + rowExpr(cols) + " AS h FROM " + from +
			") s ORDER BY convert_to(k, 'UTF8')"
	}
	pch := make(chan keyHash, 256)
	tch := make(chan keyHash, 256)
	perr := make(chan error, 1)
	terr := make(chan error, 1)
	go func() { perr <- stream(ctx, s.p, query(from.p, pk, pcols), pch) }()
	go func() { terr <- stream(ctx, s.t, query(from.t, tk, tcols), tch) }()

	// Past MaxRowDiffs the merge goes on (the connections stay usable for the next table)
	// but records nothing more.
	add := func(k, kind string) {
		if len(res.Diffs) >= cfg.MaxRowDiffs {
			res.Truncated = true
			return
		}
		res.Diffs = append(res.Diffs, RowDiff{Key: k, Kind: kind})
	}
	p, pok := <-pch
	t, tok := <-tch
	for pok || tok {
		switch {
		case !tok || (pok && p.key < t.key):
			add(p.key, "missing on target")
			p, pok = <-pch
		case !pok || t.key < p.key:
			add(t.key, "missing on provider")
			t, tok = <-tch
		default:
			if p.hash != t.hash {
				add(p.key, "different")
			}
			p, pok = <-pch
			t, tok = <-tch
		}
	}
	return errors.Join(sideErr("provider", <-perr), sideErr("target", <-terr))
}

// stream sends every row of query to ch and closes it.
func stream(ctx context.Context, conn *pgx.Conn, query string, ch chan<- keyHash) error {
	defer close(ch)
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r keyHash
		if err := rows.Scan(&r.key, &r.hash); err != nil {
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
	case r.Equal:
		return fmt.Sprintf("equal (%d rows)", r.Provider.Rows)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "DIFFERENT (provider %d rows, target %d rows)", r.Provider.Rows, r.Target.Rows)
	return b.String()
}
