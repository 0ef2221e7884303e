package consumer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffdb/skiff/consumer/change"
)

// Metrics are the worker's Prometheus metrics, labelled by queue. A nil *Metrics counts
// nothing.
type Metrics struct {
	events    *prometheus.CounterVec
	batches   *prometheus.CounterVec
	errors    *prometheus.CounterVec
	lastBatch *prometheus.GaugeVec
	lag       *prometheus.GaugeVec
	duration  *prometheus.HistogramVec
	conflicts *prometheus.CounterVec
	queue     string
}

// NewMetrics registers the worker metrics on reg and returns the set of one queue; call For
// to get the set of another queue sharing the same collectors.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_worker_events_applied_total", Help: "Events applied on the target.",
		}, []string{"queue"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_worker_batches_total", Help: "Batches applied on the target.",
		}, []string{"queue"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_worker_errors_total", Help: "Failed batch attempts (each is rolled back and retried).",
		}, []string{"queue"}),
		lastBatch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "skiff_worker_last_batch_timestamp_seconds", Help: "When the last batch was applied (Unix time).",
		}, []string{"queue"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "skiff_worker_lag_seconds",
			Help: "Replication lag of the last applied batch: from its end on the provider (tick time) to its commit on the target.",
		}, []string{"queue"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "skiff_worker_batch_duration_seconds", Help: "Time to apply and finish one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"queue"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_worker_merge_conflicts_total",
			Help: "Merge conflicts settled on shared tables (subscribe --merge): an insert whose key the target holds, an update or delete whose key it lacks.",
		}, []string{"queue"}),
	}
	reg.MustRegister(m.events, m.batches, m.errors, m.lastBatch, m.lag, m.duration, m.conflicts)
	return m
}

// For returns the metrics of one queue.
func (m *Metrics) For(queue string) *Metrics {
	if m == nil {
		return nil
	}
	c := *m
	c.queue = queue
	return &c
}

func (m *Metrics) errorInc() {
	if m != nil {
		m.errors.WithLabelValues(m.queue).Inc()
	}
}

func (m *Metrics) conflictAdd(n int64) {
	if m != nil && n > 0 {
		m.conflicts.WithLabelValues(m.queue).Add(float64(n))
	}
}

func (m *Metrics) batch(events int, b change.Batch, d time.Duration) {
	if m == nil {
		return
	}
	if !b.EndTime.IsZero() {
		m.lag.WithLabelValues(m.queue).Set(time.Since(b.EndTime).Seconds())
	}
	m.events.WithLabelValues(m.queue).Add(float64(events))
	m.batches.WithLabelValues(m.queue).Inc()
	m.lastBatch.WithLabelValues(m.queue).Set(float64(time.Now().UnixNano()) / 1e9)
	m.duration.WithLabelValues(m.queue).Observe(d.Seconds())
}
