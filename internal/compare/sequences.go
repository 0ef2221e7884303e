package compare

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// SequenceValue is where a sequence stands: its last_value and is_called (false when nextval
// has not handed out last_value yet: a sequence never used, or set with setval(s, v, false)).
type SequenceValue struct {
	Last   int64
	Called bool
}

// String is the value for messages: "42", or "1 unused" when it was not handed out.
func (v SequenceValue) String() string {
	if v.Called {
		return fmt.Sprint(v.Last)
	}
	return fmt.Sprintf("%d unused", v.Last)
}

// Sequence is a provider sequence and where the target's stands.
type Sequence struct {
	Sequence change.Table
	Provider SequenceValue
	Target   SequenceValue
	// Behind is set when the target could hand out a value the provider already did: the
	// target's next nextval is not above every value the provider has handed out.
	Behind bool
	Err    error // the target's sequence could not be read
}

// Behind reports whether a target sequence at t could hand out a value the provider's, at p,
// already has (sequences that count up, as serial and identity columns do).
func Behind(p, t SequenceValue) bool {
	if !p.Called {
		return t.Last < p.Last // the provider has handed out values below p.Last only
	}
	return t.Last < p.Last || t.Last == p.Last && !t.Called
}

// Sequences reads the target's sequences of the given provider values. A target sequence is
// in order when it is not Behind (skiff moves target sequences forward, never back).
func Sequences(ctx context.Context, target *pgx.ConnConfig, provider map[change.Table]SequenceValue) ([]Sequence, error) {
	if len(provider) == 0 {
		return nil, nil
	}
	conn, err := pg.ConnectConfig(ctx, target.Copy())
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	out := make([]Sequence, 0, len(provider))
	for seq, pv := range provider {
		s := Sequence{Sequence: seq, Provider: pv}
		if err := conn.QueryRow(ctx, "SELECT last_value, is_called FROM "+seq.String()).Scan(&s.Target.Last, &s.Target.Called); err != nil {
			s.Err = fmt.Errorf("target: %w", err)
		} else {
			s.Behind = Behind(s.Provider, s.Target)
		}
		out = append(out, s)
	}
	return out, nil
}

// MoveSequences moves every target sequence of seqs that is Behind to the provider's value
// (setval with the provider's is_called), so that the target's next nextval is above every
// value the provider has handed out; it never moves one back. It returns the sequences it
// moved, with the values they had. skiff switchover runs it while the provider's tables are
// blocked for writes.
func MoveSequences(ctx context.Context, target *pgx.ConnConfig, seqs []Sequence) ([]Sequence, error) {
	var behind []Sequence
	for _, s := range seqs {
		if s.Err != nil {
			return nil, fmt.Errorf("sequence %s: %w", s.Sequence, s.Err)
		}
		if s.Behind {
			behind = append(behind, s)
		}
	}
	if len(behind) == 0 {
		return nil, nil
	}
	conn, err := pg.ConnectConfig(ctx, target.Copy())
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range behind {
		if _, err := conn.Exec(ctx, "SELECT pg_catalog.setval(CAST($1::text AS regclass), $2, $3)",
			s.Sequence.String(), s.Provider.Last, s.Provider.Called); err != nil {
			return nil, fmt.Errorf("target sequence %s: setval to %s: %w", s.Sequence, s.Provider, err)
		}
	}
	return behind, nil
}
