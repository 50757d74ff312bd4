package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

func TestSendErrorCodes(t *testing.T) {
	b := newFaultBackend()
	var inject atomic.Pointer[error]
	b.send = func(context.Context, string, []*backends.Message, backends.SendOptions) error {
		if p := inject.Load(); p != nil {
			return *p
		}
		return nil
	}
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("nsq: 3 nodes tried: %w", backends.ErrUnavailable), codes.Unavailable},
		{backends.ErrClosed, codes.Unavailable},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("attempt: %w", context.Canceled), codes.Canceled},
		{errors.New("something unexpected"), codes.Internal},
		{fmt.Errorf("nsq: send to t on n0: %w: E_BAD_BODY", backends.ErrRejected), codes.InvalidArgument},
		{status.Error(codes.ResourceExhausted, "full"), codes.ResourceExhausted},
	}
	for _, tc := range tests {
		err := tc.err
		inject.Store(&err)
		_, got := client.Send(t.Context(), &qgatev1.SendRequest{Topic: "t", Messages: msgs("x")})
		if status.Code(got) != tc.want {
			t.Errorf("backend error %v: got %v, want %v", tc.err, got, tc.want)
		}
		if errors.Is(tc.err, backends.ErrRejected) && !strings.Contains(status.Convert(got).Message(), "refused the request (nsq: send to t on n0") {
			t.Errorf("rejected: message %q does not say why", status.Convert(got).Message())
		}
	}
}

func TestSendAssignsIDs(t *testing.T) {
	b := newFaultBackend()
	var got []*backends.Message
	var delay time.Duration
	b.send = func(_ context.Context, topic string, m []*backends.Message, opts backends.SendOptions) error {
		got, delay = m, opts.Delay
		return nil
	}
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	before := time.Now()
	resp, err := client.Send(t.Context(), &qgatev1.SendRequest{Topic: "t", Messages: msgs("a", "b", "c"), Delay: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	ids := resp.GetMessageIds()
	if len(ids) != 3 || len(got) != 3 || delay != time.Minute {
		t.Fatalf("got ids %q, %d messages, delay %v", ids, len(got), delay)
	}
	for i, m := range got {
		if m.ID != ids[i] || string(m.Body) != string("abc"[i]) || m.PublishTime.Before(before.Truncate(time.Second)) {
			t.Errorf("message %d: %+v, id %q", i, m, ids[i])
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 3 {
		t.Errorf("ids not unique: %q", ids)
	}
}

// nsqSized is a backend that sizes messages as the NSQ pool does.
type nsqSized struct{ backends.Backend }

func (nsqSized) MessageSize(m *backends.Message) int { return nsq.Sizer{}.MessageSize(m) }
func (nsqSized) BatchSize(n, total int) int          { return nsq.Sizer{}.BatchSize(n, total) }

// TestBadSendsNeverReachBackend runs the bad-request table over gRPC: each
// gets INVALID_ARGUMENT naming its fields, and the backend never sees it.
func TestBadSendsNeverReachBackend(t *testing.T) {
	b := newFaultBackend()
	// Sized as NSQ stores messages, as the table's limits are.
	client := qgatev1.NewQueueServiceClient(serve(t, New(nsqSized{b}), nil))
	for _, tc := range badSendRequests() {
		if tc.fields == nil {
			continue
		}
		_, err := client.Send(t.Context(), tc.req)
		if code, fields := violationFields(err); code != codes.InvalidArgument || !slices.Equal(fields, tc.fields) {
			t.Errorf("%s: got %v %q, want InvalidArgument %q", tc.name, code, fields, tc.fields)
		}
	}
	if n := b.sends.Load(); n != 0 {
		t.Errorf("the backend saw %d sends, want 0", n)
	}
}

// TestSendStreamWindow: with the backend stuck, the server processes exactly
// window requests and reads no more than one beyond; once released, every
// request gets exactly one response with its id. The sends are released one
// at a time: request k+window may start only after request k was released,
// and the test waits for it to start before it releases the next, so a
// server that reads ahead is caught by the order of events, not by how
// long the test waited.
func TestSendStreamWindow(t *testing.T) {
	const window, total = 4, 40
	b := newFaultBackend()
	release := make([]chan struct{}, total)
	for i := range release {
		release[i] = make(chan struct{})
	}
	started := make(chan int, total)
	var running, peak, released atomic.Int64
	b.send = func(ctx context.Context, _ string, ms []*backends.Message, _ backends.SendOptions) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		id, err := strconv.Atoi(string(ms[0].Body))
		if err != nil {
			t.Errorf("body %q: %v", ms[0].Body, err)
			return err
		}
		if r := released.Load(); int64(id) >= r+window {
			t.Errorf("request %d started with %d of the first requests released, window %d", id, r, window)
		}
		started <- id
		select {
		case <-release[id]:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	q := New(b, WithSendStreamWindow(window))
	client := qgatev1.NewQueueServiceClient(serve(t, q, nil))
	stream, err := client.SendStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sendDone := make(chan error, 1)
	go func() {
		for i := range total {
			if err := stream.Send(&qgatev1.SendStreamRequest{RequestId: uint64(i), Send: &qgatev1.SendRequest{Topic: "t", Messages: msgs(strconv.Itoa(i))}}); err != nil {
				sendDone <- err
				return
			}
		}
		sendDone <- stream.CloseSend()
	}()
	nextStart := func() int {
		t.Helper()
		select {
		case id := <-started:
			return id
		case <-time.After(10 * time.Second):
			t.Fatalf("no send started within 10s (%d released)", released.Load())
			return -1
		}
	}
	first := map[int]bool{}
	for range window {
		first[nextStart()] = true
	}
	for i := range window {
		if !first[i] {
			t.Errorf("first sends started %v, want 0 to %d", first, window-1)
			break
		}
	}
	for k := range total {
		released.Add(1)
		close(release[k])
		if k+window < total {
			if id := nextStart(); id != k+window {
				t.Errorf("after releasing request %d, request %d started, want %d", k, id, k+window)
			}
		}
	}
	seen := make(map[uint64]int)
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus().GetCode() != 0 || len(resp.GetMessageIds()) != 1 {
			t.Errorf("request %d: %v", resp.GetRequestId(), resp)
		}
		seen[resp.GetRequestId()]++
	}
	if err := <-sendDone; err != nil {
		t.Fatal(err)
	}
	for i := range uint64(total) {
		if seen[i] != 1 {
			t.Errorf("request %d answered %d times", i, seen[i])
		}
	}
	if p := peak.Load(); p > window {
		t.Errorf("%d sends ran at once, window %d", p, window)
	}
}

// TestSendStreamBadRequests: bad requests get their own non-OK response and
// the stream goes on.
func TestSendStreamBadRequests(t *testing.T) {
	b := newFaultBackend()
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	stream, err := client.SendStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	reqs := []*qgatev1.SendStreamRequest{
		{RequestId: 1, Send: &qgatev1.SendRequest{Topic: "t", Messages: msgs("ok")}},
		{RequestId: 2, Send: &qgatev1.SendRequest{Topic: "t", Messages: msgs("a", "")}},
		{RequestId: 3},
		{RequestId: 4, Send: &qgatev1.SendRequest{Topic: "#ephemeral", Messages: msgs("x")}},
		{RequestId: 5, Send: &qgatev1.SendRequest{Topic: "t", Messages: msgs("ok")}},
	}
	want := map[uint64][]string{1: nil, 2: {"messages[1].body"}, 3: {"send"}, 4: {"topic"}, 5: nil}
	for _, r := range reqs {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
		code, fields := violationFields(status.ErrorProto(resp.GetStatus()))
		wantFields := want[resp.GetRequestId()]
		if wantFields == nil {
			if code != codes.OK || len(resp.GetMessageIds()) != 1 {
				t.Errorf("request %d: %v", resp.GetRequestId(), resp)
			}
			continue
		}
		if code != codes.InvalidArgument || !slices.Equal(fields, wantFields) || len(resp.GetMessageIds()) != 0 {
			t.Errorf("request %d: got %v %q, want InvalidArgument %q", resp.GetRequestId(), code, fields, wantFields)
		}
	}
	if got != len(reqs) || b.sends.Load() != 2 {
		t.Errorf("%d responses for %d requests; backend saw %d sends, want 2", got, len(reqs), b.sends.Load())
	}
}

// subscribe opens a Subscribe stream with open and returns it after the
// opened response.
func subscribe(t *testing.T, client qgatev1.QueueServiceClient, open *qgatev1.SubscribeRequest_Open) (qgatev1.QueueService_SubscribeClient, *qgatev1.SubscribeResponse_Opened) {
	t.Helper()
	stream, err := client.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOpened() == nil {
		t.Fatalf("first response %v, want opened", resp)
	}
	return stream, resp.GetOpened()
}

func ackReq(ids ...string) *qgatev1.SubscribeRequest {
	return &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{Ack: &qgatev1.SubscribeRequest_Ack{AckIds: ids}}}
}

func nackReq(delay time.Duration, ids ...string) *qgatev1.SubscribeRequest {
	return &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Nack_{Nack: &qgatev1.SubscribeRequest_Nack{AckIds: ids, Delay: durationpb.New(delay)}}}
}

func extendReq(ids ...string) *qgatev1.SubscribeRequest {
	return &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Extend_{Extend: &qgatev1.SubscribeRequest_Extend{AckIds: ids}}}
}

func TestSubscribeStartErrors(t *testing.T) {
	b := newFaultBackend()
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	tests := []struct {
		name   string
		first  *qgatev1.SubscribeRequest
		code   codes.Code
		fields []string
	}{
		{"ack first", ackReq("1"), codes.FailedPrecondition, nil},
		{"empty first", &qgatev1.SubscribeRequest{}, codes.FailedPrecondition, nil},
		{"bad open", &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{
			Topic: "a#ephemeral#ephemeral", Channel: "#ephemeral", MaxInFlight: 5000, AckDeadline: durationpb.New(time.Hour), MaxAttempts: 1 << 20, DeadLetterTopic: "x y"}}},
			codes.InvalidArgument, []string{"open.ack_deadline", "open.channel", "open.dead_letter_topic", "open.max_attempts", "open.max_in_flight", "open.topic"}},
	}
	for _, tc := range tests {
		stream, err := client.Subscribe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(tc.first); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		if code, fields := violationFields(err); code != tc.code || !slices.Equal(fields, tc.fields) {
			t.Errorf("%s: got %v %q, want %v %q", tc.name, code, fields, tc.code, tc.fields)
		}
	}
	select {
	case s := <-b.subs:
		t.Errorf("a subscription was opened: %+v", s.opts)
	default:
	}
}

func TestSubscribeAcks(t *testing.T) {
	b := newFaultBackend()
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	stream, opened := subscribe(t, client, &qgatev1.SubscribeRequest_Open{Topic: "t#ephemeral", Channel: "c", MaxAttempts: 3})
	if opened.GetMaxInFlight() != 100 || opened.GetAckDeadline().AsDuration() != time.Minute ||
		opened.GetMaxAttempts() != 3 || opened.GetDeadLetterTopic() != "t.dead" {
		t.Errorf("opened %v", opened)
	}
	sub := b.nextSub(t)
	if sub.opts.MaxInFlight != 100 || sub.opts.DeadLetterTopic != "t.dead" {
		t.Errorf("backend got %+v", sub.opts)
	}
	ackers := []*faultAcker{sub.deliver("m1", "one"), sub.deliver("m2", "two"), sub.deliver("m3", "three")}
	var ackIDs []string
	for i := range ackers {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		d := resp.GetDelivery()
		if d.GetMessageId() != fmt.Sprintf("m%d", i+1) || d.GetAttempt() != 1 || d.GetAttributes()["k"] != "v" || d.GetPublishTime().AsTime().Unix() != 1_700_000_000 {
			t.Errorf("delivery %v", d)
		}
		ackIDs = append(ackIDs, d.GetAckId())
	}

	// expect sends req and checks the ack_errors it causes (id -> code).
	expect := func(req *qgatev1.SubscribeRequest, want map[string]codes.Code) {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		for range want {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			ae := resp.GetAckError()
			if c, ok := want[ae.GetAckId()]; !ok || codes.Code(ae.GetStatus().GetCode()) != c {
				t.Errorf("%v: got ack_error %v, want %v", req, ae, want)
			}
		}
	}
	expect(extendReq(ackIDs[0]), nil)
	expect(ackReq(ackIDs[0], "999", "bogus"), map[string]codes.Code{"999": codes.NotFound, "bogus": codes.NotFound})
	expect(ackReq(ackIDs[0]), map[string]codes.Code{ackIDs[0]: codes.NotFound}) // repeated
	expect(extendReq(ackIDs[0]), map[string]codes.Code{ackIDs[0]: codes.NotFound})
	expect(nackReq(time.Hour+time.Second, ackIDs[1]), map[string]codes.Code{ackIDs[1]: codes.InvalidArgument})
	expect(nackReq(-time.Second, ackIDs[1]), map[string]codes.Code{ackIDs[1]: codes.InvalidArgument})
	expect(ackReq(), map[string]codes.Code{"": codes.InvalidArgument})
	expect(ackReq(slices.Repeat([]string{"1"}, 2501)...), map[string]codes.Code{"": codes.InvalidArgument})
	expect(&qgatev1.SubscribeRequest{}, map[string]codes.Code{"": codes.InvalidArgument})
	expect(nackReq(time.Hour, ackIDs[1]), nil) // still held after the bad nacks
	expect(nackReq(0, ackIDs[1]), map[string]codes.Code{ackIDs[1]: codes.NotFound})

	// The stream goes on: a new delivery arrives and is acked.
	a4 := sub.deliver("m4", "four")
	resp, err := stream.Recv()
	if err != nil || resp.GetDelivery().GetMessageId() != "m4" {
		t.Fatalf("got %v, %v; want delivery m4", resp, err)
	}
	expect(ackReq(resp.GetDelivery().GetAckId()), nil)
	expect(ackReq("999"), map[string]codes.Code{"999": codes.NotFound}) // a round trip: the ack before it is done

	for i, want := range []struct {
		how     string
		delay   time.Duration
		extends int
	}{{"ack", 0, 1}, {"nack", time.Hour, 0}, {"", 0, 0}} {
		how, delay, ext := ackers[i].state()
		if how != want.how || delay != want.delay || ext != want.extends {
			t.Errorf("delivery %d: settled %q delay %v extends %d, want %+v", i+1, how, delay, ext, want)
		}
	}
	if how, _, _ := a4.state(); how != "ack" {
		t.Errorf("m4 settled %q", how)
	}

	// A second open ends the stream and closes the subscription.
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second open: got %v, want FailedPrecondition", err)
	}
	waitFor(t, "subscription closed", sub.isClosed)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSubscribeEnds: whatever ends the stream closes the subscription.
// TestSubscribeRetryPolicy: with open.retry_policy, a nack without a delay
// hands the delivery back after the policy's backoff for its attempt
// (jittered within ±20%, kept within the policy); a nack with an explicit
// delay, 0 included, keeps it. Opened reports the effective policy.
func TestSubscribeRetryPolicy(t *testing.T) {
	b := newFaultBackend()
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	stream, opened := subscribe(t, client, &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c",
		RetryPolicy: &qgatev1.RetryPolicy{MinimumBackoff: durationpb.New(2 * time.Second), MaximumBackoff: durationpb.New(8 * time.Second)}})
	if p := opened.GetRetryPolicy(); p.GetMinimumBackoff().AsDuration() != 2*time.Second || p.GetMaximumBackoff().AsDuration() != 8*time.Second {
		t.Errorf("opened retry policy %v", p)
	}
	sub := b.nextSub(t)
	if r := sub.opts.Retry; r == nil || *r != (backends.RetryPolicy{Min: 2 * time.Second, Max: 8 * time.Second}) {
		t.Errorf("backend got retry %+v", sub.opts.Retry)
	}
	ackers := []*faultAcker{sub.deliverAttempt("m1", "one", 1), sub.deliverAttempt("m2", "two", 1), sub.deliverAttempt("m3", "three", 3)}
	var ackIDs []string
	for range ackers {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ackIDs = append(ackIDs, resp.GetDelivery().GetAckId())
	}
	noDelay := func(id string) *qgatev1.SubscribeRequest {
		return &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Nack_{Nack: &qgatev1.SubscribeRequest_Nack{AckIds: []string{id}}}}
	}
	for _, req := range []*qgatev1.SubscribeRequest{noDelay(ackIDs[0]), nackReq(0, ackIDs[1]), noDelay(ackIDs[2])} {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	// A round trip: the nacks before it are done.
	if err := stream.Send(ackReq("999")); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct{ lo, hi time.Duration }{
		{2 * time.Second, 2400 * time.Millisecond}, // attempt 1: 2 s ± 20%, at least 2 s
		{0, 0}, // explicit 0
		{6400 * time.Millisecond, 8 * time.Second}, // attempt 3: 8 s ± 20%, at most 8 s
	} {
		how, delay, _ := ackers[i].state()
		if how != "nack" || delay < want.lo || delay > want.hi {
			t.Errorf("m%d: %s with delay %v, want nack within [%v, %v]", i+1, how, delay, want.lo, want.hi)
		}
	}
}

func TestSubscribeEnds(t *testing.T) {
	b := newFaultBackend()
	client := qgatev1.NewQueueServiceClient(serve(t, New(b), nil))
	open := &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c"}

	stream, _ := subscribe(t, client, open)
	sub := b.nextSub(t)
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after half-close: got %v, want EOF", err)
	}
	waitFor(t, "close on half-close", sub.isClosed)

	ctx, cancel := context.WithCancel(t.Context())
	stream2, err := client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream2.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream2.Recv(); err != nil {
		t.Fatal(err)
	}
	sub = b.nextSub(t)
	cancel()
	waitFor(t, "close on cancel", sub.isClosed)

	// The backend closing the subscription ends the stream with UNAVAILABLE.
	stream3, _ := subscribe(t, client, open)
	sub = b.nextSub(t)
	sub.Close()
	if _, err := stream3.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("backend closed: got %v, want Unavailable", err)
	}

	b.subErr = fmt.Errorf("no node: %w", backends.ErrUnavailable)
	stream4, err := client.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream4.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream4.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("subscribe failing: got %v, want Unavailable", err)
	}
}

// TestShutdown: Shutdown ends open streams with UNAVAILABLE, answers the
// SendStream requests in progress, hands subscriptions back and refuses new
// streams; it returns once every stream goroutine is done.
func TestShutdown(t *testing.T) {
	b := newFaultBackend()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	b.send = func(ctx context.Context, _ string, _ []*backends.Message, _ backends.SendOptions) error {
		started <- struct{}{}
		<-release
		return nil
	}
	q := New(b)
	client := qgatev1.NewQueueServiceClient(serve(t, q, nil))
	subStream, _ := subscribe(t, client, &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c"})
	sub := b.nextSub(t)
	sendStream, err := client.SendStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := sendStream.Send(&qgatev1.SendStreamRequest{RequestId: 7, Send: &qgatev1.SendRequest{Topic: "t", Messages: msgs("x")}}); err != nil {
		t.Fatal(err)
	}
	<-started

	shut := make(chan error, 1)
	go func() { shut <- q.Shutdown(t.Context()) }()
	if _, err := subStream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("subscribe after shutdown: got %v, want Unavailable", err)
	}
	waitFor(t, "subscription closed", sub.isClosed)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a send in progress", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	resp, err := sendStream.Recv()
	if err != nil || resp.GetRequestId() != 7 || resp.GetStatus().GetCode() != 0 {
		t.Errorf("in-progress request: got %v, %v; want its OK response", resp, err)
	}
	if _, err := sendStream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("send stream after shutdown: got %v, want Unavailable", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	s, err := client.Subscribe(t.Context())
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("new stream after shutdown: got %v, want Unavailable", err)
	}
	if _, err := client.Send(t.Context(), &qgatev1.SendRequest{Topic: "t", Messages: msgs("x")}); err != nil {
		t.Errorf("unary Send after Shutdown: %v (GracefulStop decides)", err)
	}
}
