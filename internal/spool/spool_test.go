package spool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
)

func sampleEvent(i int, cols, key []string) change.Event {
	ev := change.Event{
		ID:      int64(i),
		TxID:    int64(1<<32 + i),
		Op:      change.Update,
		Table:   change.Table{Schema: "s.\"x", Name: fmt.Sprintf("t%d", i%3)},
		Columns: cols,
		Key:     key,
		Values:  []change.Value{change.Text(fmt.Sprint(i)), change.Null, change.Text(""), change.Text("é'\x01" + strings.Repeat("x", i%50))},
	}
	if i%4 == 0 {
		ev.OldKey = []change.Value{change.Text(fmt.Sprint(-i))}
	}
	if i%7 == 0 {
		ev.Op = change.Truncate
		ev.Columns, ev.Key, ev.Values = nil, nil, nil
	}
	if i%11 == 0 {
		ev.Err = errors.New("cannot decode")
	}
	return ev
}

func readAll(t *testing.T, s *Spool, chunk int) []change.Event {
	t.Helper()
	var out []change.Event
	require.NoError(t, s.Read(context.Background(), chunk, func(evs []change.Event) error {
		require.LessOrEqual(t, len(evs), chunk)
		for _, ev := range evs {
			ev.Values = append([]change.Value(nil), ev.Values...)
			out = append(out, ev)
		}
		// A handler may modify values in place: the next Read must not see it.
		for i := range evs {
			for j := range evs[i].Values {
				evs[i].Values[j] = change.Text("modified")
			}
		}
		return nil
	}))
	return out
}

// TestSpoolRoundTrip appends events past the memory bound and reads them back, twice, equal to
// what was appended, with one layout's Columns shared and memory held under the bound.
func TestSpoolRoundTrip(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{0, 10_000, 1 << 30} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			t.Parallel()
			s := New(t.TempDir(), limit)
			defer s.Close()
			cols := []string{"id", "a b", "\"c\"", "é"}
			key := []string{"id"}
			var want []change.Event
			for i := 0; i < 2000; i++ {
				ev := sampleEvent(i, cols, key)
				want = append(want, sampleEvent(i, cols, key))
				require.NoError(t, s.Append(ev))
				require.LessOrEqual(t, s.MemBytes(), limit)
			}
			require.Equal(t, 2000, s.Len())
			require.Equal(t, limit < 1<<30, s.Spilled())
			for round := 0; round < 2; round++ {
				got := readAll(t, s, 64)
				require.Len(t, got, len(want))
				for i := range want {
					w, g := want[i], got[i]
					if w.Err != nil {
						require.EqualError(t, g.Err, w.Err.Error())
						w.Err, g.Err = nil, nil
					}
					require.Equal(t, w, g, "event %d, round %d", i, round)
				}
				var first []string
				for i := range got {
					if got[i].Columns != nil {
						if first == nil {
							first = got[i].Columns
						}
						require.Same(t, &first[0], &got[i].Columns[0], "layouts share their slice")
					}
				}
			}
			require.NoError(t, s.Reset())
			require.Equal(t, 0, s.Len())
			require.Empty(t, readAll(t, s, 10))
			require.NoError(t, s.Append(sampleEvent(1, cols, key)))
			require.Len(t, readAll(t, s, 10), 1)
		})
	}
}

// TestSpoolStopsOnError: fn's error ends Read and is returned as it is.
func TestSpoolStopsOnError(t *testing.T) {
	t.Parallel()
	s := New(t.TempDir(), 0)
	defer s.Close()
	for i := 1; i <= 10; i++ {
		require.NoError(t, s.Append(sampleEvent(i, []string{"a", "b", "c", "d"}, []string{"a"})))
	}
	boom := errors.New("boom")
	calls := 0
	err := s.Read(context.Background(), 3, func([]change.Event) error { calls++; return boom })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, calls)
}

// TestSpoolKeepsCopy: an event modified after Append reads back as it was appended, from
// memory as from the file; an emptied spool keeps little memory for its next events.
func TestSpoolKeepsCopy(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{0, 1 << 30} {
		s := New(t.TempDir(), limit)
		cols, key := []string{"id", "v"}, []string{"id"}
		ev := sampleEvent(1, cols, key)
		want := sampleEvent(1, cols, key)
		require.NoError(t, s.Append(ev))
		ev.Values[0] = change.Text("changed")
		require.Equal(t, []change.Event{want}, readAll(t, s, 10))
		require.NoError(t, s.Close())
	}
	s := New(t.TempDir(), 64<<20)
	big := change.Event{ID: 1, Op: change.Insert, Table: change.Table{Schema: "s", Name: "t"},
		Columns: []string{"v"}, Values: []change.Value{change.Text(strings.Repeat("x", 1<<20))}}
	for range 8 {
		require.NoError(t, s.Append(big))
	}
	require.False(t, s.Spilled())
	require.LessOrEqual(t, cap(s.mem), 64<<20)
	require.NoError(t, s.Reset())
	require.LessOrEqual(t, cap(s.mem), keepCap)
	require.Error(t, s.Append(change.Event{Op: change.Execute, Exec: &change.Exec{SQL: "select"}}))
}

// BenchmarkAppendRead appends and reads back events of one layout, as a source's batch.
func BenchmarkAppendRead(b *testing.B) {
	s := New(b.TempDir(), 64<<20)
	defer s.Close()
	cols, key := []string{"id", "v", "pad"}, []string{"id"}
	ev := change.Event{Op: change.Insert, Table: change.Table{Schema: "public", Name: "t"}, Columns: cols, Key: key,
		Values: []change.Value{change.Text("12345"), change.Text("17"), change.Text(strings.Repeat("x", 150))}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev.ID = int64(i)
		if err := s.Append(ev); err != nil {
			b.Fatal(err)
		}
		if s.Len() == 10000 {
			if err := s.Read(context.Background(), 1000, func([]change.Event) error { return nil }); err != nil {
				b.Fatal(err)
			}
			_ = s.Reset()
		}
	}
}

// TestSpoolLayouts: layouts read back equal to those appended, whether events share a slice,
// repeat its content in another, or have another content of the same length; events of equal
// layouts share one slice when read back.
func TestSpoolLayouts(t *testing.T) {
	t.Parallel()
	s := New(t.TempDir(), 1<<20)
	defer s.Close()
	a, b, again := []string{"id", "v"}, []string{"id", "w"}, []string{"id", "v"}
	var want []change.Event
	for i, cols := range [][]string{a, b, again, a, b, {}} {
		ev := change.Event{ID: int64(i), Op: change.Insert, Table: change.Table{Schema: "s", Name: "t"},
			Columns: cols, Key: cols[:min(1, len(cols))]}
		if len(cols) > 0 { // (readAll makes an empty Values nil)
			ev.Values = make([]change.Value, len(cols))
		}
		want = append(want, ev)
		require.NoError(t, s.Append(ev))
	}
	got := readAll(t, s, 10)
	require.Equal(t, want, got)
	require.Same(t, &got[0].Columns[0], &got[2].Columns[0])
	require.Same(t, &got[1].Columns[0], &got[4].Columns[0])
	require.NotSame(t, &got[0].Columns[0], &got[1].Columns[0])
}
