package copier

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestTrailerStripper: whatever the writes' sizes, the stream is passed on without its last two
// bytes, and end accepts them only when they are the binary trailer.
func TestTrailerStripper(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		stream := make([]byte, rnd.IntN(300))
		for i := range stream {
			stream[i] = byte(rnd.IntN(256))
		}
		stream = append(stream, 0xff, 0xff)
		var out bytes.Buffer
		ts := &trailerStripper{w: &out}
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), 1+rnd.IntN(4)*rnd.IntN(40))
			if round%3 == 0 {
				n = 1
			}
			w, err := ts.Write(rest[:n])
			require.NoError(t, err)
			require.Equal(t, n, w)
			rest = rest[n:]
		}
		require.NoError(t, ts.end())
		require.Equal(t, stream[:len(stream)-2], out.Bytes(), "round %d", round)
	}
	ts := &trailerStripper{w: &bytes.Buffer{}}
	_, err := ts.Write([]byte{1, 2, 3, 0xff})
	require.NoError(t, err)
	require.ErrorContains(t, ts.end(), "does not end with its trailer")
}

// TestBinaryCopyIntoOldTarget: a server before 9.1 ends a binary COPY FROM at the stream's
// trailer, answering CommandComplete and ReadyForQuery before the client's CopyDone (the
// cause of the copy's hang: pgconn drops them while it streams, then waits for another
// ReadyForQuery); the same stream without its trailer, as pipe sends it to such a target, is
// read to CopyDone and loads every row. Runs on each installed server before 9.1 (8.4 and
// 9.0 with SKIFF_PG_BINDIRS).
func TestBinaryCopyIntoOldTarget(t *testing.T) {
	t.Parallel()
	var old []string
	for _, v := range pgtest.Majors() {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f < 9.1 {
			old = append(old, v)
		}
	}
	if len(old) == 0 {
		t.Skip("no server before 9.1 installed (SKIFF_PG_BINDIRS)")
	}
	for _, v := range old {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			db := pgtest.Shared(t, v).NewDB(t)
			conn := pgtest.Connect(t, db)
			_, err := conn.Exec(ctx, `CREATE TABLE s (id int PRIMARY KEY, v text);
				INSERT INTO s SELECT g, repeat('x', g % 50) FROM generate_series(1, 1000) g;
				CREATE TABLE early (LIKE s); CREATE TABLE stripped (LIKE s)`)
			require.NoError(t, err)
			var stream bytes.Buffer
			_, err = conn.PgConn().CopyTo(ctx, &stream, "COPY s TO STDOUT WITH BINARY")
			require.NoError(t, err)
			require.Equal(t, []byte{0xff, 0xff}, stream.Bytes()[stream.Len()-2:])

			// With the trailer: the server answers before any CopyDone.
			pc := pgtest.Connect(t, db).PgConn()
			sendCopy(t, ctx, pc, "early", stream.Bytes())
			expectDone(t, ctx, pc, "COPY 1000")
			// The CopyDone the client sends next is ignored; the connection is usable.
			pc.Frontend().Send(&pgproto3.CopyDone{})
			require.NoError(t, pc.Frontend().Flush())
			_, err = pc.Exec(ctx, "SELECT 1").ReadAll()
			require.NoError(t, err)

			// Without it: CopyDone ends the COPY, every row loaded.
			var out bytes.Buffer
			ts := &trailerStripper{w: &out}
			_, err = ts.Write(stream.Bytes())
			require.NoError(t, err)
			require.NoError(t, ts.end())
			sendCopy(t, ctx, pc, "stripped", out.Bytes())
			pc.Frontend().Send(&pgproto3.CopyDone{})
			require.NoError(t, pc.Frontend().Flush())
			expectDone(t, ctx, pc, "COPY 1000")

			var diff int
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT * FROM s EXCEPT SELECT * FROM stripped
				UNION ALL SELECT * FROM stripped EXCEPT SELECT * FROM s) d`).Scan(&diff))
			require.Zero(t, diff)
		})
	}
}

// sendCopy starts COPY table FROM STDIN WITH BINARY on pc and sends data as one CopyData.
func sendCopy(t *testing.T, ctx context.Context, pc *pgconn.PgConn, table string, data []byte) {
	t.Helper()
	pc.Frontend().Send(&pgproto3.Query{String: "COPY " + table + " FROM STDIN WITH BINARY"})
	require.NoError(t, pc.Frontend().Flush())
	msg, err := pc.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.IsType(t, &pgproto3.CopyInResponse{}, msg)
	pc.Frontend().Send(&pgproto3.CopyData{Data: data})
	require.NoError(t, pc.Frontend().Flush())
}

// expectDone reads CommandComplete with tag, then ReadyForQuery.
func expectDone(t *testing.T, ctx context.Context, pc *pgconn.PgConn, tag string) {
	t.Helper()
	msg, err := pc.ReceiveMessage(ctx)
	require.NoError(t, err)
	cc, ok := msg.(*pgproto3.CommandComplete)
	require.True(t, ok, "got %T %+v", msg, msg)
	require.Equal(t, tag, string(cc.CommandTag))
	msg, err = pc.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.IsType(t, &pgproto3.ReadyForQuery{}, msg)
}
