package compare_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/compare"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestFloatArraysAcrossVersions: float arrays' text forms differ between versions before and
// from 12 (shortest-exact digits) just as floats' do; their checksums must not. A changed
// last bit of an element is still seen.
func TestFloatArraysAcrossVersions(t *testing.T) {
	t.Parallel()
	const ddl = `CREATE TABLE fa (id int PRIMARY KEY, f8 float8[], f4 real[]);
		INSERT INTO fa VALUES
			(1, '{0.1,NULL,1e300}', '{0.1,3.4e38}'),
			(2, '{}', '{}'),
			(3, NULL, NULL),
			(4, '{{0.1,0.2},{0.3,NaN}}', '{{-Infinity}}'),
			(5, '[0:1]={0.1,0.7}', '{0.3}')`
	p := pgtest.Shared(t, "10").NewDB(t)
	tg := pgtest.Shared(t, "15").NewDB(t)
	ctx := context.Background()
	for _, u := range []string{p, tg} {
		_, err := pgtest.Connect(t, u).Exec(ctx, ddl)
		require.NoError(t, err)
	}
	fa := pair(change.Table{Schema: "public", Name: "fa"})
	res := run(t, p, tg, true, fa)
	require.NoError(t, res[0].Err)
	require.True(t, res[0].Equal, "%+v", res[0])

	_, err := pgtest.Connect(t, tg).Exec(ctx, `UPDATE fa SET f8[3] = f8[3] * (1 + 1e-15) WHERE id = 1;
		UPDATE fa SET f8 = '[1:2]={0.1,0.7}' WHERE id = 5`)
	require.NoError(t, err)
	res = run(t, p, tg, true, fa)
	require.NoError(t, res[0].Err)
	require.ElementsMatch(t, []compare.RowDiff{{Key: "(1)", Kind: "different", Values: []string{"1"}}, {Key: "(5)", Kind: "different", Values: []string{"5"}}}, res[0].Diffs)
}
