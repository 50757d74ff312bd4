package ops_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/limits"
	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

// gatewayOptions are the operations settings of a test gateway.
type gatewayOptions struct {
	tokens []auth.Token // none: auth off
	limits limits.Config
	tls    *tls.Config // nil: plaintext (gRPC and metrics)
}

// gateway is an in-process qgate wired as cmd/qgate wires it (ops.go).
type gateway struct {
	addr        string
	metricsAddr string
	metricsTLS  bool
	store       *auth.Store
	metrics     *metrics.Metrics
}

// startGateway runs the real pool over two in-process nsqd nodes, the
// service and the server, with metrics, auth, limits and TLS wired in the
// way cmd/qgate does (docs/ARCHITECTURE.md, Operations). Everything stops at cleanup.
func startGateway(t *testing.T, o gatewayOptions) *gateway {
	t.Helper()
	log := nsqdtest.Logger(t, slog.LevelWarn)
	var nodes []nsq.NodeConfig
	for _, n := range nsqdtest.StartNodes(t, 2) {
		nodes = append(nodes, nsq.NodeConfig{TCPAddr: n.TCPAddr, HTTPAddr: n.HTTPAddr})
	}
	groups, err := nsq.GroupsForMode(nsq.ModeCluster, nodes)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	pool, err := nsq.New(nsq.Config{Groups: groups, Logger: log, Observer: m,
		Check: health.Config{Interval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })

	// --- the wiring of cmd/qgate/ops.go ---
	stopNodeMetrics := m.StartNodeWatch(context.Background(), pool)
	t.Cleanup(stopNodeMetrics)
	q := service.New(m.Backend(pool), service.WithLogger(log))

	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	var store *auth.Store
	if len(o.tokens) > 0 {
		store, err = auth.NewStore(o.tokens)
		if err != nil {
			t.Fatal(err)
		}
		a := auth.New(store)
		unary = append(unary, a.UnaryServerInterceptor())
		stream = append(stream, a.StreamServerInterceptor())
	}
	lim := limits.New(o.limits)
	unary = append(unary, lim.UnaryServerInterceptor())
	stream = append(stream, lim.StreamServerInterceptor())
	opts := lim.ServerOptions()
	if o.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	srv, err := server.New(server.Config{
		Addr:            "127.0.0.1:0",
		Logger:          log,
		Queue:           q,
		Admin:           service.NewAdmin(pool, service.WithLogger(log)),
		OnShutdown:      []func(){q.BeginShutdown},
		ShutdownTimeout: 5 * time.Second,
		MaxRecvMsgSize:  limits.MaxRecvMsgSize(q.Limits().MaxBatchBytes),
		FirstUnary:      []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()},
		FirstStream:     []grpc.StreamServerInterceptor{m.StreamServerInterceptor()},
		Unary:           unary,
		Stream:          stream,
		ServerOptions:   opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.InitializeGRPC(srv.GRPC())
	hs, err := metrics.Listen("127.0.0.1:0", m.Handler(pool.Writable), o.tls, log)
	if err != nil {
		t.Fatal(err)
	}
	// --- end of the wiring ---

	h := service.StartHealth(srv.Health(), pool)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		err := <-served
		h.Stop()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		err = errors.Join(err, q.Shutdown(sctx), hs.Close())
		if err != nil {
			t.Errorf("gateway stop: %v", err)
		}
	})
	waitWritable(t, pool)
	return &gateway{addr: srv.Addr().String(), metricsAddr: hs.Addr().String(), metricsTLS: o.tls != nil, store: store, metrics: m}
}

func waitWritable(t *testing.T, pool *nsq.Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !pool.Writable() {
		if time.Now().After(deadline) {
			t.Fatal("pool not writable after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrape returns the metrics page of g.
func (g *gateway) scrape(t *testing.T, client *http.Client) string {
	t.Helper()
	scheme := "http"
	if g.metricsTLS {
		scheme = "https"
	}
	resp, err := client.Get(scheme + "://" + g.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
