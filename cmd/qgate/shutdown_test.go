package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestShutdownHandsBackAndEndsSubscribe stops serve as SIGTERM does while
// a subscriber holds unacked deliveries: the stream must end with
// UNAVAILABLE and the nsqd nodes (which outlive qgate here) must have every
// message back in the queue, none left in flight until its deadline.
func TestShutdownHandsBackAndEndsSubscribe(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	var list []string
	for _, n := range nodes {
		list = append(list, n.TCPAddr+"/"+n.HTTPAddr)
	}
	addr, stop := startServe(t, "--nsqd", strings.Join(list, ","))
	client := qgatev1.NewQueueServiceClient(dialTest(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const n = 6
	stream, err := client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open := &qgatev1.SubscribeRequest_Open{Topic: "shut", Channel: "c", MaxInFlight: 10}
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // opened
		t.Fatal(err)
	}
	for range n {
		req := &qgatev1.SendRequest{Topic: "shut", Messages: []*qgatev1.Message{{Body: []byte("m")}}}
		if _, err := client.Send(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	for got := 0; got < n; {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d deliveries: %v", got, err)
		}
		if resp.GetDelivery() != nil {
			got++
		}
	}

	if code := stop(); code != 0 {
		t.Errorf("serve exit status %d, want 0", code)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("stream after shutdown: got %v, want Unavailable", err)
	}
	// serve writes two copies of each message (--replicas 2 on two
	// nodes): the first copy, which the subscriber held and qgate must hand
	// back (ready), and a standby, which is either deferred (qgate saw it
	// early and REQueued it until it is due) or still ready (not yet read).
	var depth, deferred, inFlight int64
	for _, node := range nodes {
		topic := nsqdtest.Stats(t, node.HTTPAddr).Topic("shut")
		if topic == nil {
			continue
		}
		if ch := topic.Channel("c"); ch != nil {
			depth += ch.Depth
			inFlight += int64(ch.InFlightCount)
			deferred += int64(ch.DeferredCount)
		}
	}
	if depth < n || depth+deferred != 2*n || inFlight != 0 {
		t.Errorf("after shutdown the nodes hold %d ready, %d deferred and %d in flight; want %d copies (%d first copies handed back, ready) and none in flight",
			depth, deferred, inFlight, 2*n, n)
	}
}
