package queue

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/migrate/migratetest"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

var privRoleCounter atomic.Int64

// TestRefreshWithoutTableOwnership: on every installed version, skiff's schema installed and
// run by a role that is not a superuser and does not own the captured table, holding only what
// docs/roles.md lists (TRIGGER; UPDATE, or MAINTAIN from 17, for the table's lock; SELECT for a
// --where), refreshes the capture with table add --refresh and with init provider's
// UpgradeCaptures. Neither may drop the triggers, which would need the table's ownership: the
// function is replaced in place, and the owner's writes are captured once each, before and
// after.
func TestRefreshWithoutTableOwnership(t *testing.T) {
	t.Parallel()
	for _, v := range pgtest.Majors() {
		t.Run("pg"+v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := pgtest.Shared(t, v).NewDB(t)
			admin := pgtest.Connect(t, url)
			pgtest.PLpgSQL(t, admin) // before 9.0 only the database owner or a superuser may create it
			n := fmt.Sprintf("%d_%d", privRoleCounter.Add(1), admin.PgConn().PID())
			op, owner := "skiffop"+n, "tableowner"+n
			opID, ownerID := pgx.Identifier{op}.Sanitize(), pgx.Identifier{owner}.Sanitize()
			var db string
			require.NoError(t, admin.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
			dbID := pgx.Identifier{db}.Sanitize()
			exec(t, admin, `CREATE ROLE `+opID+` LOGIN`)
			exec(t, admin, `CREATE ROLE `+ownerID+` LOGIN`)
			t.Cleanup(func() {
				c, err := pg.Connect(ctx, url, "skiff-test")
				if err != nil {
					return
				}
				defer c.Close(ctx)
				for _, s := range []string{`DROP OWNED BY ` + opID + `, ` + ownerID + ` CASCADE`,
					`REVOKE ALL ON DATABASE ` + dbID + ` FROM ` + opID,
					`DROP ROLE ` + opID, `DROP ROLE ` + ownerID} {
					_, _ = c.Exec(ctx, s)
				}
			})
			exec(t, admin, `GRANT CREATE ON DATABASE `+dbID+` TO `+opID)
			exec(t, admin, `CREATE SCHEMA `+ownerID+` AUTHORIZATION `+ownerID)

			opURL := strings.Replace(url, "postgres://postgres@", "postgres://"+op+"@", 1)
			migratetest.Install(t, opURL, migrate.Provider)
			writer := pgtest.Connect(t, strings.Replace(url, "postgres://postgres@", "postgres://"+owner+"@", 1))
			table := ownerID + ".t"
			exec(t, writer, `CREATE TABLE `+table+` (id int PRIMARY KEY, v text)`)
			exec(t, writer, `GRANT USAGE ON SCHEMA `+ownerID+` TO `+opID)
			lock := "UPDATE" // for LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE; MAINTAIN does from 17
			if pg.ServerVersion(admin) >= 170000 {
				lock = "MAINTAIN"
			}
			exec(t, writer, `GRANT SELECT, TRIGGER, `+lock+` ON `+table+` TO `+opID)

			c, err := pg.Connect(ctx, opURL, "skiff-test")
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close(ctx) })
			_, err = AddTable(ctx, c, "q", TableSpec{Name: table, Where: "v <> 'skip'"})
			require.NoError(t, err)
			_, err = RegisterConsumer(ctx, c, "q", "c")
			require.NoError(t, err)
			src, err := NewSource(ctx, c, SourceConfig{Queue: "q", Consumer: "c"})
			require.NoError(t, err)
			tick := func() {
				t.Helper()
				_, err := ForceTick(ctx, c, "q")
				require.NoError(t, err)
			}
			exec(t, writer, `INSERT INTO `+table+` VALUES (1, 'a'), (2, 'skip')`)
			tick()
			_, evs := readBatch(t, src)
			require.Equal(t, []string{"1"}, ids(evs))

			res, err := AddTable(ctx, c, "q", TableSpec{Name: table, Refresh: true})
			require.NoError(t, err, "table add --refresh by a role that does not own the table")
			require.True(t, res.Refreshed)
			exec(t, c, `UPDATE skiff.captured_table SET capture_version = 1`)
			done, err := UpgradeCaptures(ctx, c)
			require.NoError(t, err)
			require.Len(t, done, 1)
			require.NoError(t, done[0].Err, "init provider regenerates the capture of a table it does not own")

			var triggers int
			require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::text::regclass`, table).Scan(&triggers))
			require.Equal(t, 2, triggers, "one row and one truncate trigger")
			exec(t, writer, `INSERT INTO `+table+` VALUES (3, 'b'), (4, 'skip')`)
			exec(t, writer, `UPDATE `+table+` SET v = 'c' WHERE id = 1`)
			tick()
			_, evs = readBatch(t, src)
			got := make([]string, len(evs))
			for i, e := range evs {
				got[i] = describeEvent(e)
			}
			require.Equal(t, []string{"I [3 b]", "U [1 c]"}, got, "each write captured once, the --where kept")

			// What needs the owner is refused before anything changes, with the statements for
			// the owner; once the owner has run them, the same command succeeds.
			ownerRuns := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, ErrNotTableOwner)
				require.Contains(t, err.Error(), "as its owner "+ownerID)
				var stmts []string
				for _, line := range strings.Split(err.Error(), "\n") {
					if line = strings.TrimSpace(line); strings.HasPrefix(line, "DROP TRIGGER ") {
						stmts = append(stmts, line)
					}
				}
				require.NotEmpty(t, stmts, err.Error())
				for _, stmt := range stmts {
					exec(t, writer, stmt)
				}
			}
			countTriggers := func(table string) int {
				var n int
				require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::text::regclass AND tgname LIKE '%skiff%'`, table).Scan(&n))
				return n
			}
			if pg.ServerVersion(admin) >= 100000 {
				// Row trigger to statement INSERT trigger: the row trigger must go.
				table2 := ownerID + ".t2"
				exec(t, writer, `CREATE TABLE `+table2+` (id int PRIMARY KEY, v text)`)
				exec(t, writer, `GRANT SELECT, TRIGGER, `+lock+` ON `+table2+` TO `+opID)
				_, err = AddTable(ctx, c, "q", TableSpec{Name: table2})
				require.NoError(t, err)
				_, err = AddTable(ctx, c, "q", TableSpec{Name: table2, Refresh: true, InsertTrigger: InsertTriggerStatement})
				require.Equal(t, 2, countTriggers(table2), "nothing changed")
				ownerRuns(err)
				_, err = AddTable(ctx, c, "q", TableSpec{Name: table2, Refresh: true, InsertTrigger: InsertTriggerStatement})
				require.NoError(t, err, "after the owner dropped the triggers")
				require.Equal(t, 4, countTriggers(table2), "row (UPDATE, DELETE), statement INSERT, companion, truncate")
				exec(t, writer, `INSERT INTO `+table2+` VALUES (1, 'x')`)
				tick()
				_, evs = readBatch(t, src)
				require.Len(t, evs, 1, "the insert captured once")
			}

			_, err = RemoveTable(ctx, c, "q", table)
			require.Equal(t, 2, countTriggers(table), "nothing changed")
			ownerRuns(err)
			_, err = RemoveTable(ctx, c, "q", table)
			require.NoError(t, err, "after the owner dropped the triggers")
			require.Equal(t, 0, countTriggers(table))
		})
	}
}
