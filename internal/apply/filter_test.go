package apply

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestFilteredUpdatesAgainstModel: a consumer-side filter (region in eu) over random batches
// of a provider's changes — inserts in either region, updates inside and outside the filter,
// updates that move a row into it or out of it, with and without a key change, deletes —
// turns updates into Upserts and Removes; applied set based and row by row, the target holds
// exactly the provider's rows the filter keeps, with no warning of a missing row.
func TestFilteredUpdatesAgainstModel(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		for _, setBased := range []bool{true, false} {
			t.Run(fmt.Sprintf("pg%s/setBased=%v", ver, setBased), func(t *testing.T) {
				t.Parallel()
				tg := newTarget(t, ver, `CREATE TABLE t (id int PRIMARY KEY, region text, v text)`)
				var logs bytes.Buffer
				tg.a.log = slog.New(slog.NewTextHandler(&logs, nil))
				filter, err := handlers.NewRegistry().New("filter", tbl, `{"column": "region", "in": ["eu"]}`)
				require.NoError(t, err)
				cols, key := []string{"id", "region", "v"}, []string{"id"}
				type row struct{ region, v string }
				prov := map[int]row{}
				rng := rand.New(rand.NewPCG(7, uint64(len(ver))))
				regions := []string{"eu", "us"}
				nextKey, evID := 1, int64(0)
				keys := func() []int {
					out := make([]int, 0, len(prov))
					for k := range prov {
						out = append(out, k)
					}
					sort.Ints(out)
					return out
				}
				values := func(k int, r row) []change.Value {
					return []change.Value{v(strconv.Itoa(k)), v(r.region), v(r.v)}
				}
				for batch := 0; batch < 10; batch++ {
					var evs []change.Event
					for range 100 + rng.IntN(1000) {
						evID++
						ks := keys()
						r := row{regions[rng.IntN(2)], "v" + strconv.FormatInt(evID, 10)}
						ev := change.Event{ID: evID, Table: tbl, Columns: cols, Key: key}
						switch op := rng.IntN(10); {
						case op < 3 || len(ks) == 0:
							k := nextKey
							nextKey++
							ev.Op, ev.Values = change.Insert, values(k, r)
							prov[k] = r
						case op < 8: // an update, moving the row across the filter half the time
							k := ks[rng.IntN(len(ks))]
							ev.Op, ev.Values = change.Update, values(k, r)
							prov[k] = r
						case op < 9: // a key change, in either region
							k := ks[rng.IntN(len(ks))]
							nk := nextKey
							nextKey++
							ev.Op, ev.Values, ev.OldKey = change.Update, values(nk, r), []change.Value{v(strconv.Itoa(k))}
							delete(prov, k)
							prov[nk] = r
						default:
							k := ks[rng.IntN(len(ks))]
							ev.Op, ev.Values = change.Delete, values(k, prov[k])
							delete(prov, k)
						}
						keep, err := filter.Handle(&ev)
						require.NoError(t, err)
						if keep {
							evs = append(evs, ev)
						}
					}
					if setBased {
						require.NoError(t, tg.apply(t, evs))
					} else {
						tg.id++
						b := change.Batch{ID: tg.id, Prev: change.Position{Tick: tg.tick}, End: change.Position{Tick: tg.tick + 1}}
						require.NoError(t, tg.a.applyOnce(context.Background(), b, func(emit func([]change.Event) error) error { return emit(evs) }, false, false))
						tg.tick++
					}
				}
				var want []string
				for _, k := range keys() {
					if r := prov[k]; r.region == "eu" {
						want = append(want, fmt.Sprintf("%d|%s|%s", k, r.region, r.v))
					}
				}
				rows, err := tg.conn.Query(context.Background(), `SELECT id::text || '|' || region || '|' || v FROM t ORDER BY id`)
				require.NoError(t, err)
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				require.Equal(t, want, got)
				require.Positive(t, len(want))
				require.NotContains(t, logs.String(), "missing", "a row a filter moved is no missing row")
			})
		}
	}
}
