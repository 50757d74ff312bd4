package service

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestNSQBacklogTools: GetBacklog sums a channel's messages over real nsqd
// nodes and lists them per node; PauseChannel, ResumeChannel and
// EmptyChannel act on every node; bad names are INVALID_ARGUMENT.
func TestNSQBacklogTools(t *testing.T) {
	env := startNSQ(t, 2)
	for _, n := range env.nodes {
		nsqdtest.Create(t, n.HTTPAddr, "bl", "c")
	}
	var msgs []*qgatev1.Message
	for range 6 {
		msgs = append(msgs, &qgatev1.Message{Body: []byte("x")})
	}
	for _, m := range msgs { // one Send each: spread over the nodes
		if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "bl", Messages: []*qgatev1.Message{m}, Replicas: 1}); err != nil {
			t.Fatal(err)
		}
	}
	backlog := func() (*qgatev1.ChannelBacklog, []int64) {
		t.Helper()
		resp, err := env.admin.GetBacklog(t.Context(), &qgatev1.GetBacklogRequest{Topic: "bl"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetTopics()) != 1 || len(resp.GetTopics()[0].GetChannels()) != 1 || len(resp.GetNodes()) != 2 {
			t.Fatalf("backlog %v", resp)
		}
		var per []int64
		for _, n := range resp.GetNodes() {
			if n.GetError() != "" || len(n.GetTopics()) != 1 {
				t.Fatalf("node %v", n)
			}
			per = append(per, n.GetTopics()[0].GetChannels()[0].GetDepth())
		}
		return resp.GetTopics()[0].GetChannels()[0], per
	}
	c, per := backlog()
	if c.GetDepth() != 6 || c.GetMessageCount() != 6 || per[0]+per[1] != 6 || per[0] == 0 || per[1] == 0 || c.GetPaused() {
		t.Errorf("channel %v, per node %v: want depth 6 over both nodes, not paused", c, per)
	}
	if r, err := env.admin.PauseChannel(t.Context(), &qgatev1.PauseChannelRequest{Topic: "bl", Channel: "c"}); err != nil || len(r.GetNodes()) != 2 || r.GetNodes()[0].GetError() != "" {
		t.Fatalf("pause: %v, %v", r, err)
	}
	if c, _ := backlog(); !c.GetPaused() {
		t.Error("not paused after PauseChannel")
	}
	if _, err := env.admin.ResumeChannel(t.Context(), &qgatev1.ResumeChannelRequest{Topic: "bl", Channel: "c"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := backlog(); c.GetPaused() {
		t.Error("paused after ResumeChannel")
	}
	if _, err := env.admin.EmptyChannel(t.Context(), &qgatev1.EmptyChannelRequest{Topic: "bl", Channel: "c"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := backlog(); c.GetDepth() != 0 {
		t.Errorf("depth %d after EmptyChannel", c.GetDepth())
	}
	r, err := env.admin.PauseChannel(t.Context(), &qgatev1.PauseChannelRequest{Topic: "bl", Channel: "nosuch"})
	if err != nil || r.GetNodes()[0].GetError() == "" {
		t.Errorf("pause of a missing channel: %v, %v; want a per-node error", r, err)
	}
	_, err = env.admin.GetBacklog(t.Context(), &qgatev1.GetBacklogRequest{Topic: "a b"})
	if code, fields := violationFields(err); code != codes.InvalidArgument || len(fields) != 1 || fields[0] != "topic" {
		t.Errorf("bad topic: %v", err)
	}
}

// TestNSQRedrive: a message dead-lettered after its last attempt is moved
// back to its topic by Redrive, with its id and attributes and the
// redrive's own; a second Redrive finds nothing.
func TestNSQRedrive(t *testing.T) {
	env := startNSQ(t, 1)
	nsqdtest.Create(t, env.nodes[0].HTTPAddr, "src.dead", "keep")
	stream, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "src", Channel: "c", MaxAttempts: 1})
	resp, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "src", Messages: []*qgatev1.Message{
		{Body: []byte("poison"), Attributes: map[string]string{"k": "v"}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetMessageIds()[0]
	d := recvDelivery(t, stream)
	if err := stream.Send(nackReq(0, d.GetAckId())); err != nil { // its last attempt: dead-lettered
		t.Fatal(err)
	}
	waitFor(t, "the dead letter", func() bool {
		c := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("src.dead").Channel("keep")
		return c != nil && c.Depth == 1
	})
	r, err := env.admin.Redrive(t.Context(), &qgatev1.RedriveRequest{Topic: "src.dead", Channel: "keep", IdleTimeout: durationpb.New(500 * time.Millisecond)})
	if err != nil || r.GetMoved() != 1 || r.GetSkipped() != 0 || r.GetError() != "" {
		t.Fatalf("redrive: %v, %v; want 1 moved", r, err)
	}
	d = recvDelivery(t, stream)
	a := d.GetAttributes()
	if !strings.HasPrefix(d.GetMessageId(), "rd-") || a[AttrRedrivenID] != id || string(d.GetBody()) != "poison" || a["k"] != "v" || a[AttrRedrivenFrom] != "src.dead" ||
		a[attrDeadLetterTopic] != "src" || a[AttrRedrivenTime] == "" {
		t.Errorf("redriven delivery %v", d)
	}
	if err := stream.Send(ackReq(d.GetAckId())); err != nil {
		t.Fatal(err)
	}
	r, err = env.admin.Redrive(t.Context(), &qgatev1.RedriveRequest{Topic: "src.dead", Channel: "keep", IdleTimeout: durationpb.New(200 * time.Millisecond)})
	if err != nil || r.GetMoved() != 0 {
		t.Errorf("second redrive: %v, %v; want nothing moved", r, err)
	}
}
