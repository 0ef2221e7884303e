package apply

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// BenchmarkApplier measures the target side alone: batches of 20k synthetic events (a
// backlog's batches are up to 50k: worker --max-events) applied to a table like the bench's (id bigint PRIMARY KEY,
// v int, pad text), as rows/s and as the CPU spent per row by the target's backend and by
// this process (the applier), which a loaded machine does not blur as it does the rate:
// inserts, updates in key order, and updates in a random order.
//
//	go test ./internal/apply -run '^$' -bench Applier -benchtime 10x
func BenchmarkApplier(b *testing.B) {
	const batch = 20000
	bcols := []string{"id", "v", "pad"}
	bt := change.Table{Schema: "public", Name: "r"}
	// update-random: the same updates, each batch's keys in a random order (as the provider's
	// changes of a table may come), spread over the table.
	perm := rand.New(rand.NewPCG(1, 2)).Perm(10 * batch)
	for _, mix := range []string{"insert", "update", "update-random"} {
		b.Run(mix, func(b *testing.B) {
			tg := newTarget(b, "", `CREATE TABLE r (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`)
			tg.a.cfg.MaxPendingRows = DefaultMaxPendingRows
			next := 0
			mk := func(op change.Op, id int) change.Event {
				s := strconv.Itoa(id)
				return change.Event{ID: int64(id), Op: op, Table: bt, Columns: bcols, Key: key,
					Values: []change.Value{change.Text(s), change.Text(strconv.Itoa(id % 1000)), change.Text("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")}}
			}
			if mix != "insert" { // rows to update
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
					switch mix {
					case "insert":
						next++
						evs[i] = mk(change.Insert, next)
					case "update":
						evs[i] = mk(change.Update, 1+(n*batch+i)%(10*batch))
					default:
						evs[i] = mk(change.Update, 1+perm[(n*batch+i)%(10*batch)])
					}
				}
				batches[n] = evs
			}
			var pid uint32
			require.NoError(b, tg.conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
			b.ResetTimer()
			t0, back0, self0 := time.Now(), backendCPU(b, pid), selfCPU()
			for n := range b.N {
				require.NoError(b, tg.apply(b, batches[n]))
			}
			rows := float64(b.N * batch)
			b.ReportMetric(rows/time.Since(t0).Seconds(), "rows/s")
			b.ReportMetric(float64((backendCPU(b, pid)-back0).Microseconds())/rows, "backend-µs/row")
			b.ReportMetric(float64((selfCPU()-self0).Microseconds())/rows, "applier-µs/row")
		})
	}
}

// backendCPU is the user+system CPU time a server backend has used so far.
func backendCPU(b *testing.B, pid uint32) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("backend CPU: %v", err) // not on Linux, or the server runs elsewhere
	}
	f := strings.Fields(string(s[bytes.LastIndexByte(s, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// selfCPU is the CPU time this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
