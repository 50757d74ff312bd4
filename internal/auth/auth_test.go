package auth_test

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
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/grpctest"
)

const (
	ordersSecret = "orders-secret-0123456789"
	adminSecret  = "admin-secret-0123456789"
)

func testTokens() []auth.Token {
	return []auth.Token{
		{Name: "orders", Secret: ordersSecret, Send: []string{"orders", "orders.*"}, Subscribe: []string{"orders"}},
		{Name: "admin", Secret: adminSecret, Send: []string{"*"}, Subscribe: []string{"*"}, Admin: true},
	}
}

// fakeQueue stands in for the service: the tests exercise the interceptors,
// not the queue.
type fakeQueue struct {
	qgatev1.UnimplementedQueueServiceServer
	caller chan string // the principal's name seen by Send
}

func (f *fakeQueue) Send(ctx context.Context, req *qgatev1.SendRequest) (*qgatev1.SendResponse, error) {
	if p, ok := auth.FromContext(ctx); ok {
		select {
		case f.caller <- p.Name():
		default:
		}
	}
	return &qgatev1.SendResponse{MessageIds: []string{"id"}}, nil
}

func (f *fakeQueue) SendStream(stream grpc.BidiStreamingServer[qgatev1.SendStreamRequest, qgatev1.SendStreamResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&qgatev1.SendStreamResponse{RequestId: req.GetRequestId(), MessageIds: []string{"id"}}); err != nil {
			return err
		}
	}
}

func (f *fakeQueue) Subscribe(stream grpc.BidiStreamingServer[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_Opened_{Opened: &qgatev1.SubscribeResponse_Opened{}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return status.FromContextError(stream.Context().Err()).Err()
}

type fakeAdmin struct {
	qgatev1.UnimplementedAdminServiceServer
}

func (fakeAdmin) ListNodes(context.Context, *qgatev1.ListNodesRequest) (*qgatev1.ListNodesResponse, error) {
	return &qgatev1.ListNodesResponse{}, nil
}

type env struct {
	store *auth.Store
	conn  *grpc.ClientConn
	queue qgatev1.QueueServiceClient
	admin qgatev1.AdminServiceClient
	fake  *fakeQueue
}

func start(t *testing.T) *env {
	t.Helper()
	store, err := auth.NewStore(testTokens())
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(store)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()),
	)
	fake := &fakeQueue{caller: make(chan string, 1)}
	qgatev1.RegisterQueueServiceServer(srv, fake)
	qgatev1.RegisterAdminServiceServer(srv, fakeAdmin{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	conn := grpctest.Serve(t, srv)
	return &env{store: store, conn: conn, queue: qgatev1.NewQueueServiceClient(conn), admin: qgatev1.NewAdminServiceClient(conn), fake: fake}
}

func withToken(ctx context.Context, secret string) context.Context {
	if secret == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sendReq(topic string) *qgatev1.SendRequest {
	return &qgatev1.SendRequest{Topic: topic, Messages: []*qgatev1.Message{{Body: []byte("x")}}}
}

func TestUnaryTable(t *testing.T) {
	e := start(t)
	tests := []struct {
		name   string
		secret string
		call   func(ctx context.Context) error
		want   codes.Code
	}{
		{"health without token", "", func(ctx context.Context) error {
			_, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, codes.OK},
		{"reflection without token", "", func(ctx context.Context) error {
			stream, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
			if err != nil {
				return err
			}
			req := &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}
			if err := stream.Send(req); err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, codes.OK},
		{"no token", "", func(ctx context.Context) error {
			_, err := e.queue.Send(ctx, sendReq("orders"))
			return err
		}, codes.Unauthenticated},
		{"wrong token", "not-a-known-secret-at-all", func(ctx context.Context) error {
			_, err := e.queue.Send(ctx, sendReq("orders"))
			return err
		}, codes.Unauthenticated},
		{"right token wrong topic", ordersSecret, func(ctx context.Context) error {
			_, err := e.queue.Send(ctx, sendReq("payments"))
			return err
		}, codes.PermissionDenied},
		{"right token, topic with the granted name as prefix", ordersSecret, func(ctx context.Context) error {
			_, err := e.queue.Send(ctx, sendReq("orders_secret"))
			return err
		}, codes.PermissionDenied},
		{"right token right topic", ordersSecret, func(ctx context.Context) error {
			_, err := e.queue.Send(ctx, sendReq("orders"))
			return err
		}, codes.OK},
		{"right token, glob topic", ordersSecret, func(ctx context.Context) error {
			_, err := e.queue.Send(ctx, sendReq("orders.eu"))
			return err
		}, codes.OK},
		{"admin without admin grant", ordersSecret, func(ctx context.Context) error {
			_, err := e.admin.ListNodes(ctx, &qgatev1.ListNodesRequest{})
			return err
		}, codes.PermissionDenied},
		{"admin with admin grant", adminSecret, func(ctx context.Context) error {
			_, err := e.admin.ListNodes(ctx, &qgatev1.ListNodesRequest{})
			return err
		}, codes.OK},
		{"admin without token", "", func(ctx context.Context) error {
			_, err := e.admin.ListNodes(ctx, &qgatev1.ListNodesRequest{})
			return err
		}, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(withToken(testCtx(t), tt.secret))
			if got := status.Code(err); got != tt.want {
				t.Errorf("got %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestPrincipalInContext(t *testing.T) {
	e := start(t)
	if _, err := e.queue.Send(withToken(testCtx(t), ordersSecret), sendReq("orders")); err != nil {
		t.Fatal(err)
	}
	if got := <-e.fake.caller; got != "orders" {
		t.Errorf("FromContext name = %q, want orders", got)
	}
}

func openSub(t *testing.T, e *env, secret string, open *qgatev1.SubscribeRequest_Open) (grpc.BidiStreamingClient[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse], error) {
	t.Helper()
	stream, err := e.queue.Subscribe(withToken(testCtx(t), secret))
	if err != nil {
		return nil, err
	}
	// A Send on a stream the server has ended returns io.EOF; Recv then
	// returns the status.
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil && err != io.EOF {
		return nil, err
	}
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return stream, nil
}

func TestSubscribeTable(t *testing.T) {
	e := start(t)
	tests := []struct {
		name   string
		secret string
		open   *qgatev1.SubscribeRequest_Open
		want   codes.Code
	}{
		{"no token", "", &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c"}, codes.Unauthenticated},
		{"wrong token", "not-a-known-secret-at-all", &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c"}, codes.Unauthenticated},
		{"wrong topic", ordersSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders.eu", Channel: "c"}, codes.PermissionDenied},
		{"right topic", ordersSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c"}, codes.OK},
		{"default dead-letter topic", ordersSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c", MaxAttempts: 3, DeadLetterTopic: "orders.dead"}, codes.OK},
		{"dead-letter topic not granted", ordersSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c", MaxAttempts: 3, DeadLetterTopic: "payments"}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := openSub(t, e, tt.secret, tt.open)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			if stream != nil {
				_ = stream.CloseSend()
			}
		})
	}
}

func TestSendStreamDeniesOneRequest(t *testing.T) {
	e := start(t)
	stream, err := e.queue.SendStream(withToken(testCtx(t), ordersSecret))
	if err != nil {
		t.Fatal(err)
	}
	for i, topic := range []string{"payments", "orders"} {
		req := &qgatev1.SendStreamRequest{RequestId: uint64(i + 1), Send: sendReq(topic)}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	want := map[uint64]codes.Code{1: codes.PermissionDenied, 2: codes.OK}
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

// streamEnd waits for the stream to end and returns its status code.
func streamEnd(t *testing.T, stream grpc.BidiStreamingClient[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse]) codes.Code {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		return status.Code(err)
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end after the token changed")
		return codes.OK
	}
}

func TestRevocationEndsStreams(t *testing.T) {
	e := start(t)
	revoked, err := openSub(t, e, ordersSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c"})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := openSub(t, e, adminSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c"})
	if err != nil {
		t.Fatal(err)
	}
	// Drop the orders token; admin stays.
	if err := e.store.Replace(testTokens()[1:]); err != nil {
		t.Fatal(err)
	}
	if got := streamEnd(t, revoked); got != codes.Unauthenticated {
		t.Errorf("revoked token's stream ended with %v, want Unauthenticated", got)
	}
	// Narrow admin's subscribe grant: its stream on orders must end too.
	narrowed := testTokens()[1:]
	narrowed[0].Subscribe = []string{"payments"}
	if err := e.store.Replace(narrowed); err != nil {
		t.Fatal(err)
	}
	if got := streamEnd(t, kept); got != codes.PermissionDenied {
		t.Errorf("narrowed token's stream ended with %v, want PermissionDenied", got)
	}
	// New calls see the new set.
	_, err = e.queue.Send(withToken(testCtx(t), ordersSecret), sendReq("orders"))
	if got := status.Code(err); got != codes.Unauthenticated {
		t.Errorf("send with revoked token: got %v, want Unauthenticated", got)
	}
}

func TestReplaceKeepsUnaffectedStreams(t *testing.T) {
	e := start(t)
	stream, err := openSub(t, e, ordersSecret, &qgatev1.SubscribeRequest_Open{Topic: "orders", Channel: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Replace(testTokens()); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		ended <- err
	}()
	select {
	case err := <-ended:
		t.Fatalf("stream ended after a reload that kept its token: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_ = stream.CloseSend()
}
