package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

// backend is a pool over in-process nsqd nodes: what a qgate serves.
type backend struct {
	pool  *nsq.Pool
	log   *slog.Logger
	close func()
}

// startBackend starts n in-process nsqd nodes and a pool over them, and
// waits until the pool takes writes. It takes no testing.T so that
// Example functions can use it.
func startBackend(n int, log *slog.Logger) (*backend, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "qgate-client-")
	if err != nil {
		return nil, err
	}
	var nodes []*nsqd.Node
	stopNodes := func() {
		for _, nd := range nodes {
			_ = nd.Stop()
		}
		_ = os.RemoveAll(dir)
	}
	var cfgs []nsq.NodeConfig
	for i := range n {
		nd, err := nsqd.Start(context.Background(), nsqd.Options{DataDir: fmt.Sprintf("%s/n%d", dir, i), Logger: log})
		if err != nil {
			stopNodes()
			return nil, err
		}
		nodes = append(nodes, nd)
		cfgs = append(cfgs, nsq.NodeConfig{Name: fmt.Sprintf("n%d", i), TCPAddr: nd.TCPAddr, HTTPAddr: nd.HTTPAddr})
	}
	groups, err := nsq.GroupsForMode(nsq.ModeCluster, cfgs)
	if err != nil {
		stopNodes()
		return nil, err
	}
	pool, err := nsq.New(nsq.Config{Groups: groups, Logger: log,
		Check: health.Config{Interval: 100 * time.Millisecond, Timeout: time.Second, Fall: 2, Rise: 1}})
	if err != nil {
		stopNodes()
		return nil, err
	}
	b := &backend{pool: pool, log: log, close: func() { _ = pool.Close(); stopNodes() }}
	deadline := time.Now().Add(20 * time.Second)
	for !pool.Writable() {
		if time.Now().After(deadline) {
			b.close()
			return nil, errors.New("pool not writable after 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return b, nil
}

// gatewayOptions are the settings of a test qgate.
type gatewayOptions struct {
	addr   string       // default 127.0.0.1:0
	tokens []auth.Token // none: auth off
	// stall, if set, holds every SendStream handler until it is closed.
	stall chan struct{}
	tls   *tls.Config // nil: plaintext
	// loseResponses, if above 0, is how many SendStream streams lose their
	// first response after the request was written (the stream then ends
	// with UNAVAILABLE, as when a gateway dies at that moment).
	loseResponses int
}

// gateway is one qgate server over a backend, wired as cmd/qgate wires it.
type gateway struct {
	addr     string
	requests atomic.Int64 // SendStream requests received
	lost     atomic.Int64 // responses lost (gatewayOptions.loseResponses)

	mu       sync.Mutex
	sentIDs  [][]string // the message ids of each SendStream request received
	srv      *server.Server
	queue    *service.Queue
	cancel   context.CancelFunc
	served   chan error
	stopOnce sync.Once
}

// startGateway serves the QueueService over b.
func startGateway(b *backend, o gatewayOptions) (*gateway, error) {
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	g := &gateway{queue: service.New(b.pool, service.WithLogger(b.log)), served: make(chan error, 1)}
	count := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == "/qgate.v1.QueueService/SendStream" {
			if o.stall != nil {
				select {
				case <-o.stall:
				case <-ss.Context().Done():
					return ss.Context().Err()
				}
			}
			cs := &countingStream{ServerStream: ss, g: g}
			if g.lost.Add(1) <= int64(o.loseResponses) {
				cs.lose = true
			}
			ss = cs
		}
		return h(srv, ss)
	}
	cfg := server.Config{
		Addr: o.addr, Logger: b.log, Queue: g.queue,
		OnShutdown:      []func(){g.queue.BeginShutdown},
		ShutdownTimeout: 5 * time.Second,
		FirstStream:     []grpc.StreamServerInterceptor{count},
	}
	if o.tls != nil {
		cfg.ServerOptions = append(cfg.ServerOptions, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	if len(o.tokens) > 0 {
		store, err := auth.NewStore(o.tokens)
		if err != nil {
			return nil, err
		}
		a := auth.New(store)
		cfg.Unary = append(cfg.Unary, a.UnaryServerInterceptor())
		cfg.Stream = append(cfg.Stream, a.StreamServerInterceptor())
	}
	// A restarted gateway may find its port still held for a moment.
	var srv *server.Server
	var err error
	for range 50 {
		if srv, err = server.New(cfg); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	g.srv = srv
	g.addr = srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.served <- srv.Serve(ctx) }()
	return g, nil
}

// stop shuts the gateway down as on SIGTERM: streams end with UNAVAILABLE,
// subscriptions hand back their unacked deliveries.
func (g *gateway) stop() error {
	var err error
	g.stopOnce.Do(func() {
		g.cancel()
		err = <-g.served
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, g.queue.Shutdown(ctx))
	})
	return err
}

// kill stops the gateway as abruptly as a process can be in-process: every
// connection closed at once, nothing answered.
func (g *gateway) kill() error {
	g.srv.GRPC().Stop()
	return g.stop()
}

// countingStream counts and records the requests of a SendStream, and
// may lose its first response.
type countingStream struct {
	grpc.ServerStream
	g    *gateway
	lose bool
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.g.requests.Add(1)
		var ids []string
		for _, msg := range m.(*qgatev1.SendStreamRequest).GetSend().GetMessages() {
			ids = append(ids, msg.GetId())
		}
		s.g.mu.Lock()
		s.g.sentIDs = append(s.g.sentIDs, ids)
		s.g.mu.Unlock()
	}
	return err
}

func (s *countingStream) SendMsg(m any) error {
	if s.lose {
		return status.Error(codes.Unavailable, "test: response lost")
	}
	return s.ServerStream.SendMsg(m)
}

// requestIDs returns the message ids of every SendStream request received.
func (g *gateway) requestIDs() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sentIDs)
}

// env is a backend and one gateway, stopped at cleanup.
type env struct {
	backend *backend
	gw      *gateway
}

func newEnv(t *testing.T, o gatewayOptions) *env {
	t.Helper()
	b, err := startBackend(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	g, err := startGateway(b, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.stop(); err != nil {
			t.Errorf("gateway stop: %v", err)
		}
	})
	return &env{backend: b, gw: g}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline for a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
