package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/service"
)

// TestServeFullSizeBody: a body of exactly nsqd's default --max-msg-size
// (1 MiB) does not fit that limit once qgate's envelope is added, and is
// refused with the largest body that would fit; with --max-body-size raised
// the embedded nodes take the larger messages too, and the 1 MiB body goes
// through real nsqd and back. Before, the embedded nodes kept nsqd's 1 MiB
// whatever --max-body-size said, and closed the connection on such a body.
func TestServeFullSizeBody(t *testing.T) {
	const raised = 1<<20 + 64<<10
	s := startServeEnv(t, nil, "--max-body-size", strconv.Itoa(raised), "--metrics-addr", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := qgatev1.NewQueueServiceClient(dialTest(t, s.addr))
	body := bytes.Repeat([]byte("b"), raised)
	full := body[:service.DefaultMaxBodyBytes]
	send := func(size int) error {
		_, err := q.Send(ctx, &qgatev1.SendRequest{Topic: "full", Messages: []*qgatev1.Message{{Body: body[:size]}}})
		return err
	}
	if err := send(len(full)); err != nil {
		t.Fatalf("1 MiB body with --max-body-size %d: %v", raised, err)
	}
	sub, err := q.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open := &qgatev1.SubscribeRequest_Open{Topic: "full", Channel: "c", AckDeadline: durationpb.New(30 * time.Second)}
	if err := sub.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := sub.Recv()
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if d := resp.GetDelivery(); d != nil {
			if !bytes.Equal(d.GetBody(), full) {
				t.Errorf("delivered a body of %d bytes, want the 1 MiB sent", len(d.GetBody()))
			}
			break
		}
	}
	if err := send(raised); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "qgate's envelope") || !strings.Contains(err.Error(), "--max-body-size") {
		t.Errorf("body of the raised limit itself: %v; want InvalidArgument naming the envelope and --max-body-size", err)
	}
}
