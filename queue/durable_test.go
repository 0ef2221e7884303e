package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestTicksCommitDurably: where the provider's sessions default to synchronous_commit = off,
// a tick's COMMIT still waits for the WAL flush (durableTick), whichever way it is made: the
// ticker's poll (TickQueues), Tick, ForceTick. A consumer sees a tick only once it is flushed,
// so a provider crash cannot take back a batch a target already holds. A trigger on skiff.tick
// records the setting each tick is written under; the session's own setting is left as it was.
func TestTicksCommitDurably(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newProvider(t, "")
	c := p.conn(t)
	exec(t, c, `CREATE TABLE t (id int PRIMARY KEY)`)
	_, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
	require.NoError(t, err)
	exec(t, c, `CREATE TABLE public.tick_setting (n serial, setting text)`)
	exec(t, c, `CREATE FUNCTION public.log_tick_setting() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.tick_setting (setting) VALUES (current_setting('synchronous_commit'));
			RETURN NULL;
		END $$`)
	exec(t, c, `CREATE TRIGGER log_tick_setting AFTER INSERT ON skiff.tick FOR EACH ROW EXECUTE PROCEDURE public.log_tick_setting()`)

	ticker := p.conn(t)
	exec(t, ticker, `SET synchronous_commit = off`)
	want := "local" // from 9.1; on before
	if pg.ServerVersion(ticker) < 90100 {
		want = "on"
	}
	// A tick is due once an event is pending and the last tick is old enough: the poll is
	// repeated until it ticks, as the ticker does.
	tick := map[string]func() (bool, error){
		"TickQueues": func() (bool, error) {
			ticked, err := TickQueues(ctx, ticker, []string{"q"})
			return len(ticked) == 1, err
		},
		"Tick": func() (bool, error) {
			_, ok, err := Tick(ctx, ticker, "q")
			return ok, err
		},
		"ForceTick": func() (bool, error) { _, err := ForceTick(ctx, ticker, "q"); return true, err },
	}
	for id, how := range []string{"TickQueues", "Tick", "ForceTick"} {
		exec(t, c, `INSERT INTO t VALUES ($1)`, id) // an event pending
		pgtest.Eventually(t, time.Minute, how+" ticks", func() bool {
			ok, err := tick[how]()
			require.NoError(t, err, how)
			return ok
		})
		var setting string
		var n int
		require.NoError(t, c.QueryRow(ctx, `SELECT setting, (SELECT count(*) FROM public.tick_setting) FROM public.tick_setting ORDER BY n DESC LIMIT 1`).Scan(&setting, &n), how)
		require.Equal(t, id+1, n, "%s: one tick", how)
		require.Equal(t, want, setting, "%s: the setting the tick was committed under", how)
		require.NoError(t, ticker.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting))
		require.Equal(t, "off", setting, "%s: the session's setting afterwards", how)
	}
}
