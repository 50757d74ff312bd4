package limits_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/grpctest"
	"github.com/qgate/qgate/internal/limits"
	"github.com/qgate/qgate/service"
)

const (
	secretA = "token-a-secret-0123456789"
	secretB = "token-b-secret-0123456789"
)

// fakeQueue stands in for the service: the tests exercise the limits.
type fakeQueue struct {
	qgatev1.UnimplementedQueueServiceServer
}

func (fakeQueue) Send(context.Context, *qgatev1.SendRequest) (*qgatev1.SendResponse, error) {
	return &qgatev1.SendResponse{MessageIds: []string{"id"}}, nil
}

func (fakeQueue) SendStream(stream grpc.BidiStreamingServer[qgatev1.SendStreamRequest, qgatev1.SendStreamResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&qgatev1.SendStreamResponse{RequestId: req.GetRequestId()}); err != nil {
			return err
		}
	}
}

func (fakeQueue) Subscribe(stream grpc.BidiStreamingServer[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse]) error {
	if err := stream.Send(&qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_Opened_{Opened: &qgatev1.SubscribeResponse_Opened{}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func start(t *testing.T, cfg limits.Config, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	store, err := auth.NewStore([]auth.Token{
		{Name: "a", Secret: secretA, Send: []string{"*"}, Subscribe: []string{"*"}},
		{Name: "b", Secret: secretB, Send: []string{"*"}, Subscribe: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(store)
	l := limits.New(cfg)
	opts = append(opts, l.ServerOptions()...)
	opts = append(opts,
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor(), l.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor(), l.StreamServerInterceptor()),
	)
	srv := grpc.NewServer(opts...)
	qgatev1.RegisterQueueServiceServer(srv, fakeQueue{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	conn := grpctest.Serve(t, srv)
	return conn
}

func ctxFor(t *testing.T, secret string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}

func sendReq() *qgatev1.SendRequest {
	return &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x")}}}
}

func TestRatePerToken(t *testing.T) {
	conn := start(t, limits.Config{Rate: 0.001, Burst: 2})
	q := qgatev1.NewQueueServiceClient(conn)
	for i, want := range []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted} {
		_, err := q.Send(ctxFor(t, secretA), sendReq())
		if got := status.Code(err); got != want {
			t.Errorf("send %d of token a: got %v (%v), want %v", i, got, err, want)
		}
	}
	if _, err := q.Send(ctxFor(t, secretB), sendReq()); err != nil {
		t.Errorf("token b has its own bucket: %v", err)
	}
	// Health needs no token and is not limited.
	for range 3 {
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health: %v", err)
		}
	}
}

func TestRateSendStream(t *testing.T) {
	// The stream's start takes one request of the burst of 3, leaving two.
	conn := start(t, limits.Config{Rate: 0.001, Burst: 3})
	stream, err := qgatev1.NewQueueServiceClient(conn).SendStream(ctxFor(t, secretA))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stream.Send(&qgatev1.SendStreamRequest{RequestId: uint64(i), Send: sendReq()}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[uint64]codes.Code{0: codes.OK, 1: codes.OK, 2: codes.ResourceExhausted}
	for range want {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := codes.Code(resp.GetStatus().GetCode()); got != want[resp.GetRequestId()] {
			t.Errorf("request %d: got %v, want %v", resp.GetRequestId(), got, want[resp.GetRequestId()])
		}
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("stream end: got %v, want EOF", err)
	}
}

func subscribe(t *testing.T, conn *grpc.ClientConn, secret string) (context.CancelFunc, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxFor(t, secret))
	stream, err := qgatev1.NewQueueServiceClient(conn).Subscribe(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		cancel()
	}
	return cancel, err
}

func TestSubscriptionsPerToken(t *testing.T) {
	conn := start(t, limits.Config{MaxSubscriptionsPerToken: 2})
	var open []context.CancelFunc
	for i := range 2 {
		cancel, err := subscribe(t, conn, secretA)
		if err != nil {
			t.Fatalf("subscription %d: %v", i, err)
		}
		open = append(open, cancel)
	}
	if _, err := subscribe(t, conn, secretA); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third subscription: got %v, want ResourceExhausted", err)
	}
	cancelB, err := subscribe(t, conn, secretB)
	if err != nil {
		t.Errorf("token b's subscription: %v", err)
	} else {
		cancelB()
	}
	// A closed subscription frees its slot (once the server has seen it end).
	open[0]()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cancel, err := subscribe(t, conn, secretA)
		if err == nil {
			cancel()
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("subscription after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	open[1]()
}

func TestMaxConcurrentStreams(t *testing.T) {
	conn := start(t, limits.Config{MaxConcurrentStreams: 1})
	hc := healthpb.NewHealthClient(conn)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	w1, err := hc.Watch(ctx1, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Recv(); err != nil {
		t.Fatal(err)
	}
	// The second stream waits for the first one's slot.
	got := make(chan error, 1)
	go func() {
		w2, err := hc.Watch(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w2.Recv()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second stream ran beside the first: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancel1()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second stream: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second stream did not start after the first ended")
	}
}

func TestMaxRecvMsgSize(t *testing.T) {
	const batch = 1 << 20
	if got, want := limits.MaxRecvMsgSize(batch), (service.Limits{MaxBatchBytes: batch}).MaxRequestBytes(); got != want {
		t.Errorf("MaxRecvMsgSize(%d) = %d, service wants %d", batch, got, want)
	}
	conn := start(t, limits.Config{}, grpc.MaxRecvMsgSize(limits.MaxRecvMsgSize(batch)))
	q := qgatev1.NewQueueServiceClient(conn)
	// A batch at the limit, in many messages with attributes, gets through.
	req := &qgatev1.SendRequest{Topic: "t"}
	for range 1000 {
		req.Messages = append(req.Messages, &qgatev1.Message{Body: make([]byte, batch/1000-40), Attributes: map[string]string{"k": "v"}})
	}
	if _, err := q.Send(ctxFor(t, secretA), req); err != nil {
		t.Errorf("batch at the limit: %v", err)
	}
	big := &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: make([]byte, batch+100<<10)}}}
	if _, err := q.Send(ctxFor(t, secretA), big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("request over the limit: got %v, want ResourceExhausted", err)
	}
}
