package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCutOver follows the README, as a new user would, on tables whose keys come from serial
// columns: quick start (table add naming only the tables, subscribe with the initial copy,
// ticker, worker), writes while it replicates, then the cut-over — stop writes, wait until
// status shows nothing pending and compare exits 0 — and the application's first INSERT on
// the new server. Issue 11: the tables' sequences were not captured, compare said equal, and
// that INSERT failed with a duplicate key.
func TestCutOver(t *testing.T) {
	t.Parallel()
	forEachPair(t, testCutOver)
}

func testCutOver(t *testing.T, provVersion, tgtVersion string) {
	ctx := context.Background()
	p := &pair{prov: pgtest.Shared(t, provVersion).NewDB(t), tgt: pgtest.Shared(t, tgtVersion).NewDB(t)}
	for _, a := range [][]string{{"init", "provider", "--db", p.prov}, {"init", "target", "--db", p.tgt}} {
		out, err := skiff(t, a...)
		require.NoError(t, err, out)
	}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	const ddl = `CREATE TABLE customers (id bigserial PRIMARY KEY, name text);
		CREATE TABLE orders (id serial PRIMARY KEY, customer bigint, amount numeric(10,2));`
	exec1(t, prov, ddl)
	exec1(t, tgt, ddl)
	exec1(t, prov, `INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 20) g;
		INSERT INTO orders (customer, amount) SELECT 1 + g % 20, g FROM generate_series(1, 50) g`)

	out, err := skiff(t, "table", "add", "--db", p.prov, "--queue", "main", "public.orders", "public.customers")
	require.NoError(t, err, out)
	out, err = skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "main")
	require.NoError(t, err, out)
	startProc(t, "ticker", "--db", p.prov, "--poll", "50ms")
	worker := exec.Command(skiffBinary(t), "--log-format", "json", "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "main")
	wout := &procOut{}
	worker.Stdout, worker.Stderr = wout, wout
	require.NoError(t, worker.Start())
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = worker.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- worker.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, wout.String())
		case <-time.After(30 * time.Second):
			_ = worker.Process.Kill()
			<-done
			t.Fatalf("the worker did not stop on SIGTERM:\n%s", wout.String())
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("worker output:\n%.20000s", wout.String())
		}
	})

	// The application writes while skiff replicates.
	for i := range 40 {
		exec1(t, prov, fmt.Sprintf(`INSERT INTO customers (name) VALUES ('new %d');
			INSERT INTO orders (customer, amount) SELECT currval('customers_id_seq'), g FROM generate_series(1, 5) g;
			UPDATE orders SET amount = amount + 1 WHERE id = %d;
			DELETE FROM orders WHERE id = %d`, i, 1+i, 60+i))
	}

	// Cut-over. Writes have stopped; wait until status shows nothing pending.
	pgtest.Eventually(t, 2*time.Minute, "status shows no pending events", func() bool {
		js, err := exec.Command(skiffBinary(t), "status", "--provider", p.prov, "--target", p.tgt, "--json").Output()
		if err != nil {
			return false
		}
		var rep struct {
			Queues []struct {
				PendingEvents int64 `json:"pending_events"`
				Consumers     []struct {
					LagEvents int64 `json:"lag_events"`
				} `json:"consumers"`
			} `json:"queues"`
		}
		require.NoError(t, json.Unmarshal(js, &rep), string(js))
		return len(rep.Queues) == 1 && rep.Queues[0].PendingEvents == 0 && len(rep.Queues[0].Consumers) == 1 &&
			rep.Queues[0].Consumers[0].LagEvents == 0 && allInSync(t, tgt)
	})
	// compare exits 0 once the worker has moved the target's sequences forward (every 2 s).
	pgtest.Eventually(t, time.Minute, "skiff compare exits 0", func() bool {
		out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "main")
		return err == nil
	})
	require.Contains(t, out, `sequence "public"."orders_id_seq"`)
	require.Contains(t, out, `sequence "public"."customers_id_seq"`)
	p.compare(t, "customers", "orders")
	stop()

	// The application now writes to the new server. The same INSERT on the old server (no
	// longer replicated) must make the same row: the target's sequences stand exactly where
	// the provider's do.
	const first = `INSERT INTO customers (name) VALUES ('first after cut-over');
		INSERT INTO orders (customer, amount) VALUES (currval('customers_id_seq'), 1)`
	_, err = tgt.Exec(ctx, first)
	require.NoError(t, err, "the first INSERT on the new server")
	exec1(t, prov, first)
	p.compare(t, "customers", "orders")
}
