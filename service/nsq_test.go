package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// nsqEnv is qgate over a pool of in-process nsqd nodes, served over gRPC on
// loopback.
type nsqEnv struct {
	adminSrv *Admin
	nodes    []*nsqd.Node
	pool     *nsq.Pool
	queue    *Queue
	client   qgatev1.QueueServiceClient
	admin    qgatev1.AdminServiceClient
}

func startNSQ(t *testing.T, n int, opts ...Option) *nsqEnv {
	t.Helper()
	return startNSQMode(t, nsq.ModeCluster, n, opts...)
}

func startNSQMode(t *testing.T, mode nsq.Mode, n int, opts ...Option) *nsqEnv {
	t.Helper()
	return startNSQWith(t, mode, n, nil, opts...)
}

// startNSQWith is startNSQMode with the pool's config changed by tweak
// (if not nil).
func startNSQWith(t *testing.T, mode nsq.Mode, n int, tweak func(*nsq.Config), opts ...Option) *nsqEnv {
	t.Helper()
	nodes := nsqdtest.StartNodes(t, n)
	cfgs := make([]nsq.NodeConfig, n)
	for i, nd := range nodes {
		cfgs[i] = nsq.NodeConfig{Name: fmt.Sprintf("n%d", i), TCPAddr: nd.TCPAddr, HTTPAddr: nd.HTTPAddr}
	}
	groups, err := nsq.GroupsForMode(mode, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := nsq.Config{
		Groups: groups,
		Check:  health.Config{Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond, Fall: 2, Rise: 2, Jitter: -1},
		Logger: nsqdtest.Logger(t, slog.LevelWarn),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	pool, err := nsq.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	q := New(pool, append([]Option{WithLogger(nsqdtest.Logger(t, slog.LevelWarn))}, opts...)...)
	admin := NewAdmin(pool)
	conn := serve(t, q, admin)
	env := &nsqEnv{nodes: nodes, pool: pool, queue: q, adminSrv: admin,
		client: qgatev1.NewQueueServiceClient(conn), admin: qgatev1.NewAdminServiceClient(conn)}
	waitFor(t, "every node up", func() bool {
		for _, st := range pool.Nodes() {
			if st.State != backends.NodeUp {
				return false
			}
		}
		return true
	})
	return env
}

// connections returns every client connection of every node, identified by
// node, remote address and connect time: a reconnect shows up as a new
// entry.
func (e *nsqEnv) connections(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, nd := range e.nodes {
		for _, c := range nsqdtest.Stats(t, nd.HTTPAddr).Clients() {
			out = append(out, fmt.Sprintf("%s %s %d", nd.Name, c.RemoteAddress, c.ConnectTime))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func recvDelivery(t *testing.T, stream qgatev1.QueueService_SubscribeClient) *qgatev1.Delivery {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDelivery() == nil {
		t.Fatalf("got %v, want a delivery", resp)
	}
	return resp.GetDelivery()
}

// TestNSQRoundTrip: Send, SendStream and Subscribe through gRPC and real
// nsqd: ids, bodies, attributes and publish times come back as sent.
func TestNSQRoundTrip(t *testing.T) {
	env := startNSQ(t, 3)
	stream, opened := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "rt", Channel: "c", MaxInFlight: 50})
	if opened.GetMaxInFlight() != 50 {
		t.Errorf("opened %v", opened)
	}
	before := time.Now()
	resp, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "rt", Messages: []*qgatev1.Message{
		{Body: []byte("one"), Attributes: map[string]string{"k": "1", "ünï": "cödé"}},
		{Body: []byte("two")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{resp.GetMessageIds()[0]: "one", resp.GetMessageIds()[1]: "two"}

	ss, err := env.client.SendStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const streamed = 20
	for i := range streamed {
		if err := ss.Send(&qgatev1.SendStreamRequest{RequestId: uint64(i), Send: &qgatev1.SendRequest{Topic: "rt", Messages: msgs(fmt.Sprint("s", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for range streamed {
		r, err := ss.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetStatus().GetCode() != 0 || len(r.GetMessageIds()) != 1 {
			t.Fatalf("stream response %v", r)
		}
		want[r.GetMessageIds()[0]] = fmt.Sprint("s", r.GetRequestId())
	}
	if _, err := ss.Recv(); err != io.EOF {
		t.Errorf("after the last response: %v, want EOF", err)
	}

	for len(want) > 0 {
		d := recvDelivery(t, stream)
		body, ok := want[d.GetMessageId()]
		if !ok || string(d.GetBody()) != body || d.GetAttempt() != 1 || d.GetPublishTime().AsTime().Before(before.Add(-time.Second)) {
			t.Fatalf("unexpected delivery %v", d)
		}
		if body == "one" && (d.GetAttributes()["k"] != "1" || d.GetAttributes()["ünï"] != "cödé") {
			t.Errorf("attributes %v", d.GetAttributes())
		}
		delete(want, d.GetMessageId())
		if err := stream.Send(ackReq(d.GetAckId())); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNSQClientIDs: a client-chosen id is the id Send returns and the
// subscriber sees; a retried Send of it (on one node, so in order behind
// nothing else) is finished without delivery once the first was acked,
// while a server-assigned id sits beside it in the same request.
func TestNSQClientIDs(t *testing.T) {
	env := startNSQ(t, 1)
	stream, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "cid", Channel: "c"})
	send := func(ms ...*qgatev1.Message) []string {
		t.Helper()
		resp, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "cid", Messages: ms})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetMessageIds()
	}
	ids := send(&qgatev1.Message{Id: "order:1", Body: []byte("one")}, &qgatev1.Message{Body: []byte("two")})
	if ids[0] != "order:1" || len(ids[1]) != 32 {
		t.Fatalf("ids %q, want order:1 and a server id", ids)
	}
	got := map[string]string{}
	for range 2 {
		d := recvDelivery(t, stream)
		got[d.GetMessageId()] = string(d.GetBody())
		if err := stream.Send(ackReq(d.GetAckId())); err != nil {
			t.Fatal(err)
		}
	}
	if got["order:1"] != "one" || got[ids[1]] != "two" {
		t.Fatalf("deliveries %v", got)
	}
	// The pool knows the id acked before it sends nsqd the FIN: once nsqd
	// has nothing in flight, the retry below meets a known ack.
	waitFor(t, "both acks at nsqd", func() bool {
		c := nsqdtest.Stats(t, env.nodes[0].HTTPAddr).Topic("cid").Channel("c")
		return c != nil && c.InFlightCount == 0 && c.Depth == 0
	})
	send(&qgatev1.Message{Id: "order:1", Body: []byte("one again")}) // the retry
	send(&qgatev1.Message{Body: []byte("after")})
	if d := recvDelivery(t, stream); string(d.GetBody()) != "after" {
		t.Fatalf("got %v, want the message after the retry (the retry finished unseen)", d)
	}
}

// TestNSQExpiry: a message with a ttl is delivered with its expire_time
// (accept time + ttl); one that expired before a subscriber came is not
// delivered, and with dead_letter_expired goes to the dead-letter topic
// with the reason "expired".
func TestNSQExpiry(t *testing.T) {
	env := startNSQ(t, 1)
	send := func(topic string, ms ...*qgatev1.Message) {
		t.Helper()
		if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: topic, Messages: ms}); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	stream, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "ttl", Channel: "c"})
	send("ttl", &qgatev1.Message{Body: []byte("hour"), Ttl: durationpb.New(time.Hour)})
	d := recvDelivery(t, stream)
	if exp := d.GetExpireTime().AsTime(); d.GetExpireTime() == nil || exp.Before(before.Add(time.Hour)) || exp.After(time.Now().Add(time.Hour)) {
		t.Errorf("expire_time %v, want the send's time + 1h", d.GetExpireTime())
	}
	if err := stream.Send(ackReq(d.GetAckId())); err != nil {
		t.Fatal(err)
	}

	// Sent before any subscriber of "gone", expired when one comes.
	nsqdtest.Create(t, env.nodes[0].HTTPAddr, "gone", "c")
	nsqdtest.Create(t, env.nodes[0].HTTPAddr, "gone.dead", "raw")
	send("gone", &qgatev1.Message{Id: "short", Body: []byte("short"), Ttl: durationpb.New(time.Millisecond)})
	// Accepted before Send returned: expired a millisecond after that.
	time.Sleep(time.Millisecond) // the condition is the clock itself
	send("gone", &qgatev1.Message{Body: []byte("after")})
	gone, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "gone", Channel: "c", DeadLetterExpired: true})
	if d := recvDelivery(t, gone); string(d.GetBody()) != "after" || d.GetExpireTime() != nil {
		t.Fatalf("got %v, want the message without ttl (the expired one not delivered)", d)
	}
	dead, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "gone.dead", Channel: "raw"})
	if d := recvDelivery(t, dead); d.GetMessageId() != "short" || d.GetAttributes()["qgate-dead-letter-reason"] != "expired" || d.GetExpireTime() != nil {
		t.Errorf("dead letter %v, want short, reason expired, no expire_time", d)
	}
}

// TestNSQLongDelay: through gRPC and real nsqd with a timer topic, the
// send limit is the pool's (366 days), a delay and a deliver_at beyond the
// timer hop are delivered once, not before they are due, as attempt 1; a
// deliver_at in the past is delivered at once.
func TestNSQLongDelay(t *testing.T) {
	env := startNSQWith(t, nsq.ModeCluster, 2, func(c *nsq.Config) {
		c.TimerTopic, c.TimerHop = nsq.DefaultTimerTopic, 100*time.Millisecond
	})
	if got := env.queue.Limits().MaxSendDelay; got != nsq.MaxLongDelay {
		t.Fatalf("MaxSendDelay = %v, want the pool's %v", got, nsq.MaxLongDelay)
	}
	stream, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "later", Channel: "c"})
	start := time.Now()
	due := map[string]time.Time{"past": start, "delay": start.Add(time.Second), "at": start.Add(1500 * time.Millisecond)}
	reqs := []*qgatev1.SendRequest{
		{Topic: "later", Messages: []*qgatev1.Message{{Id: "delay", Body: []byte("d")}}, Delay: durationpb.New(time.Second), Replicas: 2},
		{Topic: "later", Messages: []*qgatev1.Message{{Id: "at", Body: []byte("a")}}, DeliverAt: timestamppb.New(due["at"])},
		{Topic: "later", Messages: []*qgatev1.Message{{Id: "past", Body: []byte("p")}}, DeliverAt: timestamppb.New(start.Add(-time.Hour))},
	}
	for _, r := range reqs {
		if _, err := env.client.Send(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	for range len(due) {
		d := recvDelivery(t, stream)
		now := time.Now()
		want, ok := due[d.GetMessageId()]
		switch {
		case !ok:
			t.Fatalf("delivered %q: unknown or twice", d.GetMessageId())
		case now.Before(want.Add(-10 * time.Millisecond)):
			t.Errorf("%q delivered %v early", d.GetMessageId(), want.Sub(now))
		case d.GetAttempt() != 1:
			t.Errorf("%q delivered as attempt %d, want 1", d.GetMessageId(), d.GetAttempt())
		}
		t.Logf("%s: %v after due", d.GetMessageId(), now.Sub(want))
		delete(due, d.GetMessageId())
		if err := stream.Send(ackReq(d.GetAckId())); err != nil {
			t.Fatal(err)
		}
	}
	_, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "later", Messages: msgs("x"), Delay: durationpb.New(nsq.MaxLongDelay + time.Second)})
	if code, fields := violationFields(err); code != codes.InvalidArgument || !slices.Equal(fields, []string{"delay"}) {
		t.Errorf("a delay past 366 days: %v %q, want InvalidArgument on delay", code, fields)
	}
}

// TestNSQFilter: a subscription opened with a CEL filter gets only the
// messages it accepts, through gRPC and real nsqd; a filter that does not
// compile fails the open.
func TestNSQFilter(t *testing.T) {
	env := startNSQ(t, 1)
	stream, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "flt", Channel: "orders",
		Filter: `attributes.kind == "order" && attributes.region.startsWith("eu")`})
	_, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "flt", Messages: []*qgatev1.Message{
		{Body: []byte("1"), Attributes: map[string]string{"kind": "order", "region": "us"}},
		{Body: []byte("2"), Attributes: map[string]string{"kind": "refund", "region": "eu"}},
		{Body: []byte("3")},
		{Body: []byte("4"), Attributes: map[string]string{"kind": "order", "region": "eu-west"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if d := recvDelivery(t, stream); string(d.GetBody()) != "4" {
		t.Errorf("got %q, want only message 4", d.GetBody())
	}
	bad, err := env.client.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{
		Topic: "flt", Channel: "bad", Filter: `attributes.kind = "order"`}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a filter that does not compile: %v, want InvalidArgument", err)
	}
}

// TestNSQNackAndClose: a nacked delivery comes back with attempt 2; a
// stream that ends hands its unacked delivery back at once.
func TestNSQNackAndClose(t *testing.T) {
	env := startNSQ(t, 2)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := env.client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{Topic: "nk", Channel: "c", AckDeadline: durationpb.New(20 * time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "nk", Messages: msgs("x")}); err != nil {
		t.Fatal(err)
	}
	d := recvDelivery(t, stream)
	if err := stream.Send(nackReq(0, d.GetAckId())); err != nil {
		t.Fatal(err)
	}
	d2 := recvDelivery(t, stream)
	if d2.GetMessageId() != d.GetMessageId() || d2.GetAttempt() != 2 {
		t.Fatalf("after nack: %v, want %s attempt 2", d2, d.GetMessageId())
	}
	start := time.Now()
	cancel() // end the stream with the delivery unacked

	stream2, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "nk", Channel: "c", AckDeadline: durationpb.New(20 * time.Second)})
	d3 := recvDelivery(t, stream2)
	if d3.GetMessageId() != d.GetMessageId() || d3.GetAttempt() != 3 {
		t.Errorf("after the stream ended: %v, want %s attempt 3", d3, d.GetMessageId())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("redelivery after the stream ended took %v; the deadline was 20s", took)
	}
	t.Logf("redelivered %v after the stream ended", time.Since(start).Round(time.Millisecond))
}

// TestNSQEmptyBodyNoReconnect is issue 2's test: a batch with one empty body
// fails with INVALID_ARGUMENT naming messages[i].body, and nsqd sees no
// connection closed or opened because of it: the set of client connections
// of every node (remote address and connect time) is the same before and
// after, and no node changes state.
func TestNSQEmptyBodyNoReconnect(t *testing.T) {
	env := startNSQ(t, 3)
	watch := env.pool.Watch(t.Context())
	warm := func() {
		for i := range 12 { // round robin: every node gets sends
			if _, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "nr", Messages: msgs(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	warm()
	before := env.connections(t)
	if len(before) < len(env.nodes) {
		t.Fatalf("connections %q: want a producer on every node", before)
	}

	for i := range 12 {
		_, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "nr", Messages: msgs("a", "b", "", "d")})
		if code, fields := violationFields(err); code != codes.InvalidArgument || !slices.Equal(fields, []string{"messages[2].body"}) {
			t.Fatalf("send %d: got %v %q, want InvalidArgument on messages[2].body", i, code, fields)
		}
	}
	warm()
	after := env.connections(t)
	if !slices.Equal(before, after) {
		t.Errorf("nsqd connections changed:\nbefore %q\nafter  %q", before, after)
	}
	checkNoStateChange(t, watch, len(env.nodes))
	t.Logf("%d connections before and after", len(after))
}

// checkNoStateChange reads the events queued on a pool watch: only the
// initial one per node may be there.
func checkNoStateChange(t *testing.T, watch <-chan backends.NodeEvent, nodes int) {
	t.Helper()
	for i := 0; ; i++ {
		select {
		case ev := <-watch:
			if i >= nodes {
				t.Errorf("node state changed: %s %v -> %v", ev.Node.Name, ev.Previous, ev.Node.State)
			}
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

// TestNSQBadInputHarmsNobody is issue 4's bad-input table over real nsqd:
// every bad request the API can receive gets its documented code, while a
// well-behaved client sends and receives beside it without one error, and
// no nsqd connection is reopened or node marked down.
func TestNSQBadInputHarmsNobody(t *testing.T) {
	env := startNSQ(t, 3)
	watch := env.pool.Watch(t.Context())

	// The well-behaved client: a subscriber that acks, and a sender.
	good, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "good", Channel: "c"})
	var received atomic.Int64
	var wg sync.WaitGroup
	// goodSend serializes the stream's Send and CloseSend, which gRPC does
	// not allow concurrently.
	var goodSend sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := good.Recv()
			if err != nil {
				return
			}
			if d := resp.GetDelivery(); d != nil {
				received.Add(1)
				goodSend.Lock()
				err := good.Send(ackReq(d.GetAckId()))
				goodSend.Unlock()
				if err != nil {
					return
				}
			} else {
				t.Errorf("good subscriber got %v", resp)
			}
		}
	}()
	stopSending := make(chan struct{})
	var sent, sendErrs atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopSending:
				return
			default:
			}
			_, err := env.client.Send(t.Context(), &qgatev1.SendRequest{Topic: "good", Messages: msgs(fmt.Sprint(i))})
			if err != nil {
				sendErrs.Add(1)
				t.Errorf("good send: %v", err)
				continue
			}
			sent.Add(1)
			time.Sleep(2 * time.Millisecond) // pacing: steady good traffic, not a flood
		}
	}()
	waitFor(t, "good traffic", func() bool { return received.Load() > 5 })
	before := env.connections(t)

	for _, tc := range badSendRequests() {
		if tc.fields == nil {
			continue
		}
		_, err := env.client.Send(t.Context(), tc.req)
		if code, fields := violationFields(err); code != codes.InvalidArgument || !slices.Equal(fields, tc.fields) {
			t.Errorf("Send %s: got %v %q, want InvalidArgument %q", tc.name, code, fields, tc.fields)
		}
	}
	// The same over SendStream: one response each, the stream goes on.
	ss, err := env.client.SendStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantStream := map[uint64][]string{}
	for i, tc := range badSendRequests() {
		if tc.fields == nil {
			continue
		}
		wantStream[uint64(i)] = tc.fields
		if err := ss.Send(&qgatev1.SendStreamRequest{RequestId: uint64(i), Send: tc.req}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		code, fields := violationFields(status.ErrorProto(r.GetStatus()))
		if code != codes.InvalidArgument || !slices.Equal(fields, wantStream[r.GetRequestId()]) {
			t.Errorf("SendStream request %d: got %v %q, want InvalidArgument %q", r.GetRequestId(), code, fields, wantStream[r.GetRequestId()])
		}
		delete(wantStream, r.GetRequestId())
	}
	if len(wantStream) != 0 {
		t.Errorf("SendStream requests never answered: %v", wantStream)
	}

	// Bad Subscribe streams.
	badStarts := []struct {
		name  string
		first *qgatev1.SubscribeRequest
		code  codes.Code
	}{
		{"ack before open", ackReq("1"), codes.FailedPrecondition},
		{"nack before open", nackReq(0, "1"), codes.FailedPrecondition},
		{"bare #ephemeral channel", &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{Topic: "good", Channel: "#ephemeral"}}}, codes.InvalidArgument},
		{"65-char topic", &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{Topic: string(make([]byte, 65)), Channel: "c"}}}, codes.InvalidArgument},
		{"max in flight 2501", &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{Topic: "good", Channel: "c", MaxInFlight: 2501}}}, codes.InvalidArgument},
	}
	for _, tc := range badStarts {
		s, err := env.client.Subscribe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(tc.first); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); status.Code(err) != tc.code {
			t.Errorf("Subscribe %s: got %v, want %v", tc.name, err, tc.code)
		}
	}
	// A subscriber that sends unknown, repeated and malformed settlements on
	// the good topic's other channel.
	bad, _ := subscribe(t, env.client, &qgatev1.SubscribeRequest_Open{Topic: "good", Channel: "bad#ephemeral"})
	d := recvDelivery(t, bad)
	for _, tc := range []struct {
		req  *qgatev1.SubscribeRequest
		id   string
		code codes.Code
	}{
		{ackReq("424242"), "424242", codes.NotFound},
		{ackReq("not-an-id"), "not-an-id", codes.NotFound},
		{nackReq(2*time.Hour, d.GetAckId()), d.GetAckId(), codes.InvalidArgument},
		{ackReq(d.GetAckId()), "", codes.OK},
		{ackReq(d.GetAckId()), d.GetAckId(), codes.NotFound},
		{extendReq(d.GetAckId()), d.GetAckId(), codes.NotFound},
	} {
		if err := bad.Send(tc.req); err != nil {
			t.Fatal(err)
		}
		if tc.code == codes.OK {
			continue
		}
		for {
			resp, err := bad.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDelivery() != nil {
				continue // more of the good topic; left unacked
			}
			ae := resp.GetAckError()
			if ae.GetAckId() != tc.id || codes.Code(ae.GetStatus().GetCode()) != tc.code {
				t.Errorf("%v: got %v, want %q %v", tc.req, ae, tc.id, tc.code)
			}
			break
		}
	}

	close(stopSending)
	after := env.connections(t)
	goodSend.Lock()
	good.CloseSend()
	goodSend.Unlock()
	wg.Wait()
	if sendErrs.Load() != 0 {
		t.Errorf("the good client saw %d send errors", sendErrs.Load())
	}
	if received.Load() == 0 || sent.Load() == 0 {
		t.Errorf("good client: sent %d, received %d", sent.Load(), received.Load())
	}
	// Subscriptions opened and closed by the bad clients add connections
	// of their own; what must hold is that none that was there went away.
	for _, c := range before {
		if !slices.Contains(after, c) {
			t.Errorf("connection %s was closed or reopened", c)
		}
	}
	checkNoStateChange(t, watch, len(env.nodes))
	t.Logf("good client: %d sent, %d received during the bad input", sent.Load(), received.Load())
}
