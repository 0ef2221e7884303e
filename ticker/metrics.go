package ticker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ticker's Prometheus series. Every series carries db, the database as
// pg.Describe names it (user@host:port/dbname, never a password).
type metrics struct {
	ticks       *prometheus.CounterVec   // db, queue
	pending     *prometheus.GaugeVec     // db, queue
	sinceTick   *prometheus.GaugeVec     // db, queue
	rotations   *prometheus.CounterVec   // db, queue
	maintenance *prometheus.CounterVec   // db, step
	errors      *prometheus.CounterVec   // db, step
	up          *prometheus.GaugeVec     // db
	leader      *prometheus.GaugeVec     // db
	pollSeconds *prometheus.HistogramVec // db
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "skiff", "ticker"
	m := &metrics{
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "ticks_total",
			Help: "Ticks this ticker made, per queue.",
		}, []string{"db", "queue"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "queue_pending_events",
			Help: "Events written to the queue since its last tick (refreshed every --rescan).",
		}, []string{"db", "queue"}),
		sinceTick: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "seconds_since_last_tick",
			Help: "Seconds since the queue's last tick, by whoever made it.",
		}, []string{"db", "queue"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rotations_total",
			Help: "Event table rotations, per queue.",
		}, []string{"db", "queue"}),
		maintenance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "maintenance_runs_total",
			Help: "Maintenance steps run successfully (step: rotate, retry, cleanup, vacuum).",
		}, []string{"db", "step"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Failed steps (step: connect, lock, tick, queues, rotate, retry, cleanup, vacuum, discover).",
		}, []string{"db", "step"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "database_up",
			Help: "1 while the ticker is connected to the database, 0 while it is down or unreachable.",
		}, []string{"db"}),
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "database_leader",
			Help: "1 while this ticker holds the database's ticker lock (it ticks), 0 while another ticker does.",
		}, []string{"db"}),
		pollSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "poll_duration_seconds",
			Help:    "Time of one round of skiff.ticker calls over a database's queues.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"db"}),
	}
	if reg != nil {
		reg.MustRegister(m.ticks, m.pending, m.sinceTick, m.rotations, m.maintenance, m.errors, m.up, m.leader, m.pollSeconds)
	}
	return m
}

// forgetQueue removes a dropped queue's series.
func (m *metrics) forgetQueue(db, queue string) {
	l := prometheus.Labels{"db": db, "queue": queue}
	m.pending.Delete(l)
	m.sinceTick.Delete(l)
}

// forgetDB removes every series of a database the ticker no longer serves.
func (m *metrics) forgetDB(db string) {
	l := prometheus.Labels{"db": db}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.ticks, m.pending, m.sinceTick, m.rotations, m.maintenance, m.errors, m.up, m.leader, m.pollSeconds,
	} {
		v.DeletePartialMatch(l)
	}
}
