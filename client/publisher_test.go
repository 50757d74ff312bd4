package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/client"
)

func newClient(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestPublishBatches: a burst of Publishes is written in few SendStream
// requests, and every message gets its own id.
func TestPublishBatches(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	c := newClient(t, e.gw.addr)
	p := c.Publisher("burst", client.PublishSettings{CountThreshold: 100})
	const n = 1000
	results := make([]*client.PublishResult, n)
	for i := range n {
		results[i] = p.Publish(context.Background(), &client.Message{Body: fmt.Appendf(nil, "m%d", i)})
	}
	ids := map[string]bool{}
	for i, r := range results {
		id, err := r.Get(context.Background())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if id == "" || ids[id] { // the Publisher's ids, not the server's 32 hex
			t.Fatalf("message %d: id %q (empty, malformed or repeated)", i, id)
		}
		ids[id] = true
	}
	p.Stop()
	// At least ceil(n/100) requests; a burst published faster than one
	// round trip fills batches, so far fewer than n. The first Publish
	// may go alone (the stream was idle), and the slots fill as the burst
	// arrives: allow a few partial batches per slot.
	got, min := e.gw.requests.Load(), int64(n/100)
	if got < min || got > min+4*client.DefaultMaxOutstandingBatches {
		t.Errorf("%d messages in %d SendStream requests, want %d to %d", n, got, min, min+4*client.DefaultMaxOutstandingBatches)
	}
	if p.Requests() != got {
		t.Errorf("publisher wrote %d requests, gateway read %d", p.Requests(), got)
	}
	t.Logf("%d messages in %d requests", n, got)
}

// TestPublishMapsResults: each result carries the id of its own message
// (checked against what a subscriber receives), and errors keep their
// gRPC code.
func TestPublishMapsResults(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	c := newClient(t, e.gw.addr)
	p := c.Publisher("mapping", client.PublishSettings{})
	const n = 200
	want := map[string]string{} // id → body
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("body-%d", i)
			id, err := p.Publish(context.Background(), &client.Message{Body: []byte(body), Attributes: map[string]string{"i": body}}).Get(context.Background())
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			mu.Lock()
			want[id] = body
			mu.Unlock()
		}()
	}
	wg.Wait()
	p.Stop()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := map[string]string{}
	errc := make(chan error, 1)
	s := c.Subscriber("mapping", "c", client.ReceiveSettings{})
	go func() {
		errc <- s.Receive(ctx, func(_ context.Context, d *client.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			if d.Attributes["i"] != string(d.Body) {
				t.Errorf("delivery %s: attribute %q, body %q", d.ID, d.Attributes["i"], d.Body)
			}
			got[d.ID] = string(d.Body)
			if len(got) == n {
				cancel()
			}
			d.Ack()
		})
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for id, body := range want {
		if got[id] != body {
			t.Errorf("id %s: delivered body %q, published %q", id, got[id], body)
		}
	}

	// Errors: a bad topic is INVALID_ARGUMENT at once (not retried until
	// the deadline), an empty body and a Publish after Stop fail locally.
	bad := c.Publisher("bad topic!", client.PublishSettings{Timeout: time.Minute})
	defer bad.Stop()
	start := time.Now()
	_, err := bad.Publish(context.Background(), &client.Message{Body: []byte("x")}).Get(context.Background())
	if status.Code(err) != codes.InvalidArgument || time.Since(start) > 30*time.Second {
		t.Errorf("bad topic: %v after %v, want INVALID_ARGUMENT at once", err, time.Since(start))
	}
	if _, err := bad.Publish(context.Background(), &client.Message{}).Get(context.Background()); !errors.Is(err, client.ErrEmptyBody) {
		t.Errorf("empty body: %v, want ErrEmptyBody", err)
	}
	if _, err := p.Publish(context.Background(), &client.Message{Body: []byte("late")}).Get(context.Background()); !errors.Is(err, client.ErrStopped) {
		t.Errorf("after Stop: %v, want ErrStopped", err)
	}
}

// TestPublishFlowControl: while the gateway does not answer, Publish
// blocks at the bound (FlowBlock) or fails at once (FlowFail); once it
// answers, every admitted message is published.
func TestPublishFlowControl(t *testing.T) {
	for _, fc := range []client.FlowControl{client.FlowBlock, client.FlowFail} {
		t.Run(fmt.Sprint(fc), func(t *testing.T) {
			stall := make(chan struct{})
			e := newEnv(t, gatewayOptions{stall: stall})
			c := newClient(t, e.gw.addr)
			p := c.Publisher("flow", client.PublishSettings{MaxOutstandingMessages: 10, FlowControl: fc})
			var admitted []*client.PublishResult
			for i := range 10 {
				admitted = append(admitted, p.Publish(context.Background(), &client.Message{Body: fmt.Appendf(nil, "%d", i)}))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			over := p.Publish(ctx, &client.Message{Body: []byte("over")})
			cancel()
			select {
			case <-over.Ready():
			case <-time.After(30 * time.Second):
				t.Fatal("the 11th Publish neither blocked until its ctx ended nor failed")
			}
			_, err := over.Get(context.Background())
			want := client.ErrFlowControl
			if fc == client.FlowBlock {
				want = context.DeadlineExceeded
			}
			if !errors.Is(err, want) {
				t.Errorf("11th Publish: %v, want %v", err, want)
			}
			for _, r := range admitted {
				select {
				case <-r.Ready():
					t.Fatal("a result is ready while the gateway does not answer")
				default:
				}
			}
			close(stall)
			for i, r := range admitted {
				if _, err := r.Get(context.Background()); err != nil {
					t.Errorf("message %d: %v", i, err)
				}
			}
			p.Stop()
		})
	}
}

// TestPublishDeadline: a message that cannot be published within its
// Timeout fails with the last error, not later.
func TestPublishDeadline(t *testing.T) {
	c := newClient(t, "127.0.0.1:1")
	p := c.Publisher("nowhere", client.PublishSettings{Timeout: 300 * time.Millisecond})
	defer p.Stop()
	_, err := p.Publish(context.Background(), &client.Message{Body: []byte("x")}).Get(context.Background())
	if status.Code(err) != codes.Unavailable {
		t.Errorf("publish to nowhere: %v, want the last error, UNAVAILABLE", err)
	}
}

// TestPublishRetryKeepsID: a batch whose response is lost after its
// message was written (the stream ends with UNAVAILABLE, as when a gateway
// dies at that moment) is retried with the same message id, so the message
// is written twice and delivered once. An application's own ids are kept
// too, and two messages with one id go in separate requests (qgate refuses
// a request with an id twice) and are delivered once.
func TestPublishRetryKeepsID(t *testing.T) {
	// One node: a channel delivers in write order, so once the marker,
	// written last, is delivered, every copy before it was handled.
	b, err := startBackend(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	g, err := startGateway(b, gatewayOptions{loseResponses: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.stop() })
	c := newClient(t, g.addr)

	var mu sync.Mutex
	got := map[string][]string{} // id -> bodies delivered
	s := c.Subscriber("retried", "c", client.ReceiveSettings{})
	stop := receive(s, func(_ context.Context, d *client.Delivery) {
		mu.Lock()
		got[d.ID] = append(got[d.ID], string(d.Body))
		mu.Unlock()
		d.Ack()
	})
	defer stop()

	p := c.Publisher("retried", client.PublishSettings{DelayThreshold: 20 * time.Millisecond})
	defer p.Stop()
	ctx := context.Background()
	id, err := p.Publish(ctx, &client.Message{Body: []byte("once")}).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g.lost.Load() < 1 {
		t.Fatal("no response was lost: the test did not retry")
	}
	reqs := g.requestIDs()
	if len(reqs) != 2 || !slices.Equal(reqs[0], []string{id}) || !slices.Equal(reqs[1], []string{id}) {
		t.Fatalf("requests carried ids %q, want [%s] twice (the retry keeps the id)", reqs, id)
	}

	r1 := p.Publish(ctx, &client.Message{ID: "order-7", Body: []byte("mine")})
	r2 := p.Publish(ctx, &client.Message{ID: "order-7", Body: []byte("mine again")})
	for _, r := range []*client.PublishResult{r1, r2} {
		if id, err := r.Get(ctx); err != nil || id != "order-7" {
			t.Fatalf("publish with ID order-7: %q, %v", id, err)
		}
	}
	for _, ids := range g.requestIDs()[2:] {
		if n := strings.Count(strings.Join(ids, " "), "order-7"); n > 1 {
			t.Errorf("one request carried order-7 %d times", n)
		}
	}
	for _, bad := range []string{"a b", strings.Repeat("x", 65)} {
		if _, err := p.Publish(ctx, &client.Message{ID: bad, Body: []byte("x")}).Get(ctx); !errors.Is(err, client.ErrBadID) {
			t.Errorf("publish with ID %q: %v, want ErrBadID", bad, err)
		}
	}
	marker, err := p.Publish(ctx, &client.Message{Body: []byte("marker")}).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the marker delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(got[marker]) > 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(got[id]) != 1 || len(got["order-7"]) != 1 {
		t.Errorf("deliveries: %q under %s, %q under order-7; want one each", got[id], id, got["order-7"])
	}
}
