package service

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestStreamEndsWhenClientStopsReading: a Subscribe or SendStream whose
// client half-closes and then reads nothing has a stream.Send blocked by
// flow control; its handler still ends within the send grace (gRPC then
// ends the stream, which releases the Send), the subscription's deliveries
// go back to nsqd, and Shutdown finds every goroutine ended. The handler
// used to wait for that Send until the client went away.
func TestStreamEndsWhenClientStopsReading(t *testing.T) {
	env := startNSQ(t, 1)
	const grace = 300 * time.Millisecond
	q := New(env.pool, WithSendGrace(grace), WithLogger(nsqdtest.Logger(t, slog.LevelWarn)))
	ended := make(chan string, 4)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(q.Limits().MaxRequestBytes()),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			ended <- info.FullMethod
			return err
		}))
	qgatev1.RegisterQueueServiceServer(srv, q)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	// Fixed 64 KiB windows: no BDP growth, so a few responses fill them.
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := qgatev1.NewQueueServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // the client goes away only at the end of the test
	waitEnded := func(t *testing.T, method string) {
		t.Helper()
		select {
		case m := <-ended:
			if m != method {
				t.Fatalf("handler of %s ended, want %s", m, method)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s handler still running 20s after its client half-closed (grace %v)", method, grace)
		}
	}

	t.Run("Subscribe", func(t *testing.T) {
		const n = 40 // of 100 kB: 4 MB, far beyond the 64 KiB window
		body := bytes.Repeat([]byte("s"), 100_000)
		for range n {
			if _, err := client.Send(ctx, &qgatev1.SendRequest{Topic: "stall", Messages: []*qgatev1.Message{{Body: body}}}); err != nil {
				t.Fatal(err)
			}
		}
		stream, err := client.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		open := &qgatev1.SubscribeRequest_Open{Topic: "stall", Channel: "c", MaxInFlight: n}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
			t.Fatal(err)
		}
		if resp, err := stream.Recv(); err != nil || resp.GetOpened() == nil {
			t.Fatalf("got %v, %v; want opened", resp, err)
		}
		waitFor(t, "deliveries under way", func() bool {
			ch := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("stall").Channel("c")
			return ch != nil && ch.InFlightCount > 2
		})
		if err := stream.CloseSend(); err != nil { // and read nothing more
			t.Fatal(err)
		}
		waitEnded(t, "/qgate.v1.QueueService/Subscribe")
		waitFor(t, "every delivery handed back", func() bool {
			ch := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("stall").Channel("c")
			return ch != nil && ch.InFlightCount == 0 && ch.Depth == n
		})
	})

	t.Run("Subscribe, an ack error unread", func(t *testing.T) {
		// As above, and the client's last message needs an ack_error,
		// which the handler itself sends: it must not block the handler.
		const n = 40
		body := bytes.Repeat([]byte("a"), 100_000)
		for range n {
			if _, err := client.Send(ctx, &qgatev1.SendRequest{Topic: "stallack", Messages: []*qgatev1.Message{{Body: body}}}); err != nil {
				t.Fatal(err)
			}
		}
		stream, err := client.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		open := &qgatev1.SubscribeRequest_Open{Topic: "stallack", Channel: "c", MaxInFlight: n}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
			t.Fatal(err)
		}
		if resp, err := stream.Recv(); err != nil || resp.GetOpened() == nil {
			t.Fatalf("got %v, %v; want opened", resp, err)
		}
		waitFor(t, "every message taken by the subscription", func() bool {
			ch := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("stallack").Channel("c")
			return ch != nil && ch.InFlightCount == n
		})
		if err := stream.Send(ackReq("999999")); err != nil { // unknown: an ack_error
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		waitEnded(t, "/qgate.v1.QueueService/Subscribe")
		waitFor(t, "every delivery handed back", func() bool {
			ch := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("stallack").Channel("c")
			return ch != nil && ch.InFlightCount == 0 && ch.Depth == n
		})
	})

	t.Run("SendStream", func(t *testing.T) {
		stream, err := client.SendStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs := make([]*qgatev1.Message, 1000) // a response of 1000 ids: 34 kB
		for i := range msgs {
			msgs[i] = &qgatev1.Message{Body: []byte("x")}
		}
		for i := range 5 {
			req := &qgatev1.SendStreamRequest{RequestId: uint64(i), Send: &qgatev1.SendRequest{Topic: "stallsend", Messages: msgs}}
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.CloseSend(); err != nil { // and read nothing
			t.Fatal(err)
		}
		waitEnded(t, "/qgate.v1.QueueService/SendStream")
	})

	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := q.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v; want every stream goroutine ended", err)
	}
}
