package queue

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCaptureAndRead goes through the whole path on every installed version: table add,
// writes of every kind, a tick, a batch read through Source, finish.
func TestCaptureAndRead(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, v)
			c := p.conn(t)
			exec(t, c, `CREATE TABLE public.t (id int PRIMARY KEY, name text, n numeric)`)
			res, err := AddTable(ctx, c, "q", TableSpec{Name: "t"})
			require.NoError(t, err)
			require.True(t, res.QueueCreated)
			require.Equal(t, change.Table{Schema: "public", Name: "t"}, res.Table)
			ok, err := RegisterConsumer(ctx, c, "q", "c1")
			require.NoError(t, err)
			require.True(t, ok)

			w := p.conn(t)
			exec(t, w, `INSERT INTO t VALUES (1, 'a', 1.5), (2, NULL, NULL), (3, '', 3)`)
			exec(t, w, `UPDATE t SET name = 'b' WHERE id = 1`)
			exec(t, w, `UPDATE t SET id = 20 WHERE id = 2`)
			exec(t, w, `DELETE FROM t WHERE id = 3`)
			exec(t, w, `TRUNCATE t`)
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)

			src, err := NewSource(ctx, p.conn(t), SourceConfig{Queue: "q", Consumer: "c1"})
			require.NoError(t, err)
			b, evs := readBatch(t, src)
			require.NotZero(t, b.ID)
			require.Less(t, b.Prev.Tick, b.End.Tick)
			require.Len(t, evs, 7)
			ops := ""
			for _, e := range evs {
				ops += string(rune(e.Op))
			}
			require.Equal(t, "IIIUUDT", ops)
			require.Equal(t, []string{"id", "name", "n"}, evs[0].Columns)
			require.Equal(t, []string{"id"}, evs[0].Key)
			require.Equal(t, []change.Value{change.Text("1"), change.Text("a"), change.Text("1.5")}, evs[0].Values)
			require.Equal(t, []change.Value{change.Text("2"), change.Null, change.Null}, evs[1].Values)
			require.Equal(t, []change.Value{change.Text("3"), change.Text(""), change.Text("3")}, evs[2].Values)
			require.Nil(t, evs[3].OldKey)
			require.Equal(t, []change.Value{change.Text("2")}, evs[4].OldKey)
			require.Equal(t, change.Text("20"), evs[4].Values[0])
			require.Equal(t, change.Table{Schema: "public", Name: "t"}, evs[6].Table)
			for i := 1; i < len(evs); i++ {
				require.Less(t, evs[i-1].ID, evs[i].ID)
			}

			// Installing again over a live queue changes nothing.
			cfg, err := pg.ParseConfig(p.url, "skiff-test")
			require.NoError(t, err)
			up, err := migrate.Up(ctx, cfg, migrate.Provider)
			require.NoError(t, err)
			require.Empty(t, up.Applied)
			exec(t, w, `INSERT INTO t VALUES (100, 'after re-run', 0)`)
			_, err = ForceTick(ctx, c, "q")
			require.NoError(t, err)
			_, evs = readBatch(t, src)
			require.Equal(t, []string{"100"}, ids(evs))
		})
	}
}

func TestNamesSkiffObject(t *testing.T) {
	for msg, want := range map[string]bool{
		`relation "skiff.captured_table" does not exist`:  true,
		`function skiff.queue_id(unknown) does not exist`: true,
		`skiff.x`:                             true,
		`relation "myskiff.t" does not exist`: false,
		`relation "my_skiff.t" does not exist, nor skiff.y`: true,
		`relation "public.t" does not exist`:                false,
	} {
		require.Equal(t, want, namesSkiffObject(msg), msg)
	}
}
