package service

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestNSQSubscribeBatch: with max_batch 50, a backlog of 500 messages
// arrives in `deliveries` responses of more than one and at most 50, every
// message exactly once, and acks by ack_id settle them all in nsqd.
func TestNSQSubscribeBatch(t *testing.T) {
	env := startNSQ(t, 1)
	const n = 500
	sent := make(map[string]bool, n)
	for i := range n / 100 {
		bodies := make([]string, 100)
		for j := range bodies {
			bodies[j] = fmt.Sprint("m", i*100+j)
		}
		resp, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "bt", Messages: msgs(bodies...)})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range resp.GetMessageIds() {
			sent[id] = true
		}
	}
	stream, opened := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "bt", Channel: "c", MaxInFlight: 100, MaxBatch: 50})
	if opened.GetMaxBatch() != 50 {
		t.Errorf("opened %v, want max_batch 50", opened)
	}
	got := make(map[string]bool, n)
	var sizes []int
	for len(got) < n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ds := resp.GetDeliveries().GetDeliveries()
		if len(ds) == 0 || len(ds) > 50 {
			t.Fatalf("got %v, want deliveries of 1 to 50", resp)
		}
		sizes = append(sizes, len(ds))
		ids := make([]string, len(ds))
		for i, d := range ds {
			if !sent[d.GetMessageId()] || got[d.GetMessageId()] || d.GetAttempt() != 1 {
				t.Fatalf("unexpected delivery %v (already got it: %v)", d, got[d.GetMessageId()])
			}
			got[d.GetMessageId()] = true
			ids[i] = d.GetAckId()
		}
		if err := stream.Send(ackReq(ids...)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d responses for %d deliveries; sizes %v", len(sizes), n, sizes)
	if slices.Max(sizes) < 2 {
		t.Errorf("every response carried one delivery; want batches")
	}
	waitFor(t, "every message acked in nsqd", func() bool {
		ch := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("bt").Channel("c")
		return ch != nil && ch.Depth == 0 && ch.InFlightCount == 0
	})
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	// Nothing more arrives: no ack error, no redelivery.
	if resp, err := stream.Recv(); err == nil {
		t.Errorf("after the last ack: %v, want the end of the stream", resp)
	}
}

// TestNSQSubscribeNoBatch: max_batch 0 and 1 keep one `delivery` per
// response, and opened reports 1.
func TestNSQSubscribeNoBatch(t *testing.T) {
	env := startNSQ(t, 1)
	var streams []qgatev1.QueueService_SubscribeClient
	for _, batch := range []uint32{0, 1} {
		stream, opened := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "nb", Channel: fmt.Sprint("c", batch), MaxBatch: batch})
		if opened.GetMaxBatch() != 1 {
			t.Errorf("max_batch %d: opened %v, want max_batch 1", batch, opened)
		}
		streams = append(streams, stream)
	}
	if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "nb", Messages: msgs("a", "b", "c", "d")}); err != nil {
		t.Fatal(err)
	}
	for _, stream := range streams {
		for range 4 {
			d := recvDelivery(t, stream)
			if err := stream.Send(ackReq(d.GetAckId())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSubscribeBadMaxBatch: max_batch above max_in_flight or 2500, or
// max_batch_bytes above 64 MiB, fails the open with INVALID_ARGUMENT on that
// field.
func TestSubscribeBadMaxBatch(t *testing.T) {
	env := startNSQ(t, 1)
	for _, open := range []*qgatev1.SubscribeRequest_Open{
		{Topic: "bb", Channel: "c", MaxBatch: 101},                                            // default max in flight 100
		{Topic: "bb", Channel: "c", MaxInFlight: 10, MaxBatch: 11},                            // above max in flight
		{Topic: "bb", Channel: "c", MaxInFlight: 2500, MaxBatch: 2501},                        // above 2500
		{Topic: "bb", Channel: "c", MaxInFlight: 10, MaxBatch: 10, MaxBatchBytes: 64<<20 + 1}, // above 64 MiB
	} {
		field := "open.max_batch"
		if open.GetMaxBatchBytes() != 0 {
			field = "open.max_batch_bytes"
		}
		stream, err := env.client.Subscribe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
			t.Fatal(err)
		}
		ctxDone := time.AfterFunc(5*time.Second, func() { stream.CloseSend() })
		_, err = stream.Recv()
		ctxDone.Stop()
		code, fields := violationFields(err)
		if code != codes.InvalidArgument || !slices.Equal(fields, []string{field}) {
			t.Errorf("open %v: got %v %q, want InvalidArgument [%s] (%v)", open, code, fields, field, err)
		}
	}
}

// TestNSQSubscribeBatchBytes: 6 messages of 1 MB with max_in_flight 6 and
// max_batch 6, read by a client with gRPC's default 4 MiB receive limit.
// Without a byte budget one `deliveries` response carried up to 6 MB: the
// client's stream died, the messages came back, and a client reconnecting
// with the same settings failed forever. With the default budget (1 MiB)
// each response carries one such delivery (alone, as it is larger than the
// budget); with a budget the client states, as many as fit.
func TestNSQSubscribeBatchBytes(t *testing.T) {
	env := startNSQ(t, 1)
	const n, size = 6, 1_000_000
	body := bytes.Repeat([]byte("x"), size)
	for _, tc := range []struct {
		budget, want uint32 // asked, effective
		most         int    // deliveries per response
	}{
		{0, 1 << 20, 1},
		{3_200_000, 3_200_000, 3},
	} {
		// A topic per case: a channel gets only what is sent after it
		// exists, except the first channel of a topic.
		topic := fmt.Sprint("big", tc.budget)
		for range n {
			if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: topic,
				Messages: []*qgatev1.Message{{Body: body}}}); err != nil {
				t.Fatal(err)
			}
		}
		stream, err := env.client.Subscribe(t.Context(), grpc.MaxCallRecvMsgSize(4<<20)) // gRPC's default
		if err != nil {
			t.Fatal(err)
		}
		open := &qgatev1.SubscribeRequest_Open{Topic: topic, Channel: "c", MaxInFlight: n, MaxBatch: n, MaxBatchBytes: tc.budget}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetOpened().GetMaxBatchBytes(); got != tc.want {
			t.Errorf("budget %d: opened %v, want max_batch_bytes %d", tc.budget, resp, tc.want)
		}
		got := map[string]bool{}
		for len(got) < n {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("budget %d: after %d of %d deliveries: %v", tc.budget, len(got), n, err)
			}
			ds := resp.GetDeliveries().GetDeliveries()
			if len(ds) == 0 || len(ds) > tc.most {
				t.Fatalf("budget %d: a response of %d deliveries, want 1 to %d: %v", tc.budget, len(ds), tc.most, resp.GetAckError())
			}
			ids := make([]string, len(ds))
			for i, d := range ds {
				if len(d.GetBody()) != size || got[d.GetMessageId()] {
					t.Fatalf("budget %d: unexpected delivery of %s (%d bytes)", tc.budget, d.GetMessageId(), len(d.GetBody()))
				}
				got[d.GetMessageId()] = true
				ids[i] = d.GetAckId()
			}
			if err := stream.Send(ackReq(ids...)); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "every message acked in nsqd", func() bool {
			ch := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic(topic).Channel("c")
			return ch != nil && ch.Depth == 0 && ch.InFlightCount == 0
		})
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := stream.Recv(); err != nil {
				break
			}
		}
	}
}
