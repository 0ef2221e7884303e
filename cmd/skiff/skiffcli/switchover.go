package skiffcli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/catalog"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/target"
	"github.com/skiffdb/skiff/queue"
)

// blockVersion is the provider schema version that has skiff.write_blocked (the write block).
const blockVersion = 10

// SwitchoverCmd is `skiff switchover`: the moment of a move from OLD (the provider) to NEW
// (the target). After its checks it blocks writes to the queue's tables on OLD, waits until
// NEW has applied every write made before, moves NEW's sequences forward, compares, and with
// --reverse installs replication NEW → OLD from that instant.
type SwitchoverCmd struct {
	Provider    string        `help:"OLD: the database queue Q replicates from today (libpq connection string or URI). Its tables are blocked for writes." required:"" env:"SKIFF_PROVIDER"`
	Target      string        `help:"NEW: the database that replicates queue Q from OLD and takes the writes from now on." required:"" env:"SKIFF_TARGET"`
	Queue       string        `help:"Queue (table group) to switch over; a trigger queue." required:"" env:"SKIFF_QUEUE"`
	Consumer    string        `help:"Consumer of NEW's subscription, when NEW holds several of the queue (default: NEW's own, as the worker finds it)."`
	Reverse     bool          `help:"Also install replication NEW → OLD for the same tables under the same queue name, starting at the switch (provider schema and capture on NEW, OLD subscribed with its tables in sync, no copy); then run skiff ticker --db NEW and skiff worker --provider NEW --target OLD --queue Q. The way back."`
	DryRun      bool          `help:"Run the checks and print the plan; change nothing."`
	Release     bool          `help:"Drop the write block on OLD once NEW is ready (default: keep it, so that an application still pointed at OLD fails loudly, SQLSTATE 25006, instead of writing where nothing replicates). Not with --reverse."`
	Unblock     bool          `help:"Only drop the write block an earlier switchover kept on OLD's tables of the queue, and exit."`
	LockTimeout time.Duration `help:"How long blocking waits for the transactions writing to OLD's tables before it gives up (nothing changed)." default:"10s"`
	Wait        time.Duration `help:"How long to wait for NEW to apply OLD's last writes before giving up (OLD writable again)." default:"2m"`
	Parallel    int           `help:"Tables compared at once." default:"2"`
	SkipCompare bool          `help:"Leave the tables out of the compare step (sequences are still moved and checked): the freeze then does not grow with the tables' size. Run skiff compare before the switchover instead."`
}

// switchCheck is one check of a switchover and its result.
type switchCheck struct {
	name string
	ok   bool
	info string // what was found, or why it failed
}

// switchover holds what the checks found, for the steps.
type switchover struct {
	c          *SwitchoverCmd
	rt         *Runtime
	pcfg, tcfg *pgx.ConnConfig
	old, new   *pgx.Conn
	consumer   string // NEW's subscription's consumer on OLD
	routes     []change.Route
	captured   []queue.CapturedTable
	newBlocked []change.Table // NEW's tables of the queue blocked by an earlier switchover
	checks     []switchCheck
	undo       []func(ctx context.Context) error
}

func (s *switchover) check(name string, ok bool, format string, args ...any) bool {
	s.checks = append(s.checks, switchCheck{name: name, ok: ok, info: fmt.Sprintf(format, args...)})
	return ok
}

// newAt names NEW in messages: host, port and database, never a user or password.
func newAt(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// Run switches over, or with --dry-run only checks, or with --unblock only unblocks OLD.
func (c *SwitchoverCmd) Run(rt *Runtime) error {
	ctx := rt.Ctx
	if c.Release && c.Reverse {
		return errors.New("--release with --reverse: writes on OLD would be captured by OLD's queue while the reverse replication writes the same tables; keep OLD blocked (the reverse worker writes through the block)")
	}
	if c.Unblock && (c.Reverse || c.Release || c.DryRun) {
		return errors.New("--unblock only drops the write block on OLD: give it alone")
	}
	s := &switchover{c: c, rt: rt}
	var err error
	if s.pcfg, err = pg.ParseConfig(c.Provider, "skiff switchover"); err != nil {
		return err
	}
	if s.tcfg, err = pg.ParseConfig(c.Target, "skiff switchover"); err != nil {
		return err
	}
	if s.old, err = pg.ConnectConfig(ctx, s.pcfg.Copy()); err != nil {
		return fmt.Errorf("OLD (provider): %w", err)
	}
	defer func() { s.old.Close(context.WithoutCancel(ctx)) }() // s.old may be replaced (live)
	if c.Unblock {
		return s.unblockOld(ctx)
	}
	if s.new, err = pg.ConnectConfig(ctx, s.tcfg.Copy()); err != nil {
		return fmt.Errorf("NEW (target): %w", err)
	}
	defer func() { s.new.Close(context.WithoutCancel(ctx)) }()

	checkErr := s.runChecks(ctx)
	out := rt.Out
	fmt.Fprintf(out, "skiff switchover of queue %s: OLD %s → NEW %s\n", c.Queue, pg.Describe(s.pcfg), pg.Describe(s.tcfg))
	var failed []string
	for _, ch := range s.checks {
		mark := "ok  "
		if !ch.ok {
			mark = "FAIL"
			failed = append(failed, ch.name+": "+ch.info)
		}
		fmt.Fprintf(out, "check %s %-32s %s\n", mark, ch.name, ch.info)
	}
	if checkErr != nil {
		return fmt.Errorf("switchover checks: %w (nothing changed)", checkErr)
	}
	if len(failed) > 0 {
		return fmt.Errorf("switchover refused, nothing changed: %s", strings.Join(failed, "; "))
	}
	s.printPlan()
	if c.DryRun {
		fmt.Fprintln(out, "dry run: nothing changed")
		return nil
	}
	return s.run(ctx)
}

// unblockOld drops a kept write block from OLD's tables of the queue.
func (s *switchover) unblockOld(ctx context.Context) error {
	if err := migrate.Require(ctx, s.old, migrate.Provider, pg.Describe(s.pcfg), blockVersion); err != nil {
		return err
	}
	done, err := queue.UnblockWrites(ctx, s.old, s.c.Queue)
	if err != nil {
		return fmt.Errorf("OLD (provider): %w", err)
	}
	if len(done) == 0 {
		fmt.Fprintf(s.rt.Out, "no table of queue %s is blocked on %s\n", s.c.Queue, pg.Describe(s.pcfg))
		return nil
	}
	for _, t := range done {
		fmt.Fprintf(s.rt.Out, "%s: writes allowed again\n", t)
	}
	return nil
}

// runChecks runs every check, read-only. It returns an error only when a check could not be
// made (a connection failed); a failed check is a switchCheck with ok false. Checks that
// depend on a failed one are left out.
func (s *switchover) runChecks(ctx context.Context) error {
	c := s.c
	oldName, newName := pg.Describe(s.pcfg), pg.Describe(s.tcfg)
	// Schemas.
	oldProv, _ := migrate.Version(ctx, s.old, migrate.Provider)
	newTgt, _ := migrate.Version(ctx, s.new, migrate.Target)
	newProv, _ := migrate.Version(ctx, s.new, migrate.Provider)
	oldTgt, _ := migrate.Version(ctx, s.old, migrate.Target)

	// Direction: OLD is the provider of the queue, NEW its target.
	forward, why, err := s.replicates(ctx, s.old, s.new, oldProv, newTgt, c.Consumer, c.Target, c.Provider)
	if err != nil {
		return err
	}
	if !forward {
		back, _, err := s.replicates(ctx, s.new, s.old, newProv, oldTgt, "", c.Provider, c.Target)
		if err != nil {
			return err
		}
		if back {
			s.check("direction", false, "OLD and NEW are swapped: queue %s replicates from %s to %s, so --provider must name %s (the database written to until now) and --target %s",
				c.Queue, newName, oldName, newName, oldName)
			return nil
		}
		s.check("direction", false, "%s", why)
		return nil
	}
	s.check("direction", true, "OLD is the provider of queue %s, NEW replicates it as consumer %s", c.Queue, s.consumer)
	if !s.check("provider schema on OLD", oldProv >= blockVersion, "%s", pick(oldProv >= blockVersion, fmt.Sprintf("version %d", oldProv),
		fmt.Sprintf("version %d, the write block needs %d: skiff init provider --db OLD", oldProv, blockVersion))) {
		return nil
	}
	kind, err := queue.QueueKind(ctx, s.old, c.Queue)
	if err != nil {
		return fmt.Errorf("OLD: %w", err)
	}
	if !s.check("trigger queue", !kind.Logical(), "queue %s is %s", c.Queue, queueKindText(kind)) {
		return nil
	}
	if s.captured, err = queue.Tables(ctx, s.old, c.Queue); err != nil {
		return fmt.Errorf("OLD: %w", err)
	}
	sub := target.Key{Queue: c.Queue, Consumer: s.consumer}
	id, err := target.SubscriptionID(ctx, s.new, sub)
	if err != nil {
		return fmt.Errorf("NEW: subscription %s/%s: %w", c.Queue, s.consumer, err)
	}
	if s.routes, err = target.Routes(ctx, s.new, id); err != nil {
		return fmt.Errorf("NEW: read the tables of subscription %s/%s: %w", c.Queue, s.consumer, err)
	}

	// Tables: every captured table replicated, all in sync.
	var notSync, notTaken []string
	for _, t := range s.captured {
		i := slices.IndexFunc(s.routes, func(r change.Route) bool { return r.Source == t.Table })
		switch {
		case i < 0:
			notTaken = append(notTaken, t.Table.String()+" (not subscribed)")
		case s.routes[i].Handler == handlers.SkipName:
			notTaken = append(notTaken, t.Table.String()+" (skipped)")
		case s.routes[i].State != change.StateInSync:
			notSync = append(notSync, fmt.Sprintf("%s is %s", t.Table, s.routes[i].State))
		}
	}
	s.check("tables replicated to NEW", len(notTaken) == 0, "%s", pick(len(notTaken) == 0,
		fmt.Sprintf("%d tables", len(s.captured)),
		"NEW does not take "+strings.Join(notTaken, ", ")+": blocking OLD would leave no server to write them to"))
	s.check("tables in sync", len(notSync) == 0, "%s", pick(len(notSync) == 0,
		"every table in sync", strings.Join(notSync, ", ")+": wait until skiff status shows every table in sync"))

	// The worker.
	running, holder, err := apply.WorkerRunning(ctx, s.new, id)
	if err != nil {
		return fmt.Errorf("NEW: %w", err)
	}
	if s.check("worker running", running, "%s", pick(running, holder,
		fmt.Sprintf("no worker holds subscription %s/%s on NEW: start skiff worker --provider OLD --target NEW --queue %s", c.Queue, s.consumer, c.Queue))) && running {
		v, err := target.ReadVersion(ctx, s.new)
		if err != nil {
			return fmt.Errorf("NEW: %w", err)
		}
		_, msg, err := target.LastError(ctx, s.new, v, sub)
		if err != nil {
			return fmt.Errorf("NEW: %w", err)
		}
		failing := msg != nil && *msg != ""
		s.check("worker applying", !failing, "%s", pick(!failing, "no error", "the worker fails: "+deref(msg)+" (skiff status; skiff event show)"))
	}
	infos, err := queue.GetConsumerInfo(ctx, s.old)
	if err != nil {
		return fmt.Errorf("OLD: %w", err)
	}
	for _, in := range infos {
		if in.Queue == c.Queue && in.Consumer == s.consumer {
			s.check("lag", true, "%s behind OLD's last tick, ~%d events pending (the write freeze lasts at least as long as NEW needs to apply them)",
				in.Lag.Round(time.Millisecond), in.PendingEvents)
		}
	}

	// Sequences: every sequence the tables draw from is captured (else NEW's is not moved).
	cc := s.compareCmd()
	pairs, err := cc.pairs(ctx, s.pcfg, s.tcfg, s.rt.Registry)
	if err != nil {
		return err
	}
	seqs, err := cc.sequences(ctx, s.pcfg, s.tcfg, pairs)
	if err != nil {
		return err
	}
	var missing []string
	for _, sq := range seqs {
		if sq.notCaptured {
			missing = append(missing, fmt.Sprintf("%s (used by %s; skiff table add --db OLD --queue %s %s)", sq.name, sq.usedBy, c.Queue, shellWord(sqlName(sq.name))))
		}
	}
	s.check("sequences captured", len(missing) == 0, "%s", pick(len(missing) == 0,
		fmt.Sprintf("%d sequences", len(seqs)), "not captured, NEW's would not be moved: "+strings.Join(missing, ", ")))

	// NEW blocked by an earlier switchover (the way back): unblocked when NEW is ready.
	if newProv >= blockVersion {
		if s.newBlocked, err = queue.BlockedTables(ctx, s.new, c.Queue); err != nil && !errors.Is(err, queue.ErrNoQueue) {
			return fmt.Errorf("NEW: %w", err)
		}
	}

	if c.Reverse {
		s.reverseChecks(ctx, newProv, oldTgt)
	}
	return nil
}

// reverseChecks checks what --reverse needs.
func (s *switchover) reverseChecks(ctx context.Context, newProv, oldTgt int64) {
	c := s.c
	var mapped []string
	for _, r := range s.routes {
		if r.Dest != r.Source || r.Handler != "" {
			mapped = append(mapped, fmt.Sprintf("%s → %s", r.Source, r.Dest)+handlerText(r.Handler))
		}
	}
	s.check("reverse: same tables", len(mapped) == 0, "%s", pick(len(mapped) == 0, "every table under its own name, no handler",
		"the reverse replication takes each table back under its own name, and "+strings.Join(mapped, ", ")))
	if newProv > 0 {
		_, err := queue.QueueKind(ctx, s.new, c.Queue)
		s.check("reverse: NEW has no queue "+c.Queue, err != nil, "%s", pick(err != nil, "free",
			"NEW already has queue "+c.Queue+": the reverse replication exists (skiff status --provider NEW); switch over without --reverse"))
	}
	if oldTgt > 0 {
		names, err := target.Consumers(ctx, s.old, c.Queue)
		if err == nil {
			s.check("reverse: OLD has no subscription", len(names) == 0, "%s", pick(len(names) == 0, "free",
				"OLD already subscribes to queue "+c.Queue+" (as "+strings.Join(names, ", ")+"): the reverse replication exists; switch over without --reverse"))
		}
	}
	for _, side := range []struct {
		name, why string
		conn      *pgx.Conn
	}{
		{"OLD", "the reverse worker writes OLD as this role: without it OLD's capture triggers would queue its writes again and the write block would stop them", s.old},
		{"NEW", "the forward worker writes NEW as this role: without it NEW's new capture triggers would send its writes back", s.new},
	} {
		may, err := catalog.MayReplica(ctx, side.conn)
		if err != nil {
			s.check("reverse: replica role on "+side.name, false, "%v", err)
			continue
		}
		s.check("reverse: replica role on "+side.name, may, "%s", pick(may, "the role may SET session_replication_role = replica",
			"the role "+side.conn.Config().User+" may not SET session_replication_role: "+side.why+"; connect as a superuser (or GRANT SET ON PARAMETER session_replication_role on 15+)"))
	}
}

// replicates says whether the database prov is the provider of the queue that tgt replicates
// (a subscription on tgt whose consumer prov's queue has registered); when not, why. It sets
// s.consumer when it does.
func (s *switchover) replicates(ctx context.Context, prov, tgt *pgx.Conn, provVersion, tgtVersion int64, explicit, tgtURL, provURL string) (bool, string, error) {
	q := s.c.Queue
	pn, tn := pg.Describe(prov.Config()), pg.Describe(tgt.Config())
	if provVersion == 0 {
		return false, fmt.Sprintf("skiff's provider schema is not installed on %s (--provider names OLD, the database queue %s replicates from)", pn, q), nil
	}
	if _, err := queue.QueueKind(ctx, prov, q); err != nil {
		if errors.Is(err, queue.ErrNoQueue) {
			return false, fmt.Sprintf("%s has no queue %s (--provider names OLD, the database queue %s replicates from)", pn, q, q), nil
		}
		return false, "", fmt.Errorf("%s: %w", pn, err)
	}
	if tgtVersion < identityVersion {
		return false, fmt.Sprintf("skiff's target schema is not installed (or older than %d) on %s (--target names NEW, the database replicating queue %s)", identityVersion, tn, q), nil
	}
	name, found, err := consumerFor(ctx, tgt, explicit, q, tgtURL, provURL)
	if err != nil {
		return false, "", fmt.Errorf("%s: %w", tn, err)
	}
	if !found {
		return false, fmt.Sprintf("%s has no subscription of queue %s (skiff subscribe --provider OLD --target NEW --queue %s)", tn, q, q), nil
	}
	infos, err := queue.GetConsumerInfo(ctx, prov)
	if err != nil {
		return false, "", fmt.Errorf("%s: %w", pn, err)
	}
	if !slices.ContainsFunc(infos, func(in queue.ConsumerInfo) bool { return in.Queue == q && in.Consumer == name }) {
		return false, fmt.Sprintf("the subscription of queue %s on %s (consumer %s) is not registered on %s: it replicates from another provider", q, tn, name, pn), nil
	}
	s.consumer = name
	return true, "", nil
}

func (s *switchover) compareCmd() *CompareCmd {
	return &CompareCmd{Provider: s.c.Provider, Target: s.c.Target, Queue: s.c.Queue, Consumer: s.consumer, Parallel: s.c.Parallel}
}

// printPlan prints the steps a switchover will take.
func (s *switchover) printPlan() {
	out := s.rt.Out
	fmt.Fprintln(out, "plan:")
	prep := "read the tables to compare"
	if s.c.Reverse {
		prep += "; install the provider schema on NEW and the target schema on OLD (inert until used)"
	}
	steps := []string{
		prep,
		fmt.Sprintf("block writes to the %d tables of queue %s on OLD (trigger skiff_block_q<id>: SQLSTATE 25006 \"moved to %s\"); the write freeze starts", len(s.captured), s.c.Queue, newAt(s.tcfg)),
		"force a tick on OLD and wait until NEW has applied it (at most " + s.c.Wait.String() + ")",
		"move NEW's sequences forward to at least OLD's values",
		"compare every table (row count and checksum) and sequence",
	}
	if s.c.SkipCompare {
		steps[len(steps)-1] = "compare the sequences (--skip-compare: not the tables)"
	}
	if s.c.Reverse {
		steps = append(steps, fmt.Sprintf("install replication NEW → OLD: provider schema and capture of the same tables as queue %s on NEW, consumer registered at the current tick, OLD subscribed with every table in sync (no copy)", s.c.Queue))
	}
	if len(s.newBlocked) > 0 {
		steps = append(steps, fmt.Sprintf("drop the write block an earlier switchover left on %d tables of NEW", len(s.newBlocked)))
	}
	steps = append(steps, "NEW ready: the write freeze ends")
	if s.c.Release {
		steps = append(steps, "drop the write block on OLD (--release)")
	} else {
		steps = append(steps, "keep OLD's tables blocked (skiff switchover --unblock lifts it)")
	}
	for i, st := range steps {
		fmt.Fprintf(out, "  %d. %s\n", i+1, st)
	}
	fmt.Fprintln(out, "  a failed step undoes the steps before it and leaves OLD writable")
}

// step runs one step, printing its duration.
func (s *switchover) step(name string, fn func() (string, error)) error {
	start := time.Now()
	detail, err := fn()
	d := time.Since(start)
	if err != nil {
		fmt.Fprintf(s.rt.Out, "step %-24s FAILED after %.3fs: %v\n", name, d.Seconds(), err)
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(s.rt.Out, "step %-24s %8.3fs  %s\n", name, d.Seconds(), detail)
	s.rt.Log.Info("switchover step done", "step", name, "duration", d)
	return nil
}

// live returns conn, or a new connection to cfg when conn was closed (pgx closes a
// connection whose query a cancelled context interrupted: the undo must still reach it).
func live(ctx context.Context, conn **pgx.Conn, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	if !(*conn).IsClosed() {
		return *conn, nil
	}
	c, err := pg.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, err
	}
	*conn = c
	return c, nil
}

// rollback undoes the steps done, newest first, whatever ctx says (a signal must still leave
// OLD writable).
func (s *switchover) rollback(ctx context.Context, cause error) error {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	errs := []error{cause}
	for i := len(s.undo) - 1; i >= 0; i-- {
		if err := s.undo[i](uctx); err != nil {
			errs = append(errs, fmt.Errorf("UNDO FAILED: %w", err))
		}
	}
	if len(errs) == 1 {
		fmt.Fprintln(s.rt.Out, "switchover failed: every step undone, OLD is writable")
		// %v, not %w: an interrupted switchover (context.Canceled) is a failure, exit 1.
		return fmt.Errorf("switchover failed, undone (OLD is writable): %v", cause)
	}
	return fmt.Errorf("switchover failed and could not be undone whole: %v", errors.Join(errs...))
}

// run takes the steps.
func (s *switchover) run(ctx context.Context) error {
	c := s.c
	q := c.Queue
	// Before the freeze: what does not change while OLD is blocked.
	cc := s.compareCmd()
	var pairs []compare.Pair
	err := s.step("prepare", func() (string, error) {
		var err error
		if pairs, err = cc.pairs(ctx, s.pcfg, s.tcfg, s.rt.Registry); err != nil {
			return "", err
		}
		if err := cc.addFilters(ctx, s.pcfg, pairs); err != nil {
			return "", err
		}
		if !c.Reverse {
			return fmt.Sprintf("%d tables to compare", len(pairs)), nil
		}
		// The schemas the reverse replication needs; inert until it is installed (left in
		// place if the switchover fails).
		if _, err := migrate.Up(ctx, s.tcfg, migrate.Provider); err != nil {
			return "", fmt.Errorf("install the provider schema on NEW: %w", err)
		}
		if _, err := migrate.Up(ctx, s.pcfg, migrate.Target); err != nil {
			return "", fmt.Errorf("install the target schema on OLD: %w", err)
		}
		return fmt.Sprintf("%d tables to compare; provider schema on NEW and target schema on OLD installed", len(pairs)), nil
	})
	if err != nil {
		return err // nothing blocked yet
	}
	freeze := time.Now()
	var tables []change.Table
	err = s.step("block writes on OLD", func() (string, error) {
		msg := fmt.Sprintf("this database moved to %s (queue %s, %s UTC): connect there", newAt(s.tcfg), q, time.Now().UTC().Format(time.DateTime))
		err := pgx.BeginFunc(ctx, s.old, func(tx pgx.Tx) error {
			setting := "lock_timeout"
			if pg.ServerVersion(s.old) < 90300 {
				setting = "statement_timeout" // lock_timeout is 9.3+
			}
			if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config($1, $2, true)`, setting, fmt.Sprint(c.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			var err error
			tables, err = queue.BlockWrites(ctx, tx, q, msg)
			return err
		})
		if err != nil {
			return "", err
		}
		s.undo = append(s.undo, func(ctx context.Context) error {
			conn, err := live(ctx, &s.old, s.pcfg)
			if err == nil {
				_, err = queue.UnblockWrites(ctx, conn, q)
			}
			if err != nil {
				return fmt.Errorf("unblock OLD's tables (skiff switchover --unblock): %w", err)
			}
			fmt.Fprintf(s.rt.Out, "undo: writes to OLD's tables allowed again\n")
			return nil
		})
		return fmt.Sprintf("%d tables blocked", len(tables)), nil
	})
	if err != nil {
		return s.rollback(ctx, err)
	}
	sub := target.Key{Queue: q, Consumer: s.consumer}
	err = s.step("wait for NEW", func() (string, error) {
		tick, err := queue.ForceTick(ctx, s.old, q)
		if err != nil {
			return "", fmt.Errorf("OLD: %w", err)
		}
		id, err := target.SubscriptionID(ctx, s.new, sub)
		if err != nil {
			return "", fmt.Errorf("NEW: subscription %s/%s: %w", q, s.consumer, err)
		}
		deadline := time.Now().Add(c.Wait)
		lastCheck := time.Now()
		for {
			pos, err := target.PositionOf(ctx, s.new, sub)
			if err != nil {
				return "", fmt.Errorf("NEW: position of %s/%s: %w", q, s.consumer, err)
			}
			if pos.Tick >= tick {
				return fmt.Sprintf("NEW applied tick %d", tick), nil
			}
			if time.Since(lastCheck) > time.Second {
				lastCheck = time.Now()
				if running, _, err := apply.WorkerRunning(ctx, s.new, id); err == nil && !running {
					return "", fmt.Errorf("the worker of subscription %s/%s stopped (NEW is at tick %d, not yet at %d)", q, s.consumer, pos.Tick, tick)
				}
			}
			if time.Now().After(deadline) {
				why := ""
				if v, err := target.ReadVersion(ctx, s.new); err == nil {
					if _, msg, err := target.LastError(ctx, s.new, v, sub); err == nil && msg != nil && *msg != "" {
						why = "; the worker fails: " + *msg
					}
				}
				return "", fmt.Errorf("NEW is at tick %d after %s, not yet at %d%s", pos.Tick, c.Wait, tick, why)
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return s.rollback(ctx, err)
	}
	err = s.step("move sequences on NEW", func() (string, error) {
		seqs, err := cc.sequences(ctx, s.pcfg, s.tcfg, pairs)
		if err != nil {
			return "", err
		}
		var all []compare.Sequence
		for _, sq := range seqs {
			if sq.notCaptured {
				return "", fmt.Errorf("sequence %s (used by %s) is not captured by queue %s", sq.name, sq.usedBy, q)
			}
			all = append(all, sq.Sequence)
		}
		moved, err := compare.MoveSequences(ctx, s.tcfg, all)
		if err != nil {
			return "", fmt.Errorf("NEW: %w", err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%d sequences, %d moved", len(all), len(moved))
		for _, m := range moved {
			fmt.Fprintf(&b, "; %s %s → %s", m.Sequence, m.Target, m.Provider)
		}
		return b.String(), nil
	})
	if err != nil {
		return s.rollback(ctx, err)
	}
	err = s.step("compare", func() (string, error) {
		var results []compare.Result
		if !c.SkipCompare {
			var err error
			if results, err = compare.Run(ctx, compare.Config{Provider: s.pcfg, Target: s.tcfg, Pairs: pairs, Parallel: c.Parallel, Log: s.rt.Log}); err != nil {
				return "", err
			}
		}
		var differ []string
		for _, r := range results {
			if r.Err != nil || !r.Equal {
				differ = append(differ, fmt.Sprintf("%s %s", r.Pair, r.Summary()))
			}
		}
		seqs, err := cc.sequences(ctx, s.pcfg, s.tcfg, pairs)
		if err != nil {
			return "", err
		}
		for _, sq := range seqs {
			switch {
			case sq.notCaptured:
				differ = append(differ, "sequence "+sq.name.String()+" not captured")
			case sq.Err != nil:
				differ = append(differ, fmt.Sprintf("sequence %s: %v", sq.name, sq.Err))
			case sq.Behind:
				differ = append(differ, fmt.Sprintf("sequence %s BEHIND (OLD %s, NEW %s)", sq.name, sq.Provider, sq.Target))
			}
		}
		if len(differ) > 0 {
			return "", fmt.Errorf("OLD and NEW differ: %s (skiff compare --rows and skiff repair show and fix the rows)", strings.Join(differ, "; "))
		}
		if c.SkipCompare {
			return fmt.Sprintf("tables not compared (--skip-compare), %d sequences in order", len(seqs)), nil
		}
		return fmt.Sprintf("%d tables equal, %d sequences in order", len(results), len(seqs)), nil
	})
	if err != nil {
		return s.rollback(ctx, err)
	}
	if c.Reverse {
		if err := s.step("reverse replication", func() (string, error) { return s.installReverse(ctx) }); err != nil {
			return s.rollback(ctx, err)
		}
	}
	if len(s.newBlocked) > 0 {
		err = s.step("unblock NEW", func() (string, error) {
			done, err := queue.UnblockWrites(ctx, s.new, q)
			if err != nil {
				return "", fmt.Errorf("NEW: %w", err)
			}
			return fmt.Sprintf("%d tables of NEW writable again", len(done)), nil
		})
		if err != nil {
			return s.rollback(ctx, err)
		}
	}
	frozen := time.Since(freeze)
	out := s.rt.Out
	fmt.Fprintf(out, "NEW ready: write freeze %.3f s (writes blocked on OLD → NEW ready)\n", frozen.Seconds())
	s.rt.Log.Info("switchover done", "queue", q, "write_freeze", frozen)
	if c.Release {
		// NEW is ready: a failure here leaves OLD blocked, which the message says how to lift.
		err := s.step("unblock OLD", func() (string, error) {
			done, err := queue.UnblockWrites(ctx, s.old, q)
			if err != nil {
				return "", fmt.Errorf("OLD: %w (skiff switchover --unblock lifts the block)", err)
			}
			return fmt.Sprintf("%d tables of OLD writable again", len(done)), nil
		})
		if err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "writes to queue %s's tables on OLD stay blocked: skiff switchover --unblock --provider OLD --target NEW --queue %s lifts it\n", q, q)
	}
	fmt.Fprintf(out, "next: point the application at NEW (%s)", newAt(s.tcfg))
	if c.Reverse {
		fmt.Fprintf(out, "; stop the worker OLD → NEW; run skiff ticker --db NEW and skiff worker --provider NEW --target OLD --queue %s", q)
	}
	fmt.Fprintln(out)
	return nil
}

// installReverse installs replication NEW → OLD at this instant: NEW holds every write OLD
// took (compared), nothing writes NEW yet but the forward worker, whose session is a replica
// one (checked): its writes fire no capture trigger. The queue is made on NEW with its
// capture triggers and the consumer registered at its first tick, so every write to NEW's
// tables from now on is an event after the consumer's position; OLD's subscription starts
// there with every table in sync.
func (s *switchover) installReverse(ctx context.Context) (string, error) {
	q := s.c.Queue
	name, err := apply.DefaultConsumer(ctx, s.old)
	if err != nil {
		return "", fmt.Errorf("OLD: %w", err)
	}
	// Sequences no table draws from are captured on their own.
	users, err := queue.SequenceUsers(ctx, s.old, q)
	if err != nil {
		return "", fmt.Errorf("OLD: %w", err)
	}
	seqs, err := queue.Sequences(ctx, s.old, q)
	if err != nil {
		return "", fmt.Errorf("OLD: %w", err)
	}
	var specs []queue.TableSpec
	var routes []change.Route
	for _, t := range s.captured {
		spec := queue.TableSpec{Name: pgx.Identifier{t.Table.Schema, t.Table.Name}.Sanitize(), Where: t.Where}
		_, key, err := providerColumns(ctx, s.new, t.Table)
		if err != nil {
			return "", fmt.Errorf("NEW: %w", err)
		}
		if !slices.Equal(key, t.Key) {
			spec.Key = t.Key // OLD's --key; NEW checks it is kept unique
		}
		specs = append(specs, spec)
		routes = append(routes, change.Route{Source: t.Table, Dest: t.Table, State: change.StateInSync})
	}
	for _, sq := range seqs {
		if queue.SequenceBelongs(users[sq], nil) {
			specs = append(specs, queue.TableSpec{Name: pgx.Identifier{sq.Schema, sq.Name}.Sanitize()})
		}
	}
	if _, err := queue.AddTables(ctx, s.new, q, specs); err != nil {
		return "", fmt.Errorf("NEW: capture the tables in queue %s: %w", q, err)
	}
	s.undo = append(s.undo, func(ctx context.Context) error {
		conn, err := live(ctx, &s.new, s.tcfg)
		if err == nil {
			_, err = queue.DropQueue(ctx, conn, q, true)
		}
		if err != nil {
			return fmt.Errorf("NEW: drop queue %s made for the reverse replication: %w", q, err)
		}
		fmt.Fprintf(s.rt.Out, "undo: queue %s dropped on NEW\n", q)
		return nil
	})
	if _, err := queue.RegisterConsumer(ctx, s.new, q, name); err != nil {
		return "", fmt.Errorf("NEW: register consumer %s: %w", name, err)
	}
	infos, err := queue.GetConsumerInfo(ctx, s.new)
	if err != nil {
		return "", fmt.Errorf("NEW: %w", err)
	}
	var tick int64
	for _, in := range infos {
		if in.Queue == q && in.Consumer == name {
			tick = in.LastTick
		}
	}
	if _, err := apply.Subscribe(ctx, s.old, apply.Subscription{Queue: q, Consumer: name, Provider: pg.Describe(s.tcfg), Tick: tick}, routes); err != nil {
		return "", fmt.Errorf("OLD: subscribe to queue %s of NEW: %w", q, err)
	}
	s.undo = append(s.undo, func(ctx context.Context) error {
		conn, err := live(ctx, &s.old, s.pcfg)
		if err == nil {
			_, err = apply.Unsubscribe(ctx, conn, q, name, true, nil)
		}
		if err != nil {
			return fmt.Errorf("OLD: remove the reverse subscription %s/%s: %w", q, name, err)
		}
		return nil
	})
	return fmt.Sprintf("queue %s on NEW captures %d tables; OLD subscribed as consumer %s from tick %d, every table in sync", q, len(s.captured), name, tick), nil
}

// queueKindText describes a queue's source for the trigger-queue check.
func queueKindText(k queue.Kind) string {
	if k.Logical() {
		return "a logical-decoding queue (plugin " + k.Plugin + "): switchover works on trigger queues only (its write block, tick and reverse capture are the trigger queue's); move a logical queue by hand as docs/cutover.md says"
	}
	return "a trigger queue"
}

// pick is ok when cond holds, else bad.
func pick(cond bool, ok, bad string) string {
	if cond {
		return ok
	}
	return bad
}

func handlerText(h string) string {
	if h == "" {
		return ""
	}
	return " (handler " + h + ")"
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
