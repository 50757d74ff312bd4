// Package server runs qgate's gRPC server: the interceptor chain, server
// reflection, the standard grpc.health.v1.Health service and a graceful
// shutdown that ends long-lived streams instead of waiting for them forever.
//
// It knows nothing of NSQ: the application hands it the service
// implementations and the hooks that end their streams, so it can be tested
// with any implementation and reused by every way qgate is started.
//
// # Shutdown
//
// Shutdown (or the end of Serve's context) runs, in order:
//  1. health: every service NOT_SERVING, so load balancers and health
//     watchers move away before connections are refused;
//  2. Config.OnShutdown hooks: they end open streams (subscriptions hand back
//     their unacked messages and end with UNAVAILABLE), which GracefulStop
//     would otherwise wait for;
//  3. GracefulStop: no new RPCs, running ones may finish;
//  4. streams still open after Config.StreamGrace (streams no hook ends,
//     such as AdminService.WatchNodes) have their context cancelled and end
//     with UNAVAILABLE; unary calls keep running;
//  5. Stop, if GracefulStop has not returned within Config.ShutdownTimeout:
//     every remaining RPC is cancelled and every connection closed.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Defaults of Config.
const (
	DefaultAddr            = "127.0.0.1:7070"
	DefaultShutdownTimeout = 10 * time.Second
	DefaultStreamGrace     = time.Second
	// DefaultMaxRecvMsgSize fits the largest batch nsqd takes by default
	// (--max-body-size 5 MiB) plus the request's framing and attributes.
	DefaultMaxRecvMsgSize = 6 << 20
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Addr is the TCP address to listen on. ":7070" listens on every
	// interface; "127.0.0.1:0" picks a free port (see Server.Addr).
	// Default DefaultAddr.
	Addr string
	// Logger receives the access log and the server's own logs. Default
	// slog.Default().
	Logger *slog.Logger
	// Queue and Admin are the qgate.v1 services. Either may be nil to leave
	// the service out.
	Queue qgatev1.QueueServiceServer
	Admin qgatev1.AdminServiceServer
	// OnShutdown hooks run once, at the start of Shutdown, after health has
	// gone NOT_SERVING and before GracefulStop. They must end the services'
	// long-lived streams and return promptly.
	OnShutdown []func()
	// ShutdownTimeout bounds GracefulStop; after it the server stops hard.
	// Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// StreamGrace is how long streams may take to end after the hooks ran
	// before their contexts are cancelled. Default DefaultStreamGrace,
	// capped by ShutdownTimeout.
	StreamGrace time.Duration
	// MaxRecvMsgSize is the largest request message accepted, in bytes.
	// Default DefaultMaxRecvMsgSize.
	MaxRecvMsgSize int
	// Interceptors added to the chain (see interceptors for the order):
	// First* run before logging (metrics, so rejected calls are counted),
	// Unary and Stream between logging and recovery (auth, limits, so
	// their rejections are logged with their code).
	FirstUnary  []grpc.UnaryServerInterceptor
	FirstStream []grpc.StreamServerInterceptor
	Unary       []grpc.UnaryServerInterceptor
	Stream      []grpc.StreamServerInterceptor
	// ServerOptions are appended to the server's own options (TLS
	// credentials, keepalive, stream limits). Interceptors given here run
	// after the whole chain, inside recovery; prefer the fields above.
	ServerOptions []grpc.ServerOption
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.StreamGrace <= 0 {
		c.StreamGrace = DefaultStreamGrace
	}
	c.StreamGrace = min(c.StreamGrace, c.ShutdownTimeout)
	if c.MaxRecvMsgSize <= 0 {
		c.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	return c
}

// Server is a listening gRPC server. Create it with New, run it with Serve.
type Server struct {
	cfg    Config
	lis    net.Listener
	grpc   *grpc.Server
	health *health.Server

	// streams is cancelled by Shutdown after StreamGrace; every stream's
	// context is derived from it (see endStreams).
	streams       context.Context
	cancelStreams context.CancelFunc

	shutdownOnce sync.Once
	stopped      chan struct{} // closed when Shutdown has finished
}

// New validates cfg, opens the listener and builds the gRPC server with the
// interceptor chain, reflection, health and the given services. Nothing is
// served until Serve. A Server that is never served must still be shut down
// (Shutdown) to close its listener.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		lis:     lis,
		health:  health.NewServer(),
		stopped: make(chan struct{}),
	}
	s.streams, s.cancelStreams = context.WithCancel(context.Background())
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
	}, interceptors(cfg, s.endStreams)...)
	opts = append(opts, cfg.ServerOptions...)
	s.grpc = grpc.NewServer(opts...)
	if cfg.Queue != nil {
		qgatev1.RegisterQueueServiceServer(s.grpc, cfg.Queue)
	}
	if cfg.Admin != nil {
		qgatev1.RegisterAdminServiceServer(s.grpc, cfg.Admin)
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
}

// Addr is the address the server listens on, with the real port.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Health is the grpc.health.v1 server. The overall status ("") and each
// service's status are set by the application's health driver; Shutdown
// sets every one NOT_SERVING.
func (s *Server) Health() *health.Server { return s.health }

// GRPC is the underlying server, to register more services before Serve.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Serve serves until ctx is done or the listener fails, then shuts down
// (see Shutdown) and returns. It returns nil after a shutdown asked for by
// ctx or by Shutdown, and the listener's error otherwise.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(s.lis) }()
	s.cfg.Logger.Info("serving gRPC", "addr", s.Addr().String())
	select {
	case <-ctx.Done():
		s.Shutdown()
		<-served
		return nil
	case err := <-served:
		// Serve returns nil only after Stop or GracefulStop: Shutdown was
		// called by someone else. Wait for it to finish.
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			<-s.stopped
			return nil
		}
		s.Shutdown()
		return fmt.Errorf("server: serve: %w", err)
	}
}

// Shutdown stops the server as described in the package doc and returns
// when every RPC has ended (after a hard Stop, at most a second later: a
// handler that ignores its context is not waited for). Safe to call more than once and concurrently;
// every call waits for the first to finish.
func (s *Server) Shutdown() {
	s.shutdownOnce.Do(func() {
		defer close(s.stopped)
		start := time.Now()
		s.health.Shutdown()
		for _, hook := range s.cfg.OnShutdown {
			hook()
		}
		graceful := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(graceful)
		}()
		grace := time.NewTimer(s.cfg.StreamGrace)
		defer grace.Stop()
		hard := time.NewTimer(s.cfg.ShutdownTimeout)
		defer hard.Stop()
		for done := false; !done; {
			select {
			case <-graceful:
				done = true
			case <-grace.C:
				s.cfg.Logger.Info("cancelling streams still open", "after", s.cfg.StreamGrace)
				s.cancelStreams()
			case <-hard.C:
				s.cfg.Logger.Warn("graceful stop timed out; stopping hard",
					"timeout", s.cfg.ShutdownTimeout)
				s.grpc.Stop()
				// Stop closes every connection, but GracefulStop still
				// waits for handlers, and one that ignores its context
				// would hold Shutdown forever.
				select {
				case <-graceful:
				case <-time.After(time.Second):
					s.cfg.Logger.Error("gRPC handlers still running after Stop; not waiting for them")
				}
				done = true
			}
		}
		s.cancelStreams()
		// Close the listener in case Serve never ran.
		_ = s.lis.Close()
		s.cfg.Logger.Info("gRPC server stopped", "took", time.Since(start).Round(time.Millisecond))
	})
	<-s.stopped
}
