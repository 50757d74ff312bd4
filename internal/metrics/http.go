package metrics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is the default listen address of the metrics HTTP server.
const DefaultAddr = "127.0.0.1:7071"

// Handler serves:
//
//	/metrics  the registry, in Prometheus text (or OpenMetrics) format
//	/healthz  200 "ok" while the process serves HTTP at all (liveness)
//	/readyz   200 "ready" while ready() is true, else 503 "not ready"
//	          (readiness: pass the pool's Writable, "some node takes writes")
//
// ready nil means always ready.
func (m *Metrics) Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.GathererFunc(m.Gather), promhttp.HandlerOpts{
		Registry:          m.reg, // promhttp_metric_handler_errors_total
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil && !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return mux
}

// Server is the metrics HTTP listener. Create it with Listen.
type Server struct {
	lis  net.Listener
	srv  *http.Server
	done chan struct{}
	err  error
}

// Listen opens addr ("" means DefaultAddr; port 0 picks a free port) and
// starts serving h on it, with TLS when tlsConf is not nil (a client
// certificate is required if tlsConf says so: see package tlsutil). Close
// stops it.
func Listen(addr string, h http.Handler, tlsConf *tls.Config, logger *slog.Logger) (*Server, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	if tlsConf != nil {
		lis = tls.NewListener(lis, tlsConf)
	}
	s := &Server{
		lis: lis,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	logger.Info("serving metrics", "addr", lis.Addr().String(), "tls", tlsConf != nil)
	return s, nil
}

// Addr is the listening address, with the real port.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close stops the server, letting requests in progress finish for up to
// a second, and returns the serve error, if any. Safe to call more than
// once.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	if s.err != nil {
		return fmt.Errorf("metrics: serve: %w", s.err)
	}
	return nil
}
