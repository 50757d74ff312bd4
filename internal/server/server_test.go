package server

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// fakeQueue stands in for the queue service: the wiring under test here does
// not depend on what the handlers do. Send panics; Subscribe blocks until
// stop is closed and then ends the stream the way the real service does on
// shutdown.
type fakeQueue struct {
	qgatev1.UnimplementedQueueServiceServer
	stop  chan struct{}
	block chan struct{} // SendStream ignores everything until it is closed
}

func (f *fakeQueue) SendStream(stream grpc.BidiStreamingServer[qgatev1.SendStreamRequest, qgatev1.SendStreamResponse]) error {
	if err := stream.Send(&qgatev1.SendStreamResponse{}); err != nil {
		return err
	}
	<-f.block
	return nil
}

func (f *fakeQueue) Send(context.Context, *qgatev1.SendRequest) (*qgatev1.SendResponse, error) {
	panic("boom")
}

func (f *fakeQueue) Subscribe(stream grpc.BidiStreamingServer[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse]) error {
	if err := stream.Send(&qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_Opened_{Opened: &qgatev1.SubscribeResponse_Opened{}}}); err != nil {
		return err
	}
	select {
	case <-f.stop:
		return status.Error(codes.Unavailable, "server shutting down")
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// start serves cfg on a free loopback port and returns the server, a client
// connection and a func that waits for Serve's result.
func start(t *testing.T, cfg Config) (*Server, *grpc.ClientConn, func() error) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = testLogger(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	wait := sync.OnceValue(func() error { return <-served })
	t.Cleanup(func() {
		cancel()
		_ = wait()
	})
	conn, err := grpc.NewClient(s.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn, wait
}

// ListServices asks server reflection for the service names.
func ListServices(t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names
}

func TestServicesListed(t *testing.T) {
	_, conn, _ := start(t, Config{Queue: &fakeQueue{}, Admin: qgatev1.UnimplementedAdminServiceServer{}})
	got := ListServices(t, conn)
	want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection", "qgate.v1.AdminService", "qgate.v1.QueueService"}
	if !slices.Equal(got, want) {
		t.Errorf("services: got %v, want %v", got, want)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	_, conn, _ := start(t, Config{Queue: &fakeQueue{}})
	client := qgatev1.NewQueueServiceClient(conn)
	for range 2 { // the server survives the first panic
		_, err := client.Send(context.Background(), &qgatev1.SendRequest{})
		if got := status.Code(err); got != codes.Internal {
			t.Fatalf("Send: got %v (%v), want Internal", got, err)
		}
	}
}

// openStream opens a Subscribe and waits for the server's first message.
func openStream(t *testing.T, conn *grpc.ClientConn) grpc.BidiStreamingClient[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse] {
	t.Helper()
	stream, err := qgatev1.NewQueueServiceClient(conn).Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	return stream
}

func TestShutdownRunsHooksAndEndsStreams(t *testing.T) {
	q := &fakeQueue{stop: make(chan struct{})}
	var s *Server
	var statusAtHook healthpb.HealthCheckResponse_ServingStatus
	hook := func() {
		resp, err := s.Health().Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil {
			statusAtHook = resp.GetStatus()
		}
		close(q.stop)
	}
	s, conn, served := start(t, Config{Queue: q, OnShutdown: []func(){hook}, ShutdownTimeout: time.Minute})
	stream := openStream(t, conn)

	begin := time.Now()
	s.Shutdown()
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Shutdown took %v; the hook should have ended the stream at once", took)
	}
	if statusAtHook != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health when hooks ran: got %v, want NOT_SERVING", statusAtHook)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after shutdown: got %v, want Unavailable", err)
	}
	if err := served(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestShutdownCancelsStreamsNoHookEnds(t *testing.T) {
	q := &fakeQueue{stop: make(chan struct{})} // never closed: only the stream's context ends it
	s, conn, _ := start(t, Config{Queue: q, ShutdownTimeout: time.Minute, StreamGrace: 100 * time.Millisecond})
	stream := openStream(t, conn)

	begin := time.Now()
	s.Shutdown()
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Shutdown took %v, want about the 100ms stream grace", took)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after shutdown: got %v, want Unavailable", err)
	}
}

func TestShutdownTimeoutStopsHard(t *testing.T) {
	q := &fakeQueue{block: make(chan struct{})} // a handler that ignores its context
	t.Cleanup(func() { close(q.block) })
	s, conn, _ := start(t, Config{Queue: q, ShutdownTimeout: 300 * time.Millisecond})
	stream, err := qgatev1.NewQueueServiceClient(conn).SendStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	begin := time.Now()
	s.Shutdown()
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Shutdown took %v, want about the 300ms timeout", took)
	}
	_, err = stream.Recv()
	if err == nil || err == io.EOF {
		t.Errorf("stream after hard stop: got %v, want an error", err)
	}
	s.Shutdown() // safe twice
}

func TestChainOrder(t *testing.T) {
	var order []string
	var firstSaw codes.Code
	first := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		order = append(order, "first")
		resp, err := h(ctx, req)
		firstSaw = status.Code(err)
		return resp, err
	}
	inner := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		order = append(order, "inner")
		return h(ctx, req)
	}
	_, conn, _ := start(t, Config{Queue: &fakeQueue{},
		FirstUnary: []grpc.UnaryServerInterceptor{first},
		Unary:      []grpc.UnaryServerInterceptor{inner}})
	_, err := qgatev1.NewQueueServiceClient(conn).Send(context.Background(), &qgatev1.SendRequest{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("Send: got %v, want Internal", err)
	}
	if !slices.Equal(order, []string{"first", "inner"}) || firstSaw != codes.Internal {
		t.Errorf("got order %v and first saw %v; want [first inner] and Internal (recovery innermost)", order, firstSaw)
	}
}
