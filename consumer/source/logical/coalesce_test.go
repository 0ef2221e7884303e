//go:build unix

package logical

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

// TestCoalescerStates: coalesceAfter messages within one coalesceWait raise the low-water
// mark and bound the waits; messages further apart never do; two empty waits in a row lower
// it again; a socket that refuses the mark leaves the stream idle for good.
func TestCoalescerStates(t *testing.T) {
	t.Parallel()
	var marks []int
	c := coalescer{lowat: func(n int) error { marks = append(marks, n); return nil }}
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	far := t0.Add(time.Hour)

	// A trickle: one message every coalesceWait, never busy.
	for i := range 3 * coalesceAfter {
		c.got(t0.Add(time.Duration(i) * (coalesceWait + time.Microsecond)))
	}
	require.False(t, c.busy.Load())
	require.Equal(t, far, c.bound(t0, far), "an idle stream's waits are not bounded")
	require.Empty(t, marks)

	// A burst: busy at the coalesceAfter-th message.
	t1 := t0.Add(time.Minute)
	for i := range coalesceAfter {
		require.False(t, c.busy.Load(), "message %d", i)
		c.got(t1.Add(time.Duration(i) * time.Microsecond))
	}
	require.True(t, c.busy.Load())
	require.Equal(t, []int{coalesceBytes}, marks)
	require.Equal(t, t1.Add(coalesceWait), c.bound(t1, far))

	// An empty wait, then a message: still busy. Two empty waits in a row: idle.
	c.waited()
	c.got(t1)
	c.waited()
	require.True(t, c.busy.Load())
	c.waited()
	require.False(t, c.busy.Load())
	require.Equal(t, []int{coalesceBytes, 1}, marks)
	require.Equal(t, int64(1), c.busied.Load())

	// Refused: never busy again.
	c.lowat = func(int) error { return errors.New("refused") }
	for i := range coalesceAfter {
		c.got(t1.Add(time.Second + time.Duration(i)))
	}
	require.False(t, c.busy.Load())
	require.Nil(t, c.lowat)

	// Refused while lowering: stays busy (its waits bounded), tries again.
	var tries int
	c = coalescer{lowat: func(n int) error {
		if n == 1 {
			tries++
			return errors.New("refused")
		}
		return nil
	}}
	for i := range coalesceAfter {
		c.got(t1.Add(time.Duration(i)))
	}
	c.waited()
	c.waited()
	c.waited()
	require.True(t, c.busy.Load())
	require.Equal(t, 2, tries)
}

// TestLowWaterMark: the mark reaches the kernel for a TCP connection, and there is none for
// a Unix-domain socket.
func TestLowWaterMark(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1))
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	set := lowWaterMark(c)
	require.NotNil(t, set)
	get := func() int { return rcvLowat(t, c) }
	require.NoError(t, set(coalesceBytes))
	require.Equal(t, coalesceBytes, get())
	require.NoError(t, set(1))
	require.Equal(t, 1, get())

	ul, err := net.Listen("unix", t.TempDir()+"/s")
	require.NoError(t, err)
	defer ul.Close()
	go func() {
		if c, err := ul.Accept(); err == nil {
			_ = c.Close()
		}
	}()
	uc, err := net.Dial("unix", ul.Addr().String())
	require.NoError(t, err)
	defer uc.Close()
	require.Nil(t, lowWaterMark(uc))
}

// TestBusyStreamCoalesces: a slot streaming a large transaction makes its stream busy (the
// socket's low-water mark raised, waits bounded), every change still arrives once and in
// order, and once the slot is quiet the stream goes idle again, so that a lone change that
// follows is read as soon as it comes (it is not left waiting for the mark).
func TestBusyStreamCoalesces(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"10", "15"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			p := newTableT(t, v)
			s := p.source(t, nil)
			require.NoError(t, s.Resume(context.Background(), change.Position{}))
			tbl := change.Table{Schema: "public", Name: "t"}
			const n = 20000
			p.writeTx(t, fmt.Sprintf(`INSERT INTO t SELECT g FROM generate_series(1, %d) g`, n))
			_, evs := collect(t, s, n)
			for i, ev := range evs {
				require.Equal(t, tbl, ev.Table)
				require.Equal(t, strconv.Quote(strconv.Itoa(i+1)), show(ev.Values[0]), "change %d", i)
			}
			require.Positive(t, s.st.co.busied.Load(), "a 20,000-row transaction made the stream busy")

			// Quiet: the reader goroutine, which holds the connection between batches, waits
			// on the socket twice in a row for nothing, and the stream goes idle: the mark is
			// back at one byte.
			require.Eventually(t, func() bool { return !s.st.co.busy.Load() }, time.Minute, time.Millisecond)
			require.Equal(t, 1, rcvLowat(t, s.st.conn.Conn()))
			p.writeTx(t, `INSERT INTO t VALUES (0)`)
			_, evs = collect(t, s, 1)
			require.Equal(t, `"0"`, show(evs[0].Values[0]))
		})
	}
}

// rcvLowat reads a TCP connection's receive low-water mark.
func rcvLowat(t *testing.T, c net.Conn) int {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	require.True(t, ok, "%T is not a TCP connection", c)
	rc, err := tc.SyscallConn()
	require.NoError(t, err)
	var v int
	var gerr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
	}))
	require.NoError(t, gerr)
	return v
}
