package apply

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// BenchmarkApplier measures the target side alone: batches of 20k synthetic events (the
// queue's default batch size) applied to a table like the bench's (id bigint PRIMARY KEY,
// v int, pad text), as rows/s.
//
//	go test ./internal/apply -run '^$' -bench Applier -benchtime 10x
func BenchmarkApplier(b *testing.B) {
	const batch = 20000
	bcols := []string{"id", "v", "pad"}
	bt := change.Table{Schema: "public", Name: "r"}
	for _, mix := range []string{"insert", "update"} {
		b.Run(mix, func(b *testing.B) {
			tg := newTarget(b, "", `CREATE TABLE r (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`)
			tg.a.cfg.MaxPendingRows = DefaultMaxPendingRows
			next := 0
			mk := func(op change.Op, id int) change.Event {
				s := strconv.Itoa(id)
				return change.Event{ID: int64(id), Op: op, Table: bt, Columns: bcols, Key: key,
					Values: []change.Value{change.Text(s), change.Text(strconv.Itoa(id % 1000)), change.Text("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")}}
			}
			if mix == "update" { // rows to update
				for range 10 {
					evs := make([]change.Event, batch)
					for i := range evs {
						next++
						evs[i] = mk(change.Insert, next)
					}
					require.NoError(b, tg.apply(b, evs))
				}
			}
			batches := make([][]change.Event, b.N)
			for n := range batches {
				evs := make([]change.Event, batch)
				for i := range evs {
					if mix == "insert" {
						next++
						evs[i] = mk(change.Insert, next)
					} else {
						evs[i] = mk(change.Update, 1+(n*batch+i)%(10*batch))
					}
				}
				batches[n] = evs
			}
			b.ResetTimer()
			t0 := time.Now()
			for n := range b.N {
				require.NoError(b, tg.apply(b, batches[n]))
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(t0).Seconds(), "rows/s")
		})
	}
}
