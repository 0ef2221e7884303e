package ticker

import "time"

// Schedule says when a maintenance step runs next. robfig/cron's cron.Schedule satisfies it;
// cmd/skiff parses the --*-schedule flags into one. A nil Schedule disables the step.
type Schedule interface {
	// Next returns the first activation time strictly after t.
	Next(t time.Time) time.Time
}

// Every is a Schedule firing at a fixed interval, for tests and simple configurations.
type Every time.Duration

// Next returns t plus the interval.
func (e Every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

// job is one maintenance step of one database on its schedule.
type job struct {
	name  string // "rotate", "children", "retry", "cleanup", "vacuum": the step label of logs and metrics
	sched Schedule
	run   func() error
	next  time.Time
}

// jobs is a database's maintenance steps and when each is due.
type jobs []*job

// plan sets every job's next run after now.
func (js jobs) plan(now time.Time) {
	for _, j := range js {
		j.next = j.sched.Next(now)
	}
}

// nextDue returns the earliest next run, or the zero time when there is no job.
func (js jobs) nextDue() time.Time {
	var first time.Time
	for _, j := range js {
		if first.IsZero() || j.next.Before(first) {
			first = j.next
		}
	}
	return first
}

// due returns the jobs whose time has come at now, in their configured order, and plans their
// next run after now (a run that was missed while the database was down or busy happens once,
// not once per missed activation).
func (js jobs) due(now time.Time) []*job {
	var out []*job
	for _, j := range js {
		if !j.next.After(now) {
			out = append(out, j)
			j.next = j.sched.Next(now)
		}
	}
	return out
}
