package status

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// logicalState is what the provider says of its logical queues: their kinds, the slot each
// consumer records, and the slots skiff named.
type logicalState struct {
	queues map[string]queue.Kind
	slotOf map[[2]string]string // queue, consumer → slot name
	slots  map[string]queue.SlotState
}

func readLogical(ctx context.Context, db pg.DB) (*logicalState, error) {
	lg := &logicalState{queues: map[string]queue.Kind{}, slots: map[string]queue.SlotState{}}
	names, err := queue.LogicalQueues(ctx, db)
	if err != nil || len(names) == 0 {
		return lg, err
	}
	for n := range names {
		k, err := queue.QueueKind(ctx, db, n)
		if err != nil {
			return nil, err
		}
		lg.queues[n] = k
	}
	if lg.slotOf, err = queue.ConsumerSlots(ctx, db); err != nil {
		return nil, err
	}
	states, err := queue.SlotStates(ctx, db)
	if err != nil {
		return nil, err
	}
	for _, s := range states {
		lg.slots[s.Name] = s
	}
	return lg, nil
}

// consumer is a logical queue's consumer with its slot.
func (lg *logicalState) consumer(queueName, name string) Consumer {
	c := Consumer{Name: name}
	slot, ok := lg.slotOf[[2]string{queueName, name}]
	if !ok {
		return c
	}
	c.Slot = &Slot{Name: slot}
	st, ok := lg.slots[slot]
	if !ok {
		c.Slot.Missing = true
		return c
	}
	c.Slot.Active, c.Slot.ConfirmedLSN = st.Active, st.ConfirmedLSN
	c.Slot.RetainedWALBytes, c.Slot.LagBytes = st.RetainedBytes, st.LagBytes
	if st.ReplayLag != nil {
		secs := st.ReplayLag.Seconds()
		c.Slot.LagSeconds = &secs
		c.LagSeconds = secs
	}
	return c
}

// orphans lists the slots skiff named that no consumer records.
func (lg *logicalState) orphans() []queue.SlotState {
	used := map[string]bool{}
	for _, s := range lg.slotOf {
		used[s] = true
	}
	var out []queue.SlotState
	for name, s := range lg.slots {
		if !used[name] {
			out = append(out, s)
		}
	}
	return out
}

// slotStall says what a logical queue's consumer waits for, "" when it streams: no slot, a
// lost slot, a slot nobody streams from (judged by the worker's heartbeat on the target when
// known), WAL piling up behind it, or the worker's last error.
func slotStall(c Consumer, q *Queue, cfg Config, now time.Time) string {
	var why []string
	sub := c.Subscription
	sl := c.Slot
	maxWAL := cfg.MaxRetainedWAL
	if maxWAL <= 0 {
		maxWAL = 1 << 30
	}
	switch {
	case sl == nil:
		why = append(why, fmt.Sprintf("no replication slot: run skiff subscribe --provider URL --target URL --queue %s", shellWord(q.Name)))
	case sl.Missing:
		why = append(why, fmt.Sprintf("replication slot %s is gone (dropped by hand, or the provider restored): changes since are lost; "+
			"unsubscribe and subscribe again to copy the tables anew", sl.Name))
	default:
		if !sl.Active {
			switch {
			case sub != nil && sub.Heartbeat != nil && now.Sub(*sub.Heartbeat) <= cfg.StallAfter:
				// The worker is alive (between connections, or retrying a batch).
			case sub != nil && sub.Heartbeat != nil:
				why = append(why, fmt.Sprintf("replication slot %s inactive, worker not seen for %s (last heartbeat from %s): worker not running?",
					sl.Name, now.Sub(*sub.Heartbeat).Round(time.Second), orUnknown(sub.Worker)))
			default:
				why = append(why, fmt.Sprintf("replication slot %s inactive: worker not running?", sl.Name))
			}
		}
		if sl.RetainedWALBytes > maxWAL {
			why = append(why, fmt.Sprintf("replication slot %s keeps %s of WAL on the provider (more than %s): the provider's disk fills until its worker catches up, "+
				"or the subscription is removed (skiff unsubscribe)", sl.Name, bytesText(sl.RetainedWALBytes), bytesText(maxWAL)))
		}
	}
	if sub != nil && sub.LastError != "" {
		why = append(why, "failing: "+sub.LastError)
	}
	return strings.Join(why, "; ")
}

// bytesText writes a byte count for people: 1.5 GiB, 12 MiB, 300 B.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// lsnText writes an LSN as PostgreSQL does (16/B374D848), "" for 0.
func lsnText(lsn uint64) string {
	if lsn == 0 {
		return ""
	}
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}
