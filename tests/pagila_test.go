package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// pagilaDir finds the pagila sample database (schema and data as pg_dump wrote them): the
// directory SKIFF_PAGILA names, else shared/datasets/pagila beside the project root or one of
// its parents (a git worktree of the project sits deeper). It is read in place, never copied
// into the project. The test is skipped without it.
func pagilaDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("SKIFF_PAGILA"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	require.NoError(t, err)
	for dir := filepath.Dir(wd); ; dir = filepath.Dir(dir) { // tests/ → the project root and up
		cand := filepath.Join(dir, "shared", "datasets", "pagila")
		if _, err := os.Stat(filepath.Join(cand, "pagila-schema.sql")); err == nil {
			return cand
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	t.Skip("the pagila sample database is not here: set SKIFF_PAGILA to the directory holding pagila-schema.sql and pagila-data.sql")
	return ""
}

// loadDump runs a pg_dump plain-format file on url: SQL statements, and COPY … FROM stdin
// blocks fed through the COPY protocol. It uses a connection of its own (the dump empties
// search_path).
func loadDump(t *testing.T, url, file string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pg.Connect(ctx, url, "pagila loader")
	require.NoError(t, err)
	defer conn.Close(context.Background())
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var stmts strings.Builder
	flush := func() {
		if strings.TrimSpace(stmts.String()) == "" {
			return
		}
		_, err := conn.PgConn().Exec(ctx, stmts.String()).ReadAll()
		require.NoError(t, err, "%s: %.300s", file, stmts.String())
		stmts.Reset()
	}
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "COPY ") || !strings.HasSuffix(line, "FROM stdin;") {
			stmts.WriteString(line)
			stmts.WriteByte('\n')
			continue
		}
		flush()
		var data strings.Builder
		for sc.Scan() && sc.Text() != `\.` {
			data.WriteString(sc.Text())
			data.WriteByte('\n')
		}
		_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(data.String()), line)
		require.NoError(t, err, "%s: %s", file, line)
	}
	require.NoError(t, sc.Err())
	flush()
}

// pagilaTables are pagila's tables with a primary key, payment (partitioned by month) as one
// table with its partitions.
var pagilaTables = []string{
	"public.actor", "public.address", "public.category", "public.city", "public.country", "public.customer",
	"public.film", "public.film_actor", "public.film_category", "public.inventory", "public.language",
	"public.payment", "public.rental", "public.staff", "public.store",
}

// TestPagila replicates the pagila sample database as a DBA would: the provider loaded from
// its schema and data, the target made from the same schema file only (with its 36 foreign
// keys, its triggers, enums, domains, arrays, tsvector and partitions), every table with a
// primary key (payment, partitioned, as one table) and every sequence added to one queue, then
// skiff subscribe with the initial copy while writers rent films, take payments, change
// customers and films; two referenced tables are resynced during the writes. When the writers
// stop and the worker has caught up, skiff compare finds every table and sequence equal, and
// skiff status lists no problem.
func TestPagila(t *testing.T) {
	t.Parallel()
	dir := pagilaDir(t)
	v := pagilaVersion(t)
	pairs := [][2]string{{v, v}}
	// pagila's schema loads on 12+: the oldest such provider to the newest target, when both
	// are installed (SKIFF_PG_CACHE).
	if _, err := pgtest.Find("12"); err == nil && pgtest.Majors()[0] != "12" {
		pairs = append(pairs, [2]string{"12", pgtest.Majors()[0]})
	}
	for _, vp := range pairs {
		t.Run(vp[0]+"to"+vp[1], func(t *testing.T) {
			t.Parallel()
			testPagila(t, dir, vp[0], vp[1], false)
		})
	}
}

// TestPagilaCreateTables is TestPagila on an empty target database: subscribe
// --create-tables creates pagila's tables, with its enum (mpaa_rating), its domain (year),
// its sequences and indexes, from the provider's definition.
func TestPagilaCreateTables(t *testing.T) {
	t.Parallel()
	dir := pagilaDir(t)
	v := pagilaVersion(t)
	testPagila(t, dir, v, v, true)
}

// pagilaVersion is the server the pagila tests use where others use the default one: pagila's
// schema loads on 12 on, so the default server when it is 12 or newer, else the newest
// installed 12+ (a suite run with 8.4 as the default). Without one the test is skipped.
func pagilaVersion(t *testing.T) string {
	t.Helper()
	newer := majorsFrom(12)
	if len(newer) == 0 {
		t.Skipf("pagila's schema needs PostgreSQL 12 or newer; installed: %v", pgtest.Majors())
	}
	if f, err := strconv.ParseFloat(pgtest.DefaultVersion(), 64); err == nil && f >= 12 {
		return ""
	}
	return newer[0]
}

func testPagila(t *testing.T, dir, provVersion, tgtVersion string, createTables bool) {
	p := &pair{prov: pgtest.Shared(t, provVersion).NewDB(t), tgt: pgtest.Shared(t, tgtVersion).NewDB(t)}
	schema, data := filepath.Join(dir, "pagila-schema.sql"), filepath.Join(dir, "pagila-data.sql")
	loadDump(t, p.prov, schema)
	loadDump(t, p.prov, data)
	if !createTables {
		loadDump(t, p.tgt, schema)
	}
	for _, args := range [][]string{{"init", "provider", "--db", p.prov}, {"init", "target", "--db", p.tgt}} {
		mustSkiff(t, args...)
	}
	prov, tgt := connect(t, p.prov), connect(t, p.tgt)
	if !createTables {
		var fks int
		require.NoError(t, tgt.QueryRow(context.Background(), `SELECT count(*) FROM pg_constraint WHERE contype = 'f'`).Scan(&fks))
		t.Logf("target has %d foreign keys", fks)
		require.GreaterOrEqual(t, fks, 36)
	}
	rows, err := prov.Query(context.Background(), `SELECT 'public.' || relname FROM pg_class
		WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace ORDER BY 1`)
	require.NoError(t, err)
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, seqs)
	out, err := skiff(t, append([]string{"table", "add", "--db", p.prov, "--queue", "pagila"}, append(pagilaTables, seqs...)...)...)
	require.NoError(t, err, out)

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startProc(t, "ticker", "--db", p.prov, "--poll", "50ms")
	wctx, wstop := context.WithCancel(ctx)
	defer wstop()
	var txs atomic.Int64
	for i := range 2 {
		pagilaWriter(t, wctx, &wg, p.prov, uint64(i), &txs)
	}

	sub := []string{"subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "pagila", "--consumer", "c1"}
	if createTables {
		sub = append(sub, "--create-tables")
	}
	out, err = skiff(t, sub...)
	require.NoError(t, err, out)
	if createTables {
		for _, want := range []string{`created type "public"."mpaa_rating"`, `created type "public"."year"`, `created table "public"."film"`,
			`created sequence "public"."film_film_id_seq"`, `create index: CREATE INDEX "film_fulltext_idx" ON "public"."film" USING gist (fulltext)`} {
			require.Contains(t, out, want)
		}
	}
	for _, tb := range pagilaTables {
		require.Contains(t, out, "catching-up", tb)
	}
	startProc(t, "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "pagila", "--consumer", "c1",
		"--min-backoff", "100ms", "--max-backoff", "1s")
	pgtest.Eventually(t, 3*time.Minute, "every table in sync", func() bool { return allInSync(t, tgt) })

	// Resync two referenced tables under writes: rental (payments reference it) and customer.
	out, err = skiff(t, "table", "resync", "--provider", p.prov, "--target", p.tgt, "--queue", "pagila", "--consumer", "c1",
		"public.rental", "public.customer")
	require.NoError(t, err, out)
	pgtest.Eventually(t, 3*time.Minute, "rental and customer copied again and in sync", func() bool { return allInSync(t, tgt) })
	start := time.Now()
	pgtest.Eventually(t, time.Minute, "writers run a while longer", func() bool {
		return time.Since(start) > 3*time.Second && txs.Load() > 200
	})
	wstop()
	wg.Wait()
	require.False(t, t.Failed())
	t.Logf("%d writer transactions", txs.Load())
	p.inSync(t, time.Minute, "pagila")
	p.caughtUp(t, 2*time.Minute, "pagila")
	p.sequencesSynced(t, time.Minute, "pagila")

	out, err = skiff(t, "compare", "--provider", p.prov, "--target", p.tgt, "--queue", "pagila")
	require.NoError(t, err, out)
	t.Logf("skiff compare:\n%s", out)
	for _, tb := range pagilaTables {
		require.Contains(t, out, `"public"."`+strings.TrimPrefix(tb, "public.")+`"`)
	}
	var refs int
	payment := "payment"
	if createTables {
		// The partitions are created as tables of their own (no parent on the target).
		var parts []string
		for _, tb := range pagilaTables {
			if strings.HasPrefix(tb, "public.payment_") {
				parts = append(parts, "SELECT rental_id FROM "+tb)
			}
		}
		if len(parts) > 0 { // payment captured as one table: created as one table
			payment = "(" + strings.Join(parts, " UNION ALL ") + ")"
		}
	}
	require.NoError(t, tgt.QueryRow(ctx, `SELECT count(*) FROM `+payment+` p WHERE NOT EXISTS (SELECT 1 FROM rental r WHERE r.rental_id = p.rental_id)`).Scan(&refs))
	require.Zero(t, refs, "every payment's rental is on the target")
	out, err = skiff(t, "status", "--provider", p.prov, "--target", p.tgt)
	require.NoError(t, err, out)
	cancel()
}

// pagilaWriter runs pagila's everyday business on the provider until ctx ends: rentals and
// their payments (routed to payment's July partition), returns, customers and films changed
// (the provider's triggers set last_update and recompute film's tsvector), actors cast, a
// rental cancelled with its payment.
func pagilaWriter(t *testing.T, ctx context.Context, wg *sync.WaitGroup, url string, seed uint64, txs *atomic.Int64) {
	c := connect(t, url)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 11))
		for n := 0; ctx.Err() == nil; n++ {
			err := writeTx(ctx, c, func(tx pgx.Tx) error {
				return pagilaWrite(ctx, tx, rng, int(seed)*1_000_000+n)
			})
			if err != nil {
				var pgErr *pgconn.PgError
				if ctx.Err() != nil {
					return
				}
				if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "23505") {
					continue
				}
				t.Errorf("pagila writer: %v", err)
				return
			}
			txs.Add(1)
		}
	}()
}

func pagilaWrite(ctx context.Context, tx pgx.Tx, rng *rand.Rand, n int) error {
	customer, inventory, staff := 1+rng.IntN(599), 1+rng.IntN(4581), 1+rng.IntN(2)
	var err error
	switch r := rng.IntN(10); {
	case r < 4: // a rental and its payment
		var rental int
		if err = tx.QueryRow(ctx, `INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id)
			VALUES (now() + $1 * interval '1 millisecond', $2, $3, $4) RETURNING rental_id`, n, inventory, customer, staff).Scan(&rental); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)
			VALUES ($1, $2, $3, $4, '2022-07-20 00:00:00+00'::timestamptz + $5 * interval '1 second')`,
			customer, staff, rental, fmt.Sprintf("%d.%02d", rng.IntN(12), rng.IntN(100)), n%500000)
	case r < 5: // a return
		_, err = tx.Exec(ctx, `UPDATE rental SET return_date = now() WHERE rental_id = (SELECT max(rental_id) - $1 FROM rental)`, rng.IntN(100))
	case r < 7: // a customer changes
		_, err = tx.Exec(ctx, `UPDATE customer SET email = lower(first_name) || $2 || '@example.org', activebool = NOT activebool
			WHERE customer_id = $1`, customer, fmt.Sprint(n))
	case r < 8: // a film is described anew: its fulltext trigger fires on the provider only
		_, err = tx.Exec(ctx, `UPDATE film SET description = description || ' Again.', rental_rate = rental_rate + 0.01,
			special_features = array_append(special_features, 'Trailers') WHERE film_id = $1`, 1+rng.IntN(1000))
	case r < 9: // an actor is cast, renamed
		actor, film := 1+rng.IntN(200), 1+rng.IntN(1000)
		if _, err = tx.Exec(ctx, `DELETE FROM film_actor WHERE actor_id = $1 AND film_id = $2`, actor, film); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, `INSERT INTO film_actor (actor_id, film_id) VALUES ($1, $2)`, actor, film); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE actor SET last_name = upper(last_name) WHERE actor_id = $1`, actor)
	default: // a rental cancelled with its payment
		var rental *int
		if err = tx.QueryRow(ctx, `SELECT max(rental_id) FROM rental WHERE rental_id > 16049`).Scan(&rental); err != nil || rental == nil {
			return err
		}
		if _, err = tx.Exec(ctx, `DELETE FROM payment WHERE rental_id = $1`, *rental); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM rental WHERE rental_id = $1`, *rental)
	}
	return err
}
