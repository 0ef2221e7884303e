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

func TestServerListener(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewListenerServer(ln, reg, slog.New(slog.DiscardHandler))
	require.NoError(t, srv.Start(context.Background()))

	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "skiff_test_total 3")
	require.True(t, strings.Contains(string(body), "go_goroutines"), "runtime collector missing")

	srv.Stop()
	srv.Stop() // idempotent
	<-srv.Stopped()
	require.NoError(t, srv.Err())
	_, err = http.Get("http://" + ln.Addr().String() + "/metrics")
	require.Error(t, err, "server still answers after shutdown")
}

func TestServerEmptyAddr(t *testing.T) {
	t.Parallel()
	srv := NewServer("", NewRegistry(), nil)
	require.NoError(t, srv.Start(context.Background()))
	srv.Stop() // nothing served, idle until now
	require.NoError(t, srv.Err())
}

func TestServerBadAddr(t *testing.T) {
	t.Parallel()
	srv := NewServer("127.0.0.1:notaport", NewRegistry(), nil)
	err := srv.Start(context.Background())
	require.ErrorContains(t, err, "listen")
	<-srv.Stopped()
	require.Equal(t, err, srv.Err())
}
