package queue

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPlanNeverGuesses replays random histories of columns added and dropped while a layout is
// in use, with rows written between them and ticks cut at random, and checks every answer of
// plan.resolve against the columns each row really holds: a row is either decoded into exactly
// its own columns or not decoded, and it is decoded whenever every column dropped meanwhile is
// known to have been dropped before or after it (a different tick interval). The histories
// are far denser in DDL than life (a change every few rows, ticks every few steps, one xmin in
// ten unknown, added columns changed again later): it counts how many rows decode, for the
// record.
func TestPlanNeverGuesses(t *testing.T) {
	t.Parallel()
	var rows, decoded, ambiguous int
	for seed := range uint64(3000) {
		r, d, a := planHistory(t, seed)
		rows, decoded, ambiguous = rows+r, decoded+d, ambiguous+a
	}
	t.Logf("%d rows: %d decoded, %d refused as ambiguous (%.1f%% decoded)", rows, decoded, ambiguous, 100*float64(decoded)/float64(rows))
	require.Positive(t, decoded)
}

// planHistory builds one history and checks every row of it; it returns how many rows it
// had, decoded and refused.
func planHistory(t *testing.T, seed uint64) (rows, decoded, refused int) {
	rng := rand.New(rand.NewPCG(seed, 11))
	// The layout: columns 1..k, some dropped before it was made; column 1 is the key.
	k := 2 + rng.IntN(5)
	var s0 []int16
	for a := int16(1); a <= int16(k); a++ {
		if a == 1 || rng.IntN(5) > 0 {
			s0 = append(s0, a)
		}
	}
	n0 := int16(k)
	// The history: column changes and rows at increasing times; a tick every few steps.
	type step struct {
		op   byte // 'd' drop, 'a' add, 'r' row
		att  int16
		time int
	}
	live := slices.Clone(s0)
	next := n0 + 1
	var steps []step
	var shapes [][]int16 // the live columns at each row
	for tm := range 6 + rng.IntN(20) {
		switch x := rng.IntN(10); {
		case x < 2 && len(live) > 1:
			i := 1 + rng.IntN(len(live)-1)
			steps = append(steps, step{op: 'd', att: live[i], time: tm})
			live = slices.Delete(live, i, i+1)
		case x < 4:
			steps = append(steps, step{op: 'a', att: next, time: tm})
			live = append(live, next)
			next++
		default:
			steps = append(steps, step{op: 'r', time: tm})
			shapes = append(shapes, slices.Clone(live))
		}
	}
	// Ticks: the interval a time falls in (intervals are 1-based: 0 is before the batch).
	var cuts []int
	for tm := 0; tm < len(steps)+1; tm++ {
		if rng.IntN(3) == 0 {
			cuts = append(cuts, tm)
		}
	}
	interval := func(tm int) int {
		n := 1
		for _, c := range cuts {
			if c <= tm {
				n++
			}
		}
		return n
	}
	// The plan, as newPlan would make it from the catalog at the end.
	l := &layout{id: 1, key: []string{"c1"}}
	for _, a := range s0 {
		l.columns = append(l.columns, fmt.Sprintf("c%d", a))
	}
	p := &plan{l: l, s0: s0, names: map[int16]string{}, cache: map[[2]int]resolved{}, shapes: map[string]*shape{}}
	for _, a := range live {
		p.names[a] = fmt.Sprintf("c%d", a)
	}
	dropTime := map[int16]int{}
	for _, s := range steps {
		if s.op == 'd' {
			dropTime[s.att] = s.time
		}
	}
	for _, a := range s0 {
		if tm, ok := dropTime[a]; ok {
			op := colOp{att: a, pos: interval(tm)}
			if rng.IntN(10) == 0 {
				op.pos = -1 // xmin could not be widened
			}
			p.drops = append(p.drops, op)
		}
	}
	for _, s := range steps {
		if s.op != 'a' {
			continue
		}
		op := colOp{att: s.att}
		if tm, ok := dropTime[s.att]; ok {
			op.died, op.pos = true, interval(tm)
		} else {
			// The row of an added column may have been changed again later: its xmin is
			// an upper bound of the add.
			op.pos = interval(s.time + rng.IntN(3)*rng.IntN(len(steps)+1))
		}
		if rng.IntN(10) == 0 {
			op.pos = -1
		}
		p.births = append(p.births, op)
	}
	if len(p.drops) == 0 && len(p.births) == 0 {
		var err error
		p.base, err = p.shapeOf(s0, nil)
		require.NoError(t, err)
	}
	i := 0
	for _, s := range steps {
		if s.op != 'r' {
			continue
		}
		truth := shapes[i]
		i++
		rows++
		posT := interval(s.time)
		if rng.IntN(10) == 0 {
			posT = -1 // a retried event
		}
		sh, err := p.resolve(len(truth), posT)
		if err != nil {
			// Only a drop whose order against the row is unknown can leave a choice.
			placed := posT >= 0
			for _, op := range append(slices.Clone(p.drops), p.births...) {
				if (op.died || slices.Contains(p.drops, op)) && (op.pos < 0 || op.pos == posT) {
					placed = false
				}
			}
			require.False(t, placed, "seed %d: a row holding %v is refused though every drop is placed before or after it: %v", seed, truth, err)
			refused++
			continue
		}
		decoded++
		var want []string
		var keep []int
		for j, a := range truth {
			if name, ok := p.names[a]; ok {
				want = append(want, name)
				keep = append(keep, j)
			}
		}
		if len(keep) == len(truth) {
			keep = nil
		}
		require.Equal(t, want, sh.columns, "seed %d: a row holding %v decoded as %v", seed, truth, sh.columns)
		require.Equal(t, keep, sh.keep, "seed %d", seed)
		require.Equal(t, len(truth), sh.width, "seed %d", seed)
	}
	return rows, decoded, refused
}

func TestWidenXid(t *testing.T) {
	t.Parallel()
	const e = int64(1) << 32
	require.Equal(t, int64(1000), widenXid(1000, 900, 2000))
	require.Equal(t, 3*e+5, widenXid(5, 3*e-100, 3*e+50), "across a wraparound of the 32 bits")
	require.Equal(t, 2*e+4000, widenXid(4000, 2*e+10, 2*e+5000))
	require.Zero(t, widenXid(2, 900, 2000), "frozen")
	require.Zero(t, widenXid(1000, 900, 900+e), "the layout is too old to tell")
	require.Zero(t, widenXid(5000, 900, 2000), "not committed at the snapshot: not this transaction")
	require.Zero(t, widenXid(1000, 0, 2000), "no lower bound")
}
