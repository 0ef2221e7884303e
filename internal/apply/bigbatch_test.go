package apply

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestLargeBatchStreams: a batch of 100k changes (inserts, then updates of every row, some
// twice, deletes) is applied while it streams: rows reach the target's table after the first
// few thousand events (slow start), the applier never holds more than MaxPendingRows merged
// rows, and the result is exact.
func TestLargeBatchStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tg := newTarget(t, "", `CREATE TABLE t (id bigint PRIMARY KEY, v text, n integer)`)
	tg.a.cfg.MaxPendingRows = 20000

	const n = 40000
	var evs []change.Event
	id := int64(0)
	for i := 1; i <= n; i++ {
		id++
		evs = append(evs, ins(id, v(strconv.Itoa(i)), v("a"), v("1")))
	}
	for i := 1; i <= n; i++ {
		id++
		evs = append(evs, upd(id, nil, v(strconv.Itoa(i)), v("b"), v(strconv.Itoa(i))))
	}
	for i := 1; i <= n; i += 3 {
		id++
		evs = append(evs, upd(id, nil, v(strconv.Itoa(i)), v("c"), v("3")))
	}
	for i := 2; i <= n; i += 5 {
		id++
		evs = append(evs, del(id, v(strconv.Itoa(i)), v(""), v("")))
	}

	b := change.Batch{ID: 1, Queue: "q", Prev: change.Position{}, End: change.Position{Tick: 1}}
	var sawRows bool
	maxPending := 0
	err := tg.a.Apply(ctx, b, func(emit func([]change.Event) error) error {
		for i := 0; i < len(evs); i += 1000 {
			if err := emit(evs[i:min(i+1000, len(evs))]); err != nil {
				return err
			}
			pending := 0
			for _, r := range tg.a.runs {
				pending += len(r.entries)
			}
			maxPending = max(maxPending, pending)
			if i+1000 == 3000 {
				// The batch's transaction has written rows already (the relation grew), once
				// the flush sent ahead is done with the connection.
				require.NoError(t, tg.a.settle())
				var size int64
				require.NoError(t, tg.a.tx.QueryRow(ctx, `SELECT count(*) FROM public.t`).Scan(&size))
				sawRows = size > 0
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.True(t, sawRows, "no row written after 3000 events")
	require.LessOrEqual(t, maxPending, 20000)

	want := map[string]string{}
	for i := 1; i <= n; i++ {
		s := strconv.Itoa(i)
		switch {
		case i%5 == 2:
			continue
		case i%3 == 1:
			want[s] = "(" + s + ",c,3)"
		default:
			want[s] = "(" + s + ",b," + s + ")"
		}
	}
	got := dump(t, tg.conn, "t")
	require.Len(t, got, len(want))
	for _, row := range got {
		k := row[1:]
		k = k[:len(k)-len(k[indexComma(k):])]
		require.Equal(t, want[k], row)
	}
}

func indexComma(s string) int {
	for i := range s {
		if s[i] == ',' {
			return i
		}
	}
	return len(s)
}
