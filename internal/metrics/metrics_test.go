package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestServeListener(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, reg, slog.New(slog.DiscardHandler)) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "skiff_test_total 3")
	require.True(t, strings.Contains(string(body), "go_goroutines"), "runtime collector missing")

	cancel()
	require.NoError(t, <-done)
	_, err = http.Get("http://" + ln.Addr().String() + "/metrics")
	require.Error(t, err, "server still answers after shutdown")
}

func TestServeEmptyAddr(t *testing.T) {
	t.Parallel()
	require.NoError(t, Serve(context.Background(), "", NewRegistry(), slog.New(slog.DiscardHandler)))
}

func TestServeBadAddr(t *testing.T) {
	t.Parallel()
	err := Serve(context.Background(), "127.0.0.1:notaport", NewRegistry(), slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "listen")
}
