package compare

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Sequence is a provider sequence, its last value, and where the target's stands.
type Sequence struct {
	Sequence change.Table
	Provider int64 // last_value on the provider
	Target   int64 // last_value on the target
	// Behind is set when the target could hand out a value the provider already did.
	Behind bool
	Err    error // the target's sequence could not be read
}

// Sequences reads the target's sequences of the given provider values. A target sequence is
// in order when its last value is at least the provider's (skiff moves target sequences
// forward, never back).
func Sequences(ctx context.Context, target *pgx.ConnConfig, provider map[change.Table]int64) ([]Sequence, error) {
	if len(provider) == 0 {
		return nil, nil
	}
	conn, err := pg.ConnectConfig(ctx, target.Copy())
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	out := make([]Sequence, 0, len(provider))
	for seq, last := range provider {
		s := Sequence{Sequence: seq, Provider: last}
		if err := conn.QueryRow(ctx, "SELECT last_value FROM "+seq.String()).Scan(&s.Target); err != nil {
			s.Err = fmt.Errorf("target: %w", err)
		} else {
			s.Behind = s.Target < s.Provider
		}
		out = append(out, s)
	}
	return out, nil
}
