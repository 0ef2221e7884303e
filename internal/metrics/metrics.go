// Package metrics serves a Prometheus registry over HTTP for skiff's daemons (ticker, worker):
// one listener, /metrics in the Prometheus exposition format; a Server has the lifecycle of
// internal/startstop.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiffdb/skiff/internal/startstop"
)

// shutdownTimeout bounds how long Stop waits for scrapes in flight once ctx ends.
const shutdownTimeout = 5 * time.Second

// NewRegistry returns a registry holding the Go runtime and process collectors, to which a
// daemon adds its own metrics. A registry of its own (not prometheus.DefaultRegisterer) keeps
// tests that build several daemons in one process apart.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler returns the HTTP handler that exposes reg: /metrics, and a short text page on /.
func Handler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = fmt.Fprintln(w, "skiff: metrics at /metrics")
	})
	return mux
}

// Server serves a registry on /metrics until stopped. Its lifecycle is internal/startstop's.
type Server struct {
	addr string
	reg  *prometheus.Registry
	log  *slog.Logger
	ln   net.Listener // the listener Start opens (or the one given to NewListenerServer)
	life startstop.Base
}

// NewServer returns a server of reg on addr (e.g. ":9187"; "" disables the endpoint: the
// server then serves nothing until stopped). log nil discards its messages.
func NewServer(addr string, reg *prometheus.Registry, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{addr: addr, reg: reg, log: log}
}

// NewListenerServer is NewServer on a listener the caller opened (tests listen on
// 127.0.0.1:0); the server closes it.
func NewListenerServer(ln net.Listener, reg *prometheus.Registry, log *slog.Logger) *Server {
	s := NewServer(ln.Addr().String(), reg, log)
	s.ln = ln
	return s
}

// Start listens on the server's address and serves in the background. Its error says the
// address cannot be listened on. Cancelling ctx stops the server like Stop.
func (s *Server) Start(ctx context.Context) error {
	return s.life.Start(ctx, func(ctx context.Context) error {
		if s.addr == "" || s.ln != nil {
			return nil
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", s.addr)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w", s.addr, err)
		}
		s.ln = ln
		return nil
	}, s.serve)
}

// Stop shuts the server down, letting scrapes in flight finish (at most 5 s), and waits. It is
// idempotent.
func (s *Server) Stop() { s.life.Stop() }

// StopAndCancel closes the server at once, scrapes in flight included, and waits.
func (s *Server) StopAndCancel() { s.life.StopAndCancel() }

// Stopped is closed once the server has stopped.
func (s *Server) Stopped() <-chan struct{} { return s.life.Stopped() }

// Err is why the server stopped: nil after a requested stop, the server's failure otherwise.
func (s *Server) Err() error { return s.life.Err() }

// serve serves until soft ends, then shuts down (closes at once when hard ends).
func (s *Server) serve(soft, hard context.Context) error {
	if s.ln == nil {
		<-soft.Done() // nothing to serve: idle until stopped, like a server that serves
		return nil
	}
	ln := s.ln
	srv := &http.Server{
		Handler:           Handler(s.reg),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return hard },
	}
	s.log.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-soft.Done():
	}
	sctx, cancel := context.WithTimeout(hard, shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}
