package queue

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestCaptureGaps: a capture trigger disabled (by name, or with all the table's user
// triggers), set to fire on replicas only, or dropped leaves writes to its table out of the
// queue, silently; CaptureGaps names the table, the operations no longer captured, the
// triggers and the fix. A trigger enabled ALWAYS still fires; a refresh makes dropped ones
// again. On 10+, the statement-level INSERT trigger of a capture counts too.
func TestCaptureGaps(t *testing.T) {
	t.Parallel()
	for _, ver := range pgtest.Majors() {
		t.Run("pg"+ver, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newProvider(t, ver)
			c := p.conn(t)
			exec(t, c, `CREATE TABLE a (id int PRIMARY KEY, v text)`)
			exec(t, c, `CREATE TABLE "Odd t" (id int PRIMARY KEY, v text)`)
			for _, name := range []string{"a", `"Odd t"`} {
				_, err := AddTable(ctx, c, "q", TableSpec{Name: name})
				require.NoError(t, err)
			}
			var qid int
			require.NoError(t, c.QueryRow(ctx, `SELECT skiff.queue_id('q')`).Scan(&qid))
			row, trunc := fmt.Sprintf(`"!skiff_capture_q%d"`, qid), fmt.Sprintf(`"!skiff_truncate_q%d"`, qid)
			a, odd := change.Table{Schema: "public", Name: "a"}, change.Table{Schema: "public", Name: "Odd t"}
			gaps := func() []CaptureGap {
				t.Helper()
				g, err := CaptureGaps(ctx, c)
				require.NoError(t, err)
				return g
			}
			require.Empty(t, gaps())

			exec(t, c, `ALTER TABLE a DISABLE TRIGGER `+row)
			g := gaps()
			require.Equal(t, []CaptureGap{{Queue: "q", Table: a, Missing: []string{"INSERTs", "UPDATEs", "DELETEs"}, Disabled: []string{row}}}, g)
			for _, want := range []string{`table "public"."a": its INSERTs, UPDATEs, DELETEs are not captured`,
				`ALTER TABLE "public"."a" ENABLE TRIGGER ` + row, "skiff table resync"} {
				require.Contains(t, g[0].Problem(), want)
			}
			exec(t, c, `ALTER TABLE a ENABLE ALWAYS TRIGGER `+row)
			require.Empty(t, gaps(), "a trigger enabled ALWAYS fires")
			exec(t, c, `ALTER TABLE a ENABLE REPLICA TRIGGER `+row)
			require.Len(t, gaps(), 1, "a trigger enabled REPLICA does not fire in an ordinary session")
			exec(t, c, `ALTER TABLE a ENABLE TRIGGER `+row)
			exec(t, c, `ALTER TABLE a DISABLE TRIGGER USER`)
			require.Equal(t, []CaptureGap{{Queue: "q", Table: a, Missing: []string{"INSERTs", "UPDATEs", "DELETEs", "TRUNCATEs"}, Disabled: []string{row, trunc}}}, gaps())
			exec(t, c, `ALTER TABLE a ENABLE TRIGGER USER`)

			exec(t, c, `DROP TRIGGER `+trunc+` ON "Odd t"`)
			g = gaps()
			require.Equal(t, []CaptureGap{{Queue: "q", Table: odd, Missing: []string{"TRUNCATEs"}, Dropped: []string{trunc}}}, g)
			require.Contains(t, g[0].Problem(), `skiff table add --db PROVIDER --queue q --refresh "public"."Odd t"`)
			_, err := AddTable(ctx, c, "q", TableSpec{Name: `"Odd t"`, Refresh: true})
			require.NoError(t, err)
			require.Empty(t, gaps(), "the refresh makes the trigger again")

			if pg.ServerVersion(c) < 100000 {
				return
			}
			exec(t, c, `CREATE TABLE s (id int PRIMARY KEY)`)
			_, err = AddTable(ctx, c, "q", TableSpec{Name: "s", InsertTrigger: InsertTriggerStatement})
			require.NoError(t, err)
			require.Empty(t, gaps())
			ins := fmt.Sprintf(`"skiff_insert_q%d"`, qid)
			exec(t, c, `ALTER TABLE s DISABLE TRIGGER `+ins)
			require.Equal(t, []CaptureGap{{Queue: "q", Table: change.Table{Schema: "public", Name: "s"}, Missing: []string{"INSERTs"}, Disabled: []string{ins}}}, gaps())
			exec(t, c, `DROP TRIGGER `+ins+` ON s`)
			require.Equal(t, []CaptureGap{{Queue: "q", Table: change.Table{Schema: "public", Name: "s"}, Missing: []string{"INSERTs"}, Dropped: []string{ins}}}, gaps())
		})
	}
}
