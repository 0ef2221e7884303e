package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ---- 7. apply rate through handlers ------------------------------------------------------

// handlersSystem is skiff with, on its one table, a schema map (provider schema legacy →
// target schema app), a row filter (the capture's --where, keeping every row: its cost is
// paid, the rows are the same) and partition routing (the partition handler, by ranges of
// the key, into the two partitions of a partitioned destination). It runs on skiff's clusters.
var handlersSystem = system{name: "skiff-handlers", label: "skiff, schema map + filter + partition routing", cluster: "skiff",
	newRun: func() replicator { return &skiffRun{handlers: true} }, available: skiffAvailable}

// Handler settings of the handlers run (skiffRun.handlers).
const (
	handlersWhere = "v >= 0"
	handlersRatio = "apply rate with schema map + filter + partition routing ÷ with no handler (paired per repetition)"
)

// handlersApply measures skiff's apply rate of the mixed backlog with no handler and with the
// handlers of handlersSystem, in the same repetition (alternating which runs first), and their
// ratio.
func (b *bench) handlersApply(ctx context.Context) {
	sz := b.cfg.Size
	name := fmt.Sprintf("apply, %s inserts + %s updates", num(float64(sz.ApplyRows/2)), num(float64(sz.ApplyRows/2)))
	plain := system{name: "skiff", label: "skiff", newRun: func() replicator { return &skiffRun{} }, available: skiffAvailable}
	for rep := 1; rep <= sz.Reps && ctx.Err() == nil; rep++ {
		rates := map[string]float64{}
		for _, s := range rotate([]system{plain, handlersSystem}, rep-1) {
			if !b.usable(ctx, s) {
				b.unavailable("handlers", name, s.name, "rows/s", false, b.disabled[s.name])
				continue
			}
			var rate float64
			err := b.twice(ctx, s.name, func() (err error) {
				rate, _, _, err = b.applyOnce(ctx, s, "mixed", 1)
				return err
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.log.Warn("apply run failed", "system", s.name, "what", name, "rep", rep, "err", err)
				b.unavailable("handlers", name, s.name, "rows/s", false, err.Error())
				continue
			}
			b.record("handlers", name, s.name, "rows/s", false, rate)
			rates[s.name] = rate
		}
		if rates[plain.name] > 0 && rates[handlersSystem.name] > 0 {
			b.record("handlers", handlersRatio, "skiff", "×", false, rates[handlersSystem.name]/rates[plain.name])
		}
	}
}

// handlerTables makes the handlers run's tables: legacy.bench_t0 on the provider; on the
// target app.bench_t0 partitioned by ranges of id into app.bench_t0_lo and app.bench_t0_hi
// (the partition handler writes the partitions). Each database's search_path starts with its
// schema, so that the backlog, the markers and the comparison, which name bench_t0 unqualified,
// find it.
func (b *bench) handlerTables(ctx context.Context, e *runEnv) error {
	half := handlersHalf(b)
	if err := execSQL(ctx, e.pair.prov, e.pdb,
		"CREATE SCHEMA legacy",
		fmt.Sprintf(benchTable, "legacy.bench_t0"),
		fmt.Sprintf("ALTER DATABASE %s SET search_path = legacy, public", pgx.Identifier{e.pdb}.Sanitize())); err != nil {
		return err
	}
	return execSQL(ctx, e.pair.tgt, e.tdb,
		"CREATE SCHEMA app",
		fmt.Sprintf(benchTable, "app.bench_t0")+" PARTITION BY RANGE (id)",
		fmt.Sprintf("CREATE TABLE app.bench_t0_lo PARTITION OF app.bench_t0 FOR VALUES FROM (MINVALUE) TO (%d)", half),
		fmt.Sprintf("CREATE TABLE app.bench_t0_hi PARTITION OF app.bench_t0 FOR VALUES FROM (%d) TO (MAXVALUE)", half),
		fmt.Sprintf("ALTER DATABASE %s SET search_path = app, public", pgx.Identifier{e.tdb}.Sanitize()))
}

// handlersHalf is the first key of the second partition: half the backlog's keys.
func handlersHalf(b *bench) int { return max(b.cfg.Size.ApplyRows/4, 1) }

// handlersArgs are the subscribe flags of the handlers run.
func handlersArgs(b *bench) []string {
	half := handlersHalf(b)
	cfg := fmt.Sprintf(`legacy.bench_t0={"column": "id", "ranges": [{"to": %d, "table": "app.bench_t0_lo"}, {"from": %d, "table": "app.bench_t0_hi"}]}`, half, half)
	return []string{"--schema-map", "legacy=app", "--handler", "legacy.bench_t0=partition", "--handler-config", cfg}
}
