package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// runEnv is one measured run of one system: a provider and a target database on the system's
// own clusters, the tables in groups (one group = one queue, publication or replication set,
// applied by one consumer), and a directory for configuration files and logs.
type runEnv struct {
	b      *bench
	pair   pair
	pdb    string
	tdb    string
	groups [][]string
	copy   bool // the consumer starts with an initial copy of the provider's rows
	dir    string
	tag    string // unique within the run; names slots and subscriptions
}

// checkpoint runs CHECKPOINT on the run's provider and target databases: a measured run
// starts with both clusters clean.
func (e *runEnv) checkpoint(ctx context.Context) error {
	if err := execSQL(ctx, e.pair.prov, e.pdb, "CHECKPOINT"); err != nil {
		return err
	}
	return execSQL(ctx, e.pair.tgt, e.tdb, "CHECKPOINT")
}

func (e *runEnv) tables() []string {
	var out []string
	for _, g := range e.groups {
		out = append(out, g...)
	}
	return out
}

// replicator drives one system through a run. The harness creates the databases and tables,
// calls setup, writes the provider's load (a backlog) when the run measures apply, calls settle
// and then start, and measures from start to the moment the target shows the last change.
type replicator interface {
	// setup installs capture on the provider and a consumer on the target that does not
	// apply anything yet.
	setup(ctx context.Context, e *runEnv) error
	// settle runs after the provider's load has ended, before the clock starts.
	settle(ctx context.Context, e *runEnv) error
	// start makes the consumers apply (or copy); it returns once they are started.
	start(ctx context.Context, e *runEnv) error
	// procs are the programs whose exit means the run failed.
	procs() []*proc
	// close stops every program and drops what holds resources on the clusters (slots).
	close(ctx context.Context, e *runEnv)
}

// system is one replicator under test.
type system struct {
	name  string // short name: skiff, londiste, builtin, pglogical
	label string // as printed
	// cluster names the clusters the system runs on ("": its name): a variant of another
	// system shares that system's clusters.
	cluster string
	// settings are extra postgresql.conf settings of the system's clusters.
	settings map[string]string
	// oldProvider: the provider runs the -old version (the target the main one).
	oldProvider bool
	// noDrop: never DROP DATABASE on these clusters (pglogical).
	noDrop    bool
	newRun    func() replicator
	available func(ctx context.Context, b *bench) error
}

// rotate returns xs started at offset rep: each repetition runs the systems in another order, so
// that no system always runs first (after a checkpoint, on a cold cache) or last.
func rotate[T any](xs []T, rep int) []T {
	if len(xs) == 0 {
		return xs
	}
	k := rep % len(xs)
	return append(append([]T(nil), xs[k:]...), xs[:k]...)
}

func (b *bench) systems() []system {
	all := []system{
		{name: "skiff", label: "skiff", newRun: func() replicator { return &skiffRun{} }, available: skiffAvailable},
		{name: "skiff-logical", label: "skiff, logical-decoding source", newRun: func() replicator { return &skiffRun{logical: true} },
			available: skiffLogicalAvailable},
		{name: "londiste", label: "Londiste3 + PgQ", newRun: func() replicator { return &londisteRun{} }, available: londisteAvailable},
		{name: "builtin", label: "built-in logical replication", newRun: func() replicator { return &builtinRun{} },
			available: func(context.Context, *bench) error { return nil }},
		{name: "pglogical", label: "pglogical",
			settings: map[string]string{"shared_preload_libraries": "pglogical", "track_commit_timestamp": "on"},
			noDrop:   true, newRun: func() replicator { return &pglogicalRun{} }, available: pglogicalAvailable},
	}
	var out []system
	for _, s := range all {
		if b.cfg.Systems[s.name] {
			out = append(out, s)
		}
	}
	return out
}

// usable checks once whether a system can run here; a system that cannot is skipped with its
// reason from then on.
func (b *bench) usable(ctx context.Context, s system) bool {
	b.mu.Lock()
	reason, known := b.disabled[s.name]
	b.mu.Unlock()
	if known {
		return reason == ""
	}
	err := s.available(ctx, b)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.disabled[s.name] = err.Error()
		b.log.Warn("system not available", "system", s.name, "reason", err)
		return false
	}
	b.disabled[s.name] = ""
	return true
}

func extensionInstalled(b *bench, name string) error {
	dir := "/usr/share/postgresql/" + b.cfg.Version + "/extension"
	if out, err := exec.Command(filepath.Join(b.bin, "pg_config"), "--sharedir").Output(); err == nil {
		dir = filepath.Join(strings.TrimSpace(string(out)), "extension")
	}
	if _, err := os.Stat(filepath.Join(dir, name+".control")); err != nil {
		return fmt.Errorf("extension %s is not installed in %s (run scripts/bench-peers.sh as root)", name, dir)
	}
	return nil
}

func londisteAvailable(_ context.Context, b *bench) error {
	for _, p := range []string{"londiste", "pgqd"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s not found (run scripts/bench-peers.sh as root)", p)
		}
	}
	for _, ext := range []string{"pgq", "pgq_node", "londiste"} {
		if err := extensionInstalled(b, ext); err != nil {
			return err
		}
	}
	return nil
}

func pglogicalAvailable(_ context.Context, b *bench) error {
	return extensionInstalled(b, "pglogical")
}

// ---- built-in logical replication -------------------------------------------------------

// builtinRun is publication/subscription. For a backlog the subscription is created disabled
// (which creates its slot on the provider), the load is written, and ENABLE starts the clock.
type builtinRun struct{ subs []string }

func (r *builtinRun) setup(ctx context.Context, e *runEnv) error {
	for i, g := range e.groups {
		pub := fmt.Sprintf("pub_%s_%d", e.tag, i)
		sub := fmt.Sprintf("sub_%s_%d", e.tag, i)
		var ts []string
		for _, t := range g {
			ts = append(ts, pgx.Identifier{"public", t}.Sanitize())
		}
		if err := execSQL(ctx, e.pair.prov, e.pdb, "CREATE PUBLICATION "+pgx.Identifier{pub}.Sanitize()+" FOR TABLE "+strings.Join(ts, ", ")); err != nil {
			return err
		}
		q := fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (enabled = false, copy_data = %t)",
			pgx.Identifier{sub}.Sanitize(), dsn(e.pair.prov, e.pdb), pgx.Identifier{pub}.Sanitize(), e.copy)
		if err := execSQL(ctx, e.pair.tgt, e.tdb, q); err != nil {
			return err
		}
		r.subs = append(r.subs, sub)
	}
	return nil
}

func (r *builtinRun) settle(context.Context, *runEnv) error { return nil }

func (r *builtinRun) start(ctx context.Context, e *runEnv) error {
	var stmts []string
	for _, s := range r.subs {
		stmts = append(stmts, "ALTER SUBSCRIPTION "+pgx.Identifier{s}.Sanitize()+" ENABLE")
	}
	return execSQL(ctx, e.pair.tgt, e.tdb, stmts...)
}

func (r *builtinRun) procs() []*proc { return nil }

func (r *builtinRun) close(ctx context.Context, e *runEnv) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	for _, s := range r.subs {
		if err := execSQL(ctx, e.pair.tgt, e.tdb, "DROP SUBSCRIPTION IF EXISTS "+pgx.Identifier{s}.Sanitize()); err != nil {
			e.b.log.Warn("drop subscription", "sub", s, "err", err)
		}
	}
}

// ---- pglogical ------------------------------------------------------------------------------

// pglogicalRun is pglogical 2: one replication set and one subscription per group. For a backlog
// the subscription is created, waited for (replicating), disabled, the load written, and
// alter_subscription_enable starts the clock. For a copy, create_subscription with
// synchronize_data starts it.
type pglogicalRun struct{ subs []string }

func (r *pglogicalRun) setup(ctx context.Context, e *runEnv) error {
	if err := execSQL(ctx, e.pair.prov, e.pdb,
		"CREATE EXTENSION pglogical",
		fmt.Sprintf("SELECT pglogical.create_node(node_name := 'provider', dsn := '%s')", dsn(e.pair.prov, e.pdb)),
	); err != nil {
		return err
	}
	for i, g := range e.groups {
		set := fmt.Sprintf("set_%d", i)
		stmts := []string{fmt.Sprintf("SELECT pglogical.create_replication_set('%s')", set)}
		for _, t := range g {
			stmts = append(stmts, fmt.Sprintf("SELECT pglogical.replication_set_add_table('%s', '%s'::regclass)", set, pgx.Identifier{"public", t}.Sanitize()))
		}
		if err := execSQL(ctx, e.pair.prov, e.pdb, stmts...); err != nil {
			return err
		}
	}
	if err := execSQL(ctx, e.pair.tgt, e.tdb,
		"CREATE EXTENSION pglogical",
		fmt.Sprintf("SELECT pglogical.create_node(node_name := 'subscriber', dsn := '%s')", dsn(e.pair.tgt, e.tdb)),
	); err != nil {
		return err
	}
	if e.copy {
		return nil
	}
	if err := r.create(ctx, e, false); err != nil {
		return err
	}
	var stmts []string
	for _, s := range r.subs {
		stmts = append(stmts, fmt.Sprintf("SELECT pglogical.alter_subscription_disable('%s', true)", s))
	}
	return execSQL(ctx, e.pair.tgt, e.tdb, stmts...)
}

// create makes one subscription per group, one after the other: each waits until it
// replicates (for a backlog) before the next is created, since concurrent slot creations on
// the provider were seen to stall one subscription in "initializing" for minutes.
func (r *pglogicalRun) create(ctx context.Context, e *runEnv, copyData bool) error {
	for i := range e.groups {
		sub := fmt.Sprintf("sub_%d", i)
		q := fmt.Sprintf(`SELECT pglogical.create_subscription(subscription_name := '%s', provider_dsn := '%s',
			replication_sets := ARRAY['set_%d'], synchronize_structure := false, synchronize_data := %t, forward_origins := '{}')`,
			sub, dsn(e.pair.prov, e.pdb), i, copyData)
		if err := execSQL(ctx, e.pair.tgt, e.tdb, q); err != nil {
			return err
		}
		r.subs = append(r.subs, sub)
		if !copyData {
			if err := r.waitReplicating(ctx, e, sub); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *pglogicalRun) waitReplicating(ctx context.Context, e *runEnv, sub string) error {
	c, err := connect(ctx, e.pair.tgt, e.tdb)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	_, err = waitFor(ctx, 2*time.Minute, 50*time.Millisecond, nil, func(ctx context.Context) (bool, error) {
		var status string
		err := c.QueryRow(ctx, "SELECT status FROM pglogical.show_subscription_status($1)", sub).Scan(&status)
		return status == "replicating", err
	})
	if err != nil {
		return fmt.Errorf("pglogical subscription %s: %w", sub, err)
	}
	return nil
}

func (r *pglogicalRun) settle(context.Context, *runEnv) error { return nil }

func (r *pglogicalRun) start(ctx context.Context, e *runEnv) error {
	if e.copy {
		return r.create(ctx, e, true)
	}
	var stmts []string
	for _, s := range r.subs {
		stmts = append(stmts, fmt.Sprintf("SELECT pglogical.alter_subscription_enable('%s', true)", s))
	}
	return execSQL(ctx, e.pair.tgt, e.tdb, stmts...)
}

func (r *pglogicalRun) procs() []*proc { return nil }

func (r *pglogicalRun) close(ctx context.Context, e *runEnv) {
	ctx = context.WithoutCancel(ctx)
	exec := func(srv *pgtest.Server, db string, stmts ...string) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return execSQL(ctx, srv, db, stmts...)
	}
	for _, s := range r.subs {
		if err := exec(e.pair.tgt, e.tdb, fmt.Sprintf("SELECT pglogical.drop_subscription('%s', true)", s)); err != nil {
			e.b.log.Warn("drop pglogical subscription", "sub", s, "err", err)
		}
	}
	// Drop the nodes and the extension too, so that the database's pglogical manager worker
	// has nothing left to do (worker slots are limited by max_worker_processes).
	for _, side := range []struct {
		srv  *pgtest.Server
		db   string
		node string
	}{{e.pair.tgt, e.tdb, "subscriber"}, {e.pair.prov, e.pdb, "provider"}} {
		if err := exec(side.srv, side.db,
			fmt.Sprintf("SELECT pglogical.drop_node('%s', true)", side.node),
			"DROP EXTENSION IF EXISTS pglogical CASCADE"); err != nil {
			e.b.log.Warn("drop pglogical node", "node", side.node, "err", err)
		}
	}
}

// oldSkiff is skiff with a provider of the -old version, measured in the large-transaction
// section when -old is given.
func (b *bench) oldSkiff() system {
	return system{name: "skiff-old", label: "skiff, provider PostgreSQL " + b.cfg.Old, oldProvider: true,
		newRun: func() replicator { return &skiffRun{} }, available: skiffAvailable}
}
