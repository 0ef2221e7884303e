package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffdb/skiff/consumer/source/logical"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/queue"
)

// slotScrapeTimeout bounds the provider queries of one scrape.
const slotScrapeTimeout = 5 * time.Second

// slotMetrics is a Prometheus collector of the replication slots of the logical queues a
// service runs, read from the provider at each scrape (as `skiff status` reads them), labelled
// by queue and slot:
//
//   - skiff_worker_slot_active: 1 while a walsender streams from the slot, else 0 (also for a
//     slot the subscription records that is gone);
//   - skiff_worker_slot_retained_wal_bytes: the WAL the slot keeps on the provider's disk
//     (from its restart_lsn to the current position);
//   - skiff_worker_slot_lag_bytes: the WAL written since the position confirmed to the slot
//     (the later of the slot's confirmed_flush_lsn, 9.6+, and what this worker's stream has
//     confirmed; the restart_lsn when neither is known).
//
// A queue of the trigger source has no series. The collector keeps one provider connection
// ("skiff worker metrics"), opened at the first scrape and kept only while the service runs a
// logical queue.
type slotMetrics struct {
	cfg   *pgx.ConnConfig
	log   *slog.Logger
	parts func() []*part

	active, retained, lag *prometheus.Desc

	mu     sync.Mutex
	conn   *pgx.Conn
	kinds  map[string]queue.Kind // read once per queue: a queue's source never changes
	closed bool
}

func newSlotMetrics(provider string, log *slog.Logger, parts func() []*part) (*slotMetrics, error) {
	cfg, err := pg.ParseConfig(provider, "skiff worker metrics")
	if err != nil {
		return nil, err
	}
	labels := []string{"queue", "slot"}
	return &slotMetrics{
		cfg: cfg, log: log, parts: parts, kinds: map[string]queue.Kind{},
		active: prometheus.NewDesc("skiff_worker_slot_active",
			"1 while the logical queue's replication slot is streamed from, else 0 (also when the slot is gone).", labels, nil),
		retained: prometheus.NewDesc("skiff_worker_slot_retained_wal_bytes",
			"WAL the logical queue's replication slot keeps on the provider (from its restart_lsn).", labels, nil),
		lag: prometheus.NewDesc("skiff_worker_slot_lag_bytes",
			"WAL written on the provider since the position confirmed to the logical queue's replication slot.", labels, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (m *slotMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.active
	ch <- m.retained
	ch <- m.lag
}

// Collect implements prometheus.Collector: it reads the slots of the logical queues. A
// provider that cannot be read is logged and its series are left out of the scrape.
func (m *slotMetrics) Collect(ch chan<- prometheus.Metric) {
	// A scrape has no context of its own: bound it.
	ctx, cancel := context.WithTimeout(context.Background(), slotScrapeTimeout)
	defer cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if err := m.collect(ctx, ch); err != nil {
		m.log.Warn("slot metrics: cannot read the provider", "error", err.Error())
		m.closeConn()
	}
}

// ensure opens the provider connection when there is none.
func (m *slotMetrics) ensure(ctx context.Context) error {
	if m.conn != nil && !m.conn.IsClosed() {
		return nil
	}
	c, err := pg.ConnectConfig(ctx, m.cfg.Copy())
	if err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	m.conn = c
	return nil
}

func (m *slotMetrics) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	anyLogical := false
	for _, p := range m.parts() {
		q := p.queue
		kind, ok := m.kinds[q.Name]
		if !ok {
			if err := m.ensure(ctx); err != nil {
				return err
			}
			k, err := queue.QueueKind(ctx, m.conn, q.Name)
			if err != nil {
				return fmt.Errorf("queue %s: %w", q.Name, err)
			}
			kind, m.kinds[q.Name] = k, k
		}
		if !kind.Logical() {
			continue
		}
		anyLogical = true
		if err := m.ensure(ctx); err != nil {
			return err
		}
		slot, err := queue.ConsumerSlot(ctx, m.conn, q.Name, q.Consumer)
		if errors.Is(err, queue.ErrNotRegistered) || (err == nil && slot.Name == "") {
			continue // unsubscribed, or not yet subscribed: no slot
		}
		if err != nil {
			return fmt.Errorf("queue %s: %w", q.Name, err)
		}
		st, found, err := logical.ReadSlot(ctx, m.conn, slot.Name)
		if err != nil {
			return fmt.Errorf("queue %s: %w", q.Name, err)
		}
		if !found {
			ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, 0, q.Name, slot.Name)
			continue
		}
		active := 0.0
		if st.Active {
			active = 1
		}
		confirmed := st.ConfirmedFlush
		if pos, ok := p.s.confirmed(); ok && logical.LSN(pos.LSN) > confirmed {
			confirmed = logical.LSN(pos.LSN)
		}
		if confirmed == 0 {
			confirmed = st.RestartLSN
		}
		lag := 0.0
		if st.CurrentLSN > confirmed {
			lag = float64(st.CurrentLSN - confirmed)
		}
		ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, active, q.Name, slot.Name)
		ch <- prometheus.MustNewConstMetric(m.retained, prometheus.GaugeValue, float64(max(st.RetainedBytes, 0)), q.Name, slot.Name)
		ch <- prometheus.MustNewConstMetric(m.lag, prometheus.GaugeValue, lag, q.Name, slot.Name)
	}
	if !anyLogical {
		m.closeConn() // nothing to read: no idle connection on the provider
	}
	return nil
}

// close closes the connection; later scrapes read nothing (the service has stopped).
func (m *slotMetrics) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.closeConn()
}

func (m *slotMetrics) closeConn() {
	if m.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.conn.Close(ctx)
	m.conn = nil
}
