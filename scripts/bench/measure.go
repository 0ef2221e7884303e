package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pgtest"
)

func (b *bench) peerVersions() string {
	ctx := context.Background()
	var parts []string
	for _, p := range [][2]string{
		{"Londiste", "python3-londiste"}, {"PgQ", "postgresql-15-pgq3"}, {"pgqd", "pgqd"},
		{"pglogical", "postgresql-15-pglogical"},
	} {
		v := packageVersion(ctx, p[1])
		if v == "" {
			v = "not installed"
		}
		parts = append(parts, fmt.Sprintf("%s %s (Debian %s)", p[0], v, p[1]))
	}
	sk := "skiff " + b.cfg.SkiffBin
	if out, err := runCmd(ctx, "", nil, b.cfg.SkiffBin, "--version"); err == nil {
		sk = "skiff " + strings.TrimSpace(out)
	}
	if out, err := runCmd(ctx, "", nil, "git", "rev-parse", "--short", "HEAD"); err == nil {
		sk += " at commit " + strings.TrimSpace(out)
	}
	return sk + "; " + strings.Join(parts, ", ")
}

// ---- 1. capture overhead --------------------------------------------------------------

// pgbenchScript is TPC-B as pgbench runs it, with the history row keyed (every captured table
// has a primary key, as replication needs).
const pgbenchScript = `\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
`

var captureTables = []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "bench_bulk"}

// captureVariant installs one way of capturing changes on a database.
type captureVariant struct {
	name    string
	install func(ctx context.Context, s *pgtest.Server, db, dir string) error
}

func (b *bench) captureVariants(ctx context.Context) []captureVariant {
	vs := []captureVariant{{name: "none", install: func(context.Context, *pgtest.Server, string, string) error { return nil }}}
	if b.cfg.Systems["skiff"] {
		vs = append(vs, b.skiffCapture("skiff"))
		// The statement-level INSERT trigger (10+), beside the default row trigger: what a
		// bulk-loaded table's capture costs with it, and what it costs pgbench's one-row INSERTs.
		vs = append(vs, b.skiffCapture("skiff-stmt", "--insert-trigger", "statement"))
	}
	vs = append(vs, captureVariant{name: "pgq", install: func(ctx context.Context, s *pgtest.Server, db, _ string) error {
		if err := extensionInstalled(b, "pgq"); err != nil {
			return err
		}
		stmts := []string{"CREATE EXTENSION pgq", "SELECT pgq.create_queue('bench')"}
		for _, t := range captureTables {
			stmts = append(stmts, fmt.Sprintf("CREATE TRIGGER bench_capture AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE PROCEDURE pgq.logutriga('bench')",
				pgx.Identifier{"public", t}.Sanitize()))
		}
		return execSQL(ctx, s, db, stmts...)
	}})
	vs = append(vs, plpgsqlVariant("row_to_json(NEW)", "row_to_json(OLD)"))
	return vs
}

// plpgsqlVariant is the reference: a bare PL/pgSQL trigger that writes newRow (oldRow for a
// delete) into a table.
// skiffCapture captures the capture tables with skiff table add and extra flags.
func (b *bench) skiffCapture(name string, extra ...string) captureVariant {
	return captureVariant{name: name, install: func(ctx context.Context, s *pgtest.Server, db, dir string) error {
		if err := skiffCaptureAvailable(ctx, b); err != nil {
			return err
		}
		if _, err := runCmd(ctx, dir, nil, b.cfg.SkiffBin, "--log-format", "json", "init", "provider", "--db", s.URL(db)); err != nil {
			return err
		}
		args := append([]string{"--log-format", "json", "table", "add", "--db", s.URL(db), "--queue", "bench"}, extra...)
		for _, t := range captureTables {
			args = append(args, "public."+t)
		}
		_, err := runCmd(ctx, dir, nil, b.cfg.SkiffBin, args...)
		return err
	}}
}

func plpgsqlVariant(newRow, oldRow string) captureVariant {
	return captureVariant{name: "plpgsql", install: func(ctx context.Context, s *pgtest.Server, db, _ string) error {
		data := "json"
		if !strings.Contains(newRow, "json") {
			data = "text"
		}
		stmts := []string{
			"CREATE TABLE bench_log (id bigserial, tbl text, op text, data " + data + ")",
			`CREATE FUNCTION bench_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO bench_log (tbl, op, data) VALUES (TG_TABLE_NAME, TG_OP, ` + oldRow + `);
  ELSE
    INSERT INTO bench_log (tbl, op, data) VALUES (TG_TABLE_NAME, TG_OP, ` + newRow + `);
  END IF;
  RETURN NULL;
END $$`,
		}
		if s.Install.Num < 90000 {
			stmts = append([]string{"CREATE LANGUAGE plpgsql"}, stmts...) // not installed by default before 9.0
		}
		for _, t := range captureTables {
			stmts = append(stmts, fmt.Sprintf("CREATE TRIGGER bench_capture AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE PROCEDURE bench_capture()",
				pgx.Identifier{"public", t}.Sanitize()))
		}
		return execSQL(ctx, s, db, stmts...)
	}}
}

func (b *bench) captureOverhead(ctx context.Context) {
	srv, err := b.server(ctx, "capture", nil)
	if err != nil {
		b.captureFailed("", err)
		return
	}
	b.captureOn(ctx, srv, "", b.captureVariants(ctx))
	if v := b.cfg.Old; v != "" {
		old, err := b.oldServer(ctx, "capture-old", v)
		if err != nil {
			b.captureFailed(oldSuffix(v), err)
			return
		}
		ver := fullVersion(old.Install.Num)
		b.note("Capture overhead on PostgreSQL %s: the same method on a cluster of its own, driven by %s's pgbench; PgQ is not installed there, so skiff's ratio there is compared with PgQ's on %s.", ver, b.cfg.Version, b.cfg.Version)
		b.captureOn(ctx, old, oldSuffix(ver), b.oldCaptureVariants(ctx, old))
	}
}

// fullVersion spells a server_version_num: 80401 → "8.4.1", 150018 → "15.18".
func fullVersion(num int) string {
	if num >= 100000 {
		return fmt.Sprintf("%d.%d", num/10000, num%10000)
	}
	return fmt.Sprintf("%d.%d.%d", num/10000, num/100%100, num%100)
}

// oldSuffix names the old server in the capture measurements' names.
func oldSuffix(version string) string { return ", on PostgreSQL " + version }

func (b *bench) captureFailed(suffix string, err error) {
	b.log.Error("capture overhead", "server", suffix, "err", err)
	tpsName := fmt.Sprintf("pgbench TPS (TPC-B-like, %d clients)", b.cfg.Size.PgbenchClients) + suffix
	b.unavailable("capture", tpsName, "none", "TPS", false, err.Error())
}

// captureOn measures the capture variants on one server; suffix (empty for the main server)
// ends the name of every measurement.
func (b *bench) captureOn(ctx context.Context, srv *pgtest.Server, suffix string, variants []captureVariant) {
	const sec = "capture"
	sz := b.cfg.Size
	tpsName := fmt.Sprintf("pgbench TPS (TPC-B-like, %d clients)", sz.PgbenchClients) + suffix
	bulkName := fmt.Sprintf("bulk insert, %s rows in one statement", num(float64(sz.BulkRows))) + suffix
	fail := func(err error) { b.captureFailed(suffix, err) }
	dir, err := b.dir("capture")
	if err != nil {
		fail(err)
		return
	}
	script := filepath.Join(dir, "tpcb.sql")
	if err := os.WriteFile(script, []byte(pgbenchScript), 0o644); err != nil {
		fail(err)
		return
	}
	const tpl = "pgbench_template"
	if err := createDB(ctx, srv, tpl, ""); err != nil {
		fail(err)
		return
	}
	b.log.Info("pgbench -i", "scale", sz.PgbenchScale, "server", fullVersion(srv.Install.Num))
	if _, err := runCmd(ctx, dir, nil, filepath.Join(b.bin, "pgbench"), "-i", "-q", "-I", "dtgvp", "-s", strconv.Itoa(sz.PgbenchScale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", tpl); err != nil {
		fail(err)
		return
	}
	if err := execSQL(ctx, srv, tpl,
		"ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY",
		"CREATE TABLE bench_bulk (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL)",
		"VACUUM ANALYZE",
	); err != nil {
		fail(err)
		return
	}

	broken := map[string]string{}
	for rep := 1; rep <= sz.Reps && ctx.Err() == nil; rep++ {
		got, err := b.captureRep(ctx, srv, tpl, dir, script, rotate(variants, rep-1), broken)
		if err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			return
		}
		base, ok := got["none"]
		for _, v := range variants {
			r, measured := got[v.name]
			if !measured {
				if why := broken[v.name]; why != "" {
					b.unavailable(sec, tpsName, v.name, "TPS", false, why)
					b.unavailable(sec, ratioTPS+suffix, v.name, "ratio", false, why)
					b.unavailable(sec, ratioBulk+suffix, v.name, "ratio", false, why)
				}
				continue
			}
			b.record(sec, tpsName, v.name, "TPS", false, r[0])
			b.record(sec, bulkName, v.name, "rows/s", false, r[1])
			if ok && v.name != "none" {
				b.record(sec, ratioTPS+suffix, v.name, "ratio", false, r[0]/base[0])
				b.record(sec, ratioBulk+suffix, v.name, "ratio", false, r[1]/base[1])
				b.record(sec, ratioPaired+suffix, v.name, "ratio", false, r[2])
			}
		}
	}
}

// oldCaptureVariants are the variants measured on an old server: no capture, skiff and the
// bare PL/pgSQL trigger (PgQ is not built for it). Before 9.2 there is no row_to_json: the
// bare trigger writes NEW::text there, which is cheaper.
func (b *bench) oldCaptureVariants(ctx context.Context, srv *pgtest.Server) []captureVariant {
	var vs []captureVariant
	for _, v := range b.captureVariants(ctx) {
		switch v.name {
		case "none", "skiff":
			vs = append(vs, v)
		case "plpgsql":
			if srv.Install.Num >= 90200 {
				vs = append(vs, v)
			} else {
				vs = append(vs, plpgsqlVariant("NEW::text", "OLD::text"))
				b.note("On PostgreSQL %s the bare PL/pgSQL trigger writes NEW::text (row_to_json came in 9.2).", fullVersion(srv.Install.Num))
			}
		}
	}
	return vs
}

// captureRep runs one repetition of every variant: a database per variant (a copy of the
// template with the capture installed), then pgbench slices in the order A B C D D C B A (each
// variant twice, half the run time each; the mirrored order cancels a drift of the machine's
// speed), then each variant's pgbench beside the no-capture database's at the same time
// (pairedRatio, for the whole run time), then the bulk insert the same way as pgbench, half
// the rows each time. A variant whose install fails is marked broken and left out from then
// on. It returns per variant the TPS, the bulk rows/s and the paired ratio (0 for "none").
func (b *bench) captureRep(ctx context.Context, srv *pgtest.Server, tpl, dir, script string, variants []captureVariant, broken map[string]string) (map[string][3]float64, error) {
	dbs := map[string]string{}
	defer func() {
		for _, db := range dbs {
			dropDB(ctx, srv, db)
		}
	}()
	var order []captureVariant
	for _, v := range variants {
		if broken[v.name] != "" {
			continue
		}
		db := b.name("capture_" + v.name)
		if err := createDB(ctx, srv, db, tpl); err != nil {
			return nil, err
		}
		dbs[v.name] = db
		if err := v.install(ctx, srv, db, dir); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			b.log.Warn("capture install failed", "variant", v.name, "err", err)
			broken[v.name] = fmt.Sprintf("install %s capture: %v", v.name, err)
			continue
		}
		order = append(order, v)
	}
	seq := append([]captureVariant(nil), order...)
	for i := len(order) - 1; i >= 0; i-- {
		seq = append(seq, order[i])
	}
	sz := b.cfg.Size
	slice := max(1, int(sz.PgbenchTime.Seconds())/2)
	got := map[string][3]float64{}
	add := func(name string, i int, v float64) {
		r := got[name]
		r[i] += v / 2
		got[name] = r
	}
	for _, v := range seq {
		db := dbs[v.name]
		if err := execSQL(ctx, srv, db, "CHECKPOINT"); err != nil {
			return nil, err
		}
		tps, err := b.pgbenchTPS(ctx, srv, dir, script, db, sz.PgbenchClients, slice)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		add(v.name, 0, tps)
	}
	if plain := dbs["none"]; plain != "" {
		for _, v := range order {
			if v.name == "none" {
				continue
			}
			r, err := b.pairedRatio(ctx, srv, dir, script, dbs[v.name], plain, 2*slice)
			if err != nil {
				return nil, fmt.Errorf("paired pgbench of %s: %w", v.name, err)
			}
			rs := got[v.name]
			rs[2] = r
			got[v.name] = rs
		}
	}
	half := sz.BulkRows / 2
	done := map[string]int{}
	for _, v := range seq {
		lo := done[v.name]*half + 1
		done[v.name]++
		c, err := connect(ctx, srv, dbs[v.name])
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		_, err = c.Exec(ctx, "INSERT INTO bench_bulk SELECT g, g % 1000, repeat('x', 60) FROM generate_series($1::bigint, $2::bigint) g", lo, lo+half-1)
		el := time.Since(t0)
		c.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("bulk insert on %s: %w", v.name, err)
		}
		add(v.name, 1, float64(half)/el.Seconds())
	}
	return got, nil
}

// pgbenchTPS runs the TPC-B-like script on db for secs seconds with clients clients and
// returns pgbench's TPS.
func (b *bench) pgbenchTPS(ctx context.Context, srv *pgtest.Server, dir, script, db string, clients, secs int) (float64, error) {
	out, err := runCmd(ctx, dir, nil, filepath.Join(b.bin, "pgbench"), "-n", "-M", "prepared",
		"-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(2, clients)), "-T", strconv.Itoa(secs),
		"-D", "scale="+strconv.Itoa(b.cfg.Size.PgbenchScale), "-f", script,
		"-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", db)
	if err != nil {
		return 0, fmt.Errorf("pgbench on %s: %w", db, err)
	}
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps: %s", tail(out, 5))
	}
	return strconv.ParseFloat(m[1], 64)
}

// pairedRatio runs pgbench on a captured database and on the uncaptured one at the same time,
// half the clients each, after a CHECKPOINT, and returns the captured one's TPS ÷ the other's.
// Both share the machine's cores at every moment, so a change in the machine's speed (other
// load on its host) hits both alike and cancels in the ratio, which a comparison of runs made
// one after the other cannot promise. Each database's clients hold rows of their own
// database only, so the two do not wait for each other's locks.
func (b *bench) pairedRatio(ctx context.Context, srv *pgtest.Server, dir, script, captured, plain string, secs int) (float64, error) {
	if err := execSQL(ctx, srv, plain, "CHECKPOINT"); err != nil {
		return 0, err
	}
	clients := max(1, b.cfg.Size.PgbenchClients/2)
	var tps [2]float64
	var errs [2]error
	var wg sync.WaitGroup
	for i, db := range []string{captured, plain} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tps[i], errs[i] = b.pgbenchTPS(ctx, srv, dir, script, db, clients, secs)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return 0, err
	}
	if tps[1] <= 0 {
		return 0, fmt.Errorf("pgbench on %s ran no transaction", plain)
	}
	return tps[0] / tps[1], nil
}

const (
	ratioPaired = "pgbench TPS, capture beside no capture at the same time"
	ratioTPS    = "pgbench TPS with capture ÷ without"
	ratioBulk   = "bulk insert rate with capture ÷ without"
)

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// ---- 2 and 3. apply rate ---------------------------------------------------------------

const benchTable = "CREATE TABLE %s (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL)"

func (b *bench) applyRate(ctx context.Context, kind string) {
	sz := b.cfg.Size
	name := fmt.Sprintf("apply, %s inserts", num(float64(sz.ApplyRows)))
	if kind == "mixed" {
		name = fmt.Sprintf("apply, %s inserts + %s updates", num(float64(sz.ApplyRows/2)), num(float64(sz.ApplyRows/2)))
	}
	b.applySection(ctx, "apply", name, kind, 1)
}

func (b *bench) parallelApply(ctx context.Context) {
	sz := b.cfg.Size
	name := fmt.Sprintf("4 groups, %s inserts + %s updates in all", num(float64(sz.ApplyRows/2)), num(float64(sz.ApplyRows/2)))
	b.applySection(ctx, "parallel", name, "mixed", 4)
}

func (b *bench) applySection(ctx context.Context, sec, name, kind string, groups int) {
	if sec == "apply" && !b.applyWarm {
		b.applyWarm = true
		b.warmApply(ctx, kind)
	}
	for rep := 1; rep <= b.cfg.Size.Reps && ctx.Err() == nil; rep++ {
		for _, s := range rotate(b.systems(), rep-1) {
			if !b.usable(ctx, s) {
				b.unavailable(sec, name, s.name, "rows/s", false, b.disabled[s.name])
				continue
			}
			if m := b.metric(sec, name, s.name, "rows/s", false); m.na != "" {
				continue // failed in an earlier repetition
			}
			var rate, startup, wal float64
			err := b.twice(ctx, s.name, func() (err error) {
				rate, startup, wal, err = b.applyOnce(ctx, s, kind, groups)
				return err
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.log.Warn("apply run failed", "system", s.name, "what", name, "rep", rep, "err", err)
				b.unavailable(sec, name, s.name, "rows/s", false, err.Error())
				continue
			}
			b.record(sec, name, s.name, "rows/s", false, rate)
			b.recordDetail(sec, name+": start → first row on the target", s.name, "s", true, startup)
			if sec == "apply" { // the parallel runs write the same per change
				b.record(sec, walName(name), s.name, "bytes/change", true, wal)
			}
		}
	}
}

// twice runs one measured run, and once more if it fails: a peer's one-off stall should not
// remove it from the rest of the benchmark. The second failure is returned.
func (b *bench) twice(ctx context.Context, system string, run func() error) error {
	err := run()
	if err == nil || ctx.Err() != nil {
		return err
	}
	b.log.Warn("run failed, trying once more", "system", system, "err", err)
	b.note("%s: one run failed and was repeated: %s", label(system), shorten(err.Error(), 200))
	return run()
}

// newRun creates the databases and tables of a run.
func (b *bench) newRun(ctx context.Context, s system, groups int, tableDDL string) (*runEnv, error) {
	cluster := s.name
	if s.cluster != "" {
		cluster = s.cluster
	}
	var p pair
	var err error
	if s.oldProvider {
		if p.prov, err = b.oldServer(ctx, cluster+"-provider", b.cfg.Old); err == nil {
			p.tgt, err = b.server(ctx, cluster+"-target", s.settings)
		}
	} else {
		p, err = b.pair(ctx, cluster, s.settings)
	}
	if err != nil {
		return nil, err
	}
	tag := b.name(s.name)
	dir, err := b.dir(tag)
	if err != nil {
		return nil, err
	}
	e := &runEnv{b: b, pair: p, pdb: "p_" + tag, tdb: "t_" + tag, dir: dir, tag: tag}
	for i := 0; i < groups; i++ {
		e.groups = append(e.groups, []string{fmt.Sprintf("bench_t%d", i)})
	}
	if err := createDB(ctx, p.prov, e.pdb, ""); err != nil {
		return nil, err
	}
	if err := createDB(ctx, p.tgt, e.tdb, ""); err != nil {
		return nil, err
	}
	if tableDDL != "" {
		for _, t := range e.tables() {
			q := fmt.Sprintf(tableDDL, pgx.Identifier{t}.Sanitize())
			if err := execSQL(ctx, p.prov, e.pdb, q); err != nil {
				return nil, err
			}
			if err := execSQL(ctx, p.tgt, e.tdb, q); err != nil {
				return nil, err
			}
		}
	}
	return e, nil
}

func (b *bench) dropRun(ctx context.Context, s system, e *runEnv) {
	if s.noDrop {
		// No DROP DATABASE (it hangs with pglogical loaded); drop the tables to free the disk.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, t := range e.tables() {
			q := "DROP TABLE IF EXISTS " + pgx.Identifier{t}.Sanitize()
			_ = execSQL(ctx, e.pair.prov, e.pdb, q)
			_ = execSQL(ctx, e.pair.tgt, e.tdb, q)
		}
		return
	}
	dropDB(ctx, e.pair.prov, e.pdb)
	dropDB(ctx, e.pair.tgt, e.tdb)
}

// walName names the WAL measurement of an apply measurement.
func walName(apply string) string {
	return "provider WAL per change, " + strings.TrimPrefix(apply, "apply, ")
}

// applyOnce measures one run: the rate (changes per second from start to the last change on
// the target), the start-up time (start to the first change on the target) and the WAL the
// provider wrote per change while the backlog was written (the insert position's move over
// the backlog's transactions: tables, indexes, and the capture's own writes — a trigger
// queue's events and ticks, PgQ's —; a logical-decoding slot writes none).
func (b *bench) applyOnce(ctx context.Context, s system, kind string, groups int) (rate, startup, wal float64, err error) {
	ddl := benchTable
	if s.name == handlersSystem.name {
		ddl = "" // handlerTables
	}
	e, err := b.newRun(ctx, s, groups, ddl)
	if err != nil {
		return 0, 0, 0, err
	}
	defer b.dropRun(ctx, s, e)
	if ddl == "" {
		if err := b.handlerTables(ctx, e); err != nil {
			return 0, 0, 0, fmt.Errorf("tables: %w", err)
		}
	}
	r := s.newRun()
	defer r.close(ctx, e)
	if err := r.setup(ctx, e); err != nil {
		return 0, 0, 0, fmt.Errorf("setup: %w", err)
	}
	w0, err := walInsertPosition(ctx, e.pair.prov, e.pdb)
	if err != nil {
		return 0, 0, 0, err
	}
	n, err := b.backlog(ctx, e, kind)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("backlog: %w", err)
	}
	w1, err := walInsertPosition(ctx, e.pair.prov, e.pdb)
	if err != nil {
		return 0, 0, 0, err
	}
	wal = float64(w1-w0) / float64(n)
	if err := r.settle(ctx, e); err != nil {
		return 0, 0, 0, fmt.Errorf("settle: %w", err)
	}
	// Every run starts from a checkpoint on both sides, as the copy's do: else one requested by
	// the WAL of earlier runs (max_wal_size) lands in whichever run reaches it.
	if err := e.checkpoint(ctx); err != nil {
		return 0, 0, 0, err
	}
	cpu0, cpuErr := sampleCPU(e.pair.prov, e.pair.tgt)
	t0 := time.Now()
	if err := r.start(ctx, e); err != nil {
		return 0, 0, 0, fmt.Errorf("start: %w", err)
	}
	first, t1, err := b.waitMarkers(ctx, e, r.procs(), time.Duration(n/500)*time.Second+2*time.Minute)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wait for the backlog's last row: %w", err)
	}
	use, cpuErr := useSince(cpu0, cpuErr, e.pair.prov, e.pair.tgt)
	cores := []any{"cores_not_measured", cpuErr}
	if cpuErr == nil {
		cores = []any{"cores_busy", round(use.busy), "cores_provider", round(use.clusters[0]),
			"cores_target", round(use.clusters[1]), "cores_rest", round(use.rest())}
	}
	b.log.Info("applied", append([]any{"system", e.tag, "changes", n, "seconds", round(t1.Sub(t0).Seconds()),
		"first_row_after", round(first.Sub(t0).Seconds()), "wal_bytes_per_change", round(wal)}, cores...)...)
	if err := b.compare(ctx, e); err != nil {
		return 0, 0, 0, err
	}
	return float64(n) / t1.Sub(t0).Seconds(), first.Sub(t0).Seconds(), wal, nil
}

// walInsertPosition is the provider cluster's WAL insert position, in bytes.
func walInsertPosition(ctx context.Context, s *pgtest.Server, db string) (int64, error) {
	q := "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), '0/0')::bigint"
	if s.Install.Num < 100000 {
		q = "SELECT pg_catalog.pg_xlog_location_diff(pg_catalog.pg_current_xlog_insert_location(), '0/0')::bigint"
	}
	var n int64
	if err := queryRow(ctx, s, db, q, &n); err != nil {
		return 0, fmt.Errorf("provider WAL position: %w", err)
	}
	return n, nil
}

// backlog writes the provider's load: inserts (and updates of those rows for "mixed") in
// transactions of TxnRows rows, round robin over the tables, then a marker row (id -1) per
// table. It returns the number of changed rows, markers excluded.
func (b *bench) backlog(ctx context.Context, e *runEnv, kind string) (int, error) {
	c, err := connect(ctx, e.pair.prov, e.pdb)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	sz := b.cfg.Size
	tables := e.tables()
	inserts := sz.ApplyRows
	if kind == "mixed" {
		inserts = sz.ApplyRows / 2
	}
	perTable := inserts / len(tables)
	step := sz.TxnRows
	for lo := 1; lo <= perTable; lo += step {
		hi := min(lo+step-1, perTable)
		for _, t := range tables {
			q := fmt.Sprintf("INSERT INTO %s SELECT g, g %% 1000, repeat('x', 60) FROM generate_series($1::bigint, $2::bigint) g", pgx.Identifier{t}.Sanitize())
			if _, err := c.Exec(ctx, q, lo, hi); err != nil {
				return 0, err
			}
		}
	}
	n := perTable * len(tables)
	if kind == "mixed" {
		for lo := 1; lo <= perTable; lo += step {
			hi := min(lo+step-1, perTable)
			for _, t := range tables {
				q := fmt.Sprintf("UPDATE %s SET v = v + 1, pad = 'updated' WHERE id BETWEEN $1 AND $2", pgx.Identifier{t}.Sanitize())
				if _, err := c.Exec(ctx, q, lo, hi); err != nil {
					return 0, err
				}
			}
		}
		n *= 2
	}
	for _, t := range tables {
		if _, err := c.Exec(ctx, fmt.Sprintf("INSERT INTO %s VALUES (-1, 0, 'marker')", pgx.Identifier{t}.Sanitize())); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// waitMarkers waits until the target shows the marker row of every table. It also returns when
// the target first showed any of the backlog's rows (for the log: a consumer's start-up time).
func (b *bench) waitMarkers(ctx context.Context, e *runEnv, watch []*proc, limit time.Duration) (first, last time.Time, err error) {
	c, err := connect(ctx, e.pair.tgt, e.tdb)
	if err != nil {
		return first, last, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var markers, starts []string
	for _, t := range e.tables() {
		markers = append(markers, fmt.Sprintf("(SELECT count(*) FROM %s WHERE id = -1)", pgx.Identifier{t}.Sanitize()))
		starts = append(starts, fmt.Sprintf("(SELECT count(*) FROM %s WHERE id = 1)", pgx.Identifier{t}.Sanitize()))
	}
	q := "SELECT " + strings.Join(markers, " + ") + ", " + strings.Join(starts, " + ")
	want := int64(len(markers))
	last, err = waitFor(ctx, limit, 20*time.Millisecond, watch, func(ctx context.Context) (bool, error) {
		var got, started int64
		err := c.QueryRow(ctx, q).Scan(&got, &started)
		if started > 0 && first.IsZero() {
			first = time.Now()
		}
		return got == want, err
	})
	if first.IsZero() {
		first = last
	}
	return first, last, err
}

// compare checks that the target's tables hold what the provider's do (count, sum of v and
// of the length of pad).
func (b *bench) compare(ctx context.Context, e *runEnv) error {
	for _, t := range e.tables() {
		q := fmt.Sprintf("SELECT count(*), coalesce(sum(v), 0), coalesce(sum(length(pad)), 0) FROM %s", pgx.Identifier{t}.Sanitize())
		var p, g [3]int64
		if err := queryRow(ctx, e.pair.prov, e.pdb, q, &p[0], &p[1], &p[2]); err != nil {
			return err
		}
		if err := queryRow(ctx, e.pair.tgt, e.tdb, q, &g[0], &g[1], &g[2]); err != nil {
			return err
		}
		if p != g {
			return fmt.Errorf("table %s differs after apply: provider (count, sum v, sum len pad) = %v, target = %v", t, p, g)
		}
	}
	return nil
}

func queryRow(ctx context.Context, s *pgtest.Server, db, q string, dest ...any) error {
	c, err := connect(ctx, s, db)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if err := c.QueryRow(ctx, q).Scan(dest...); err != nil {
		return fmt.Errorf("%s: %w", firstLine(q), err)
	}
	return nil
}

// ---- 4. initial copy -------------------------------------------------------------------

const copyTemplate = "copy_template"

// copySource makes, once per cluster, a template database holding bench_t0 of about CopyMB.
func (b *bench) copySource(ctx context.Context, srv *pgtest.Server) (rows int64, bytes int64, err error) {
	c, err := connect(ctx, srv, "postgres")
	if err != nil {
		return 0, 0, err
	}
	var exists bool
	err = c.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", copyTemplate).Scan(&exists)
	c.Close(context.WithoutCancel(ctx))
	if err != nil {
		return 0, 0, err
	}
	if !exists {
		// ≈ 250 bytes a row on disk with a 200-byte pad.
		n := int64(b.cfg.Size.CopyMB * 1e6 / 250)
		b.log.Info("building the copy table", "port", srv.Port, "rows", n)
		if err := createDB(ctx, srv, copyTemplate, ""); err != nil {
			return 0, 0, err
		}
		if err := execSQL(ctx, srv, copyTemplate,
			fmt.Sprintf(benchTable, "bench_t0"),
			fmt.Sprintf("INSERT INTO bench_t0 SELECT g, g %% 1000, md5(g::text) || repeat('y', 168) FROM generate_series(1, %d) g", n),
			"VACUUM ANALYZE bench_t0",
			"CHECKPOINT",
		); err != nil {
			return 0, 0, err
		}
	}
	err = queryRow(ctx, srv, copyTemplate, "SELECT count(*), pg_table_size('bench_t0') FROM bench_t0", &rows, &bytes)
	return rows, bytes, err
}

func (b *bench) initialCopy(ctx context.Context) {
	const sec = "copy"
	name := fmt.Sprintf("initial copy, ≈ %s MB table", num(b.cfg.Size.CopyMB))
	systems := b.systems()
	var pipe system
	for _, s := range systems {
		if s.name == "builtin" {
			pipe = s
		}
	}
	pipe.name = "pipe" // runs on its own clusters
	pipe.newRun = func() replicator { return &pipeRun{} }
	systems = append(systems, pipe)
	// skiff's copy split into ranges (--copy-split-rows: 8 ranges of the table, of its pages from 14, 2 at once),
	// recorded as skiff under a name of its own, beside the same repetition's COPY pipe.
	splitName := name + ", split into 8 ranges, 2 at once"
	var splitSys *system
	for _, s := range systems {
		if s.name == "skiff" {
			sp := s
			rows := int64(b.cfg.Size.CopyMB * 1e6 / 250) // as copySource builds it
			sp.newRun = func() replicator { return &skiffRun{splitRows: max(rows/8, 1)} }
			splitSys = &sp
		}
	}
	b.warmCopy(ctx, systems)
	for rep := 1; rep <= b.cfg.Size.Reps && ctx.Err() == nil; rep++ {
		for _, s := range rotate(systems, rep-1) {
			if s.name != "pipe" && !b.usable(ctx, s) {
				b.unavailable(sec, name, s.name, "MB/s", false, b.disabled[s.name])
				continue
			}
			if m := b.metric(sec, name, s.name, "MB/s", false); m.na != "" {
				continue
			}
			rate, ok := b.copyMeasured(ctx, s, sec, name, rep)
			if ctx.Err() != nil {
				return
			}
			if !ok {
				continue
			}
			if s.name == "pipe" && splitSys != nil {
				b.record(sec, splitName, "pipe", "MB/s", false, rate)
			}
			if s.name == "skiff" && splitSys != nil {
				b.splitCopy(ctx, *splitSys, sec, splitName, rep)
			}
		}
	}
}

// warmApply runs one unmeasured apply of the backlog per system before the first measured
// ones, for the reason warmCopy gives: on fresh clusters skiff's first 1 M inserts took 3.4 s
// against 2.1 s for the next repetitions (session 30, -only apply -reps 5).
func (b *bench) warmApply(ctx context.Context, kind string) {
	for _, s := range b.systems() {
		if ctx.Err() != nil || !b.usable(ctx, s) {
			continue
		}
		b.log.Info("warm-up apply, not measured", "system", s.name)
		if _, _, _, err := b.applyOnce(ctx, s, kind, 1); err != nil && ctx.Err() == nil {
			b.log.Warn("warm-up apply failed", "system", s.name, "err", err)
		}
	}
}

// warmCopy runs one unmeasured copy per system before the measured ones. A cluster's first
// copy of the table creates the target's WAL segment files (its pg_wal went from 1 file to 128
// during one, measured by hand), which every later copy recycles: that first copy ran 77–91
// MB/s against 102–151 for the next ones, so whichever system's clusters had written the least
// WAL before the section paid for it in its first repetition.
func (b *bench) warmCopy(ctx context.Context, systems []system) {
	for _, s := range systems {
		if ctx.Err() != nil || (s.name != "pipe" && !b.usable(ctx, s)) {
			continue
		}
		b.log.Info("warm-up copy, not measured", "system", s.name)
		if _, _, err := b.copyOnce(ctx, s); err != nil && ctx.Err() == nil {
			b.log.Warn("warm-up copy failed", "system", s.name, "err", err)
		}
	}
}

// splitCopy measures skiff's copy split into ranges (subscribe --copy-split-rows), right
// after skiff's copy in one stream.
func (b *bench) splitCopy(ctx context.Context, s system, sec, name string, rep int) {
	if m := b.metric(sec, name, s.name, "MB/s", false); m.na != "" {
		return
	}
	out, _ := exec.CommandContext(ctx, b.cfg.SkiffBin, "subscribe", "--help").CombinedOutput()
	if !strings.Contains(string(out), "--copy-split-rows") {
		b.unavailable(sec, name, s.name, "MB/s", false, "this skiff has no subscribe --copy-split-rows")
		return
	}
	b.copyMeasured(ctx, s, sec, name, rep)
}

// copyMeasured runs one copy of system s (a repeated run on failure, see twice) and records
// its rate under name; a failure is recorded as the reason the measurement is not available.
func (b *bench) copyMeasured(ctx context.Context, s system, sec, name string, rep int) (float64, bool) {
	var rate float64
	var use cpuUse
	err := b.twice(ctx, s.name, func() (err error) {
		rate, use, err = b.copyOnce(ctx, s)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("copy run failed", "system", s.name, "what", name, "rep", rep, "err", err)
			b.unavailable(sec, name, s.name, "MB/s", false, err.Error())
		}
		return 0, false
	}
	b.record(sec, name, s.name, "MB/s", false, rate)
	if len(use.clusters) == 2 {
		b.recordDetail(sec, name+": cores busy (machine)", s.name, "cores", false, use.busy)
		b.recordDetail(sec, name+": cores used by the provider cluster", s.name, "cores", false, use.clusters[0])
		b.recordDetail(sec, name+": cores used by the target cluster", s.name, "cores", false, use.clusters[1])
		b.recordDetail(sec, name+": cores used by kernel threads (writeback)", s.name, "cores", false, use.kernel)
		b.recordDetail(sec, name+": cores used by the rest (the replicator, the bench)", s.name, "cores", false, use.rest())
	}
	return rate, true
}

// copyOnce copies the table once with system s and returns the rate in MB/s and the CPU the
// machine and both clusters used meanwhile.
func (b *bench) copyOnce(ctx context.Context, s system) (float64, cpuUse, error) {
	p, err := b.pair(ctx, s.name, s.settings)
	if err != nil {
		return 0, cpuUse{}, err
	}
	rows, bytes, err := b.copySource(ctx, p.prov)
	if err != nil {
		return 0, cpuUse{}, fmt.Errorf("copy source: %w", err)
	}
	tag := b.name(s.name)
	dir, err := b.dir(tag)
	if err != nil {
		return 0, cpuUse{}, err
	}
	e := &runEnv{b: b, pair: p, pdb: "p_" + tag, tdb: "t_" + tag, dir: dir, tag: tag, copy: true, groups: [][]string{{"bench_t0"}}}
	if err := createDB(ctx, p.prov, e.pdb, copyTemplate); err != nil {
		return 0, cpuUse{}, err
	}
	if err := createDB(ctx, p.tgt, e.tdb, ""); err != nil {
		return 0, cpuUse{}, err
	}
	defer b.dropRun(ctx, s, e)
	if err := execSQL(ctx, p.tgt, e.tdb, fmt.Sprintf(benchTable, "bench_t0")); err != nil {
		return 0, cpuUse{}, err
	}
	r := s.newRun()
	defer r.close(ctx, e)
	if err := r.setup(ctx, e); err != nil {
		return 0, cpuUse{}, fmt.Errorf("setup: %w", err)
	}
	// Both clusters start clean: the target's too, or the previous run's WAL and dirty pages
	// (its copy, the hint bits its compare set) would be written during this one; skiff's
	// target cluster runs two copies in a row (one stream, then split).
	if err := e.checkpoint(ctx); err != nil {
		return 0, cpuUse{}, err
	}
	// The cores used explain the rate; a failure to read them (another user's data directory)
	// loses them, not the measurement.
	before, cpuErr := sampleCPU(p.prov, p.tgt)
	t0 := time.Now()
	if err := r.start(ctx, e); err != nil {
		return 0, cpuUse{}, fmt.Errorf("start: %w", err)
	}
	c, err := connect(ctx, p.tgt, e.tdb)
	if err != nil {
		return 0, cpuUse{}, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	limit := time.Duration(b.cfg.Size.CopyMB/2)*time.Second + 2*time.Minute
	t1, err := waitFor(ctx, limit, 50*time.Millisecond, r.procs(), func(ctx context.Context) (bool, error) {
		var n int64
		err := c.QueryRow(ctx, "SELECT count(*) FROM bench_t0 WHERE id IN (1, $1)", rows).Scan(&n)
		return n == 2, err
	})
	if err != nil {
		return 0, cpuUse{}, fmt.Errorf("wait for the copied rows: %w", err)
	}
	use, cpuErr := useSince(before, cpuErr, p.prov, p.tgt)
	if cpuErr != nil {
		b.log.Warn("cores used by the copy not measured", "system", s.name, "err", cpuErr)
	}
	if err := b.compare(ctx, e); err != nil {
		return 0, cpuUse{}, err
	}
	return float64(bytes) / 1e6 / t1.Sub(t0).Seconds(), use, nil
}

// pipeRun is the reference for the initial copy: psql's COPY TO STDOUT piped into psql's
// COPY FROM STDIN. start runs the whole pipe.
type pipeRun struct{}

func (pipeRun) setup(context.Context, *runEnv) error  { return nil }
func (pipeRun) settle(context.Context, *runEnv) error { return nil }
func (pipeRun) procs() []*proc                        { return nil }
func (pipeRun) close(context.Context, *runEnv)        {}
func (pipeRun) start(ctx context.Context, e *runEnv) error {
	psql := filepath.Join(e.b.bin, "psql")
	sh := fmt.Sprintf(`set -o pipefail; %s -X -q -v ON_ERROR_STOP=1 -c 'COPY bench_t0 TO STDOUT' '%s' | %s -X -q -v ON_ERROR_STOP=1 -c 'COPY bench_t0 FROM STDIN' '%s'`,
		psql, dsn(e.pair.prov, e.pdb), psql, dsn(e.pair.tgt, e.tdb))
	_, err := runCmd(ctx, e.dir, nil, "bash", "-c", sh)
	return err
}

// ---- 5. lag under load -----------------------------------------------------------------

const (
	lagProviderTable = "CREATE TABLE %s (id bigserial PRIMARY KEY, committed_at timestamptz NOT NULL, pad text NOT NULL)"
	lagTargetTable   = "CREATE TABLE %s (id bigint PRIMARY KEY, committed_at timestamptz NOT NULL, pad text NOT NULL, seen_at timestamptz NOT NULL DEFAULT clock_timestamp())"
	lagScript        = "INSERT INTO bench_t0 (committed_at, pad) VALUES (clock_timestamp(), repeat('z', 60));\n"
)

func (b *bench) lagUnderLoad(ctx context.Context) {
	const sec = "lag"
	sz := b.cfg.Size
	for _, rate := range sz.LagRates {
		p50 := fmt.Sprintf("lag p50 at %d commits/s", rate)
		p99 := fmt.Sprintf("lag p99 at %d commits/s", rate)
		for rep := 1; rep <= sz.Reps && ctx.Err() == nil; rep++ {
			for _, s := range rotate(b.systems(), rep-1) {
				if !b.usable(ctx, s) {
					b.unavailable(sec, p50, s.name, "ms", true, b.disabled[s.name])
					b.unavailable(sec, p99, s.name, "ms", true, b.disabled[s.name])
					continue
				}
				if m := b.metric(sec, p50, s.name, "ms", true); m.na != "" {
					continue
				}
				var a, z float64
				err := b.twice(ctx, s.name, func() (err error) {
					a, z, err = b.lagOnce(ctx, s, rate)
					return err
				})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					b.log.Warn("lag run failed", "system", s.name, "rate", rate, "rep", rep, "err", err)
					b.unavailable(sec, p50, s.name, "ms", true, err.Error())
					b.unavailable(sec, p99, s.name, "ms", true, err.Error())
					continue
				}
				b.log.Info("lag", "system", s.name, "rate", rate, "rep", rep, "p50_ms", math.Round(a*1000), "p99_ms", math.Round(z*1000))
				b.record(sec, p50, s.name, "ms", true, a*1000)
				b.record(sec, p99, s.name, "ms", true, z*1000)
			}
		}
	}
}

func (b *bench) lagOnce(ctx context.Context, s system, rate int) (p50, p99 float64, err error) {
	e, err := b.newRun(ctx, s, 1, "")
	if err != nil {
		return 0, 0, err
	}
	defer b.dropRun(ctx, s, e)
	if err := execSQL(ctx, e.pair.prov, e.pdb, fmt.Sprintf(lagProviderTable, "bench_t0")); err != nil {
		return 0, 0, err
	}
	if err := execSQL(ctx, e.pair.tgt, e.tdb, fmt.Sprintf(lagTargetTable, "bench_t0")); err != nil {
		return 0, 0, err
	}
	r := s.newRun()
	defer r.close(ctx, e)
	if err := r.setup(ctx, e); err != nil {
		return 0, 0, fmt.Errorf("setup: %w", err)
	}
	if err := r.start(ctx, e); err != nil {
		return 0, 0, fmt.Errorf("start: %w", err)
	}
	// Warm up: one row through, so that the consumer is known to be applying.
	if err := execSQL(ctx, e.pair.prov, e.pdb, "INSERT INTO bench_t0 (committed_at, pad) VALUES (clock_timestamp(), 'warm-up')"); err != nil {
		return 0, 0, err
	}
	tc, err := connect(ctx, e.pair.tgt, e.tdb)
	if err != nil {
		return 0, 0, err
	}
	defer tc.Close(context.WithoutCancel(ctx))
	if _, err := waitFor(ctx, 2*time.Minute, 50*time.Millisecond, r.procs(), func(ctx context.Context) (bool, error) {
		var n int64
		err := tc.QueryRow(ctx, "SELECT count(*) FROM bench_t0").Scan(&n)
		return n > 0, err
	}); err != nil {
		return 0, 0, fmt.Errorf("warm-up row: %w", err)
	}

	script := filepath.Join(e.dir, "lag.sql")
	if err := os.WriteFile(script, []byte(lagScript), 0o644); err != nil {
		return 0, 0, err
	}
	sz := b.cfg.Size
	loadStart := time.Now()
	// Enough clients that each commits at most 50 times a second: commits wait for their
	// fsync (synchronous_commit on, as in production), which on a shared machine takes
	// several milliseconds; concurrent commits share a flush. The rate reached is logged.
	clients := strconv.Itoa(max(4, rate/50))
	out, err := runCmd(ctx, e.dir, nil, filepath.Join(b.bin, "pgbench"), "-n", "-c", clients, "-j", "2",
		"-R", strconv.Itoa(rate), "-T", strconv.Itoa(int(sz.LagTime.Seconds())), "-f", script,
		"-h", "127.0.0.1", "-p", strconv.Itoa(e.pair.prov.Port), "-U", "postgres", e.pdb)
	if err != nil {
		return 0, 0, err
	}
	if m := tpsRE.FindStringSubmatch(out); m != nil {
		b.log.Info("lag load", "system", s.name, "rate", rate, "tps", m[1])
	}
	if err := firstExited(r.procs()); err != nil {
		return 0, 0, err
	}
	var want int64
	if err := queryRow(ctx, e.pair.prov, e.pdb, "SELECT count(*) FROM bench_t0", &want); err != nil {
		return 0, 0, err
	}
	if _, err := waitFor(ctx, 5*time.Minute, 50*time.Millisecond, r.procs(), func(ctx context.Context) (bool, error) {
		var n int64
		err := tc.QueryRow(ctx, "SELECT count(*) FROM bench_t0").Scan(&n)
		return n >= want, err
	}); err != nil {
		return 0, 0, fmt.Errorf("catch up after the load: %w", err)
	}
	from := loadStart.Add(sz.LagTime / 5)
	var n int64
	err = tc.QueryRow(ctx, `SELECT count(*),
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM seen_at - committed_at)), 0),
		coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM seen_at - committed_at)), 0)
		FROM bench_t0 WHERE committed_at >= $1 AND pad <> 'warm-up'`, from).Scan(&n, &p50, &p99)
	if err != nil {
		return 0, 0, fmt.Errorf("lag percentiles: %w", err)
	}
	if n == 0 {
		return 0, 0, errors.New("no rows measured")
	}
	return p50, p99, nil
}
