// Package handlerstest checks a handler against the rules every skiff handler must keep
// (docs/handlers.md), in a test of the handler's own:
//
//	func TestMyHandler(t *testing.T) {
//		h, err := myFactory(change.Table{Schema: "legacy", Name: "users"}, nil)
//		require.NoError(t, err)
//		out := handlerstest.Check(t, h, []change.Event{insert, update, del})
//		// then check what out holds
//	}
package handlerstest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
)

// Check runs handler h over each event, in order, as the worker does (handlers.Run: Split
// when h is a Splitter), and fails t for every rule h breaks:
//
//   - it modifies the Columns or Key slice it was given in place: a source shares them
//     between every event of a table layout, so Check makes the events of one table and
//     column list share one slice (and one Key slice) and checks them after each call;
//   - an event it returns is malformed: no table, as many values as columns, every key column
//     among the columns (a Truncate aside), an OldKey of the key's length, the ID and TxID of
//     the event it came from;
//   - it makes anything but Inserts of an Insert (the initial copy, resync and compare hand
//     it every provider row as an Insert);
//   - it answers differently the second time it meets the same event (the worker, the copy
//     and compare must all make the same rows of it).
//
// It returns what h made of each event (an error of h fails t and gives nil for that event).
func Check(t testing.TB, h handlers.Handler, events []change.Event) [][]change.Event {
	t.Helper()
	shared := map[string][]string{}
	share := func(s []string) []string {
		if s == nil {
			return nil
		}
		k := strings.Join(s, "\x00")
		if v, ok := shared[k]; ok {
			return v
		}
		v := slices.Clone(s)
		shared[k] = v
		return v
	}
	in := make([]change.Event, len(events))
	for i, ev := range events {
		ev.Columns, ev.Key = share(ev.Columns), share(ev.Key)
		ev.Values = slices.Clone(ev.Values)
		ev.OldKey = slices.Clone(ev.OldKey)
		in[i] = ev
	}
	type kept struct{ s, want []string }
	var snapshot []kept
	for _, s := range shared {
		snapshot = append(snapshot, kept{s, slices.Clone(s)})
	}
	out := make([][]change.Event, len(in))
	for i := range in {
		ev := in[i]
		name := fmt.Sprintf("event %d (%s of %s)", i, ev.Op, ev.Table)
		got, err := handlers.Run(h, &ev, nil)
		if err != nil {
			t.Errorf("%s: the handler failed: %v", name, err)
			continue
		}
		for _, k := range snapshot {
			if !slices.Equal(k.s, k.want) {
				t.Errorf("%s: the handler modified a shared Columns or Key slice in place: %q became %q (assign a new slice instead)", name, k.want, k.s)
				copy(k.s, k.want)
			}
		}
		for j := range got {
			checkEvent(t, name, j, &in[i], &got[j])
		}
		again := in[i]
		again.Values = slices.Clone(again.Values)
		again.OldKey = slices.Clone(again.OldKey)
		got2, err := handlers.Run(h, &again, nil)
		if err != nil || !sameEvents(got, got2) {
			t.Errorf("%s: the handler answers differently the second time (%v): %s, then %s", name, err, describe(got), describe(got2))
		}
		out[i] = got
	}
	return out
}

func checkEvent(t testing.TB, name string, j int, from, ev *change.Event) {
	t.Helper()
	at := fmt.Sprintf("%s, result %d (%s of %s)", name, j, ev.Op, ev.Table)
	if ev.Table.Name == "" {
		t.Errorf("%s: no table", at)
	}
	if ev.ID != from.ID || ev.TxID != from.TxID {
		t.Errorf("%s: ID/TxID %d/%d, the event's are %d/%d (the copy's snapshot decides an event and what it becomes together)", at, ev.ID, ev.TxID, from.ID, from.TxID)
	}
	if from.Op == change.Insert && ev.Op != change.Insert {
		t.Errorf("%s: a %s made of an INSERT (the initial copy and compare hand every row over as an INSERT and write INSERTs)", at, ev.Op)
	}
	if ev.Op == change.Truncate {
		return
	}
	if len(ev.Values) != len(ev.Columns) {
		t.Errorf("%s: %d values for %d columns", at, len(ev.Values), len(ev.Columns))
	}
	if len(ev.Key) == 0 {
		t.Errorf("%s: no key", at)
	}
	for _, k := range ev.Key {
		if !slices.Contains(ev.Columns, k) {
			t.Errorf("%s: key column %q is not among the columns %q", at, k, ev.Columns)
		}
	}
	if ev.OldKey != nil && len(ev.OldKey) != len(ev.Key) {
		t.Errorf("%s: an old key of %d values for a key of %d columns", at, len(ev.OldKey), len(ev.Key))
	}
}

func sameEvents(a, b []change.Event) bool {
	return slices.EqualFunc(a, b, func(x, y change.Event) bool {
		return x.ID == y.ID && x.TxID == y.TxID && x.Op == y.Op && x.Table == y.Table && slices.Equal(x.Columns, y.Columns) &&
			slices.Equal(x.Values, y.Values) && slices.Equal(x.Key, y.Key) && slices.Equal(x.OldKey, y.OldKey)
	})
}

func describe(evs []change.Event) string {
	parts := make([]string, len(evs))
	for i, ev := range evs {
		parts[i] = fmt.Sprintf("%s %s %q=%v", ev.Op, ev.Table, ev.Columns, ev.Values)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}
