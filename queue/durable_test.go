package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestTicksAndBatchesCommitDurably: where the provider's sessions default to
// synchronous_commit = off, the COMMIT of a tick — whichever way it is made: the ticker's poll
// (TickQueues), Tick, ForceTick — and of a batch handed out (NextBatch) still waits for the WAL
// flush. A consumer sees a tick only once it is flushed, so a provider crash cannot take back
// a batch a target already holds; and a batch a worker may have applied is handed out again
// after a crash with the same ticks. Deferred constraint triggers on skiff.tick and
// skiff.consumer record the setting each of those transactions commits under (they run at
// COMMIT); the session's own setting is left as it was.
func TestTicksAndBatchesCommitDurably(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE t (id int PRIMARY KEY)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	_, err = RegisterConsumer(ctx, c, "q", "c")
	require.NoError(t, err)
	exec(t, c, `CREATE TABLE public.commit_setting (n serial, what text, setting text)`)
	exec(t, c, `CREATE FUNCTION public.log_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_TABLE_NAME = 'tick' THEN
				INSERT INTO public.commit_setting (what, setting) VALUES ('tick', current_setting('synchronous_commit'));
			ELSIF NEW.sub_batch IS NOT NULL AND OLD.sub_batch IS NULL THEN
				INSERT INTO public.commit_setting (what, setting) VALUES ('batch', current_setting('synchronous_commit'));
			END IF;
			RETURN NULL;
		END $$`)
	exec(t, c, `CREATE CONSTRAINT TRIGGER log_commit_setting AFTER INSERT ON skiff.tick
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE PROCEDURE public.log_commit_setting()`)
	exec(t, c, `CREATE CONSTRAINT TRIGGER log_commit_setting AFTER UPDATE ON skiff.consumer
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE PROCEDURE public.log_commit_setting()`)

	s := p.conn(t)
	exec(t, s, `SET synchronous_commit = off`)
	want := "local" // from 9.1; on before
	if pg.ServerVersion(s) < 90100 {
		want = "on"
	}
	// last returns the last setting recorded and how many were.
	last := func() (what, setting string, n int) {
		require.NoError(t, c.QueryRow(ctx, `SELECT what, setting, (SELECT count(*) FROM public.commit_setting)
			FROM public.commit_setting ORDER BY n DESC LIMIT 1`).Scan(&what, &setting, &n))
		return what, setting, n
	}
	// A tick is due once an event is pending and the last tick is old enough: the poll is
	// repeated until it ticks, as the ticker does.
	tick := map[string]func() (bool, error){
		"TickQueues": func() (bool, error) {
			ticked, err := TickQueues(ctx, s, []string{"q"})
			return len(ticked) == 1, err
		},
		"Tick": func() (bool, error) {
			_, ok, err := Tick(ctx, s, "q")
			return ok, err
		},
		"ForceTick": func() (bool, error) { _, err := ForceTick(ctx, s, "q"); return true, err },
	}
	for id, how := range []string{"TickQueues", "Tick", "ForceTick"} {
		exec(t, c, `INSERT INTO t VALUES ($1)`, id) // an event pending
		pgtest.Eventually(t, time.Minute, how+" ticks", func() bool {
			ok, err := tick[how]()
			require.NoError(t, err, how)
			return ok
		})
		what, setting, n := last()
		require.Equal(t, []any{"tick", id + 1}, []any{what, n}, "%s: one tick", how)
		require.Equal(t, want, setting, "%s: the setting the tick committed under", how)
		require.NoError(t, s.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting))
		require.Equal(t, "off", setting, "%s: the session's setting afterwards", how)
	}

	id, ok, err := NextBatch(ctx, s, "q", "c", 0)
	require.NoError(t, err)
	require.True(t, ok, "a batch is open after three ticks")
	what, setting, n := last()
	require.Equal(t, []any{"batch", 4}, []any{what, n}, "batch %d opened", id)
	require.Equal(t, want, setting, "the setting the batch's opening committed under")
	require.NoError(t, s.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting))
	require.Equal(t, "off", setting, "the session's setting after NextBatch")
}
