package client_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/client"
	"github.com/qgate/qgate/internal/auth"
)

// receive runs s.Receive in a goroutine; the returned function cancels it
// and returns its error.
func receive(s *client.Subscriber, f func(context.Context, *client.Delivery)) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Receive(ctx, f) }()
	return func() error {
		cancel()
		return <-errc
	}
}

func publishOne(t *testing.T, p *client.Publisher, body string) string {
	t.Helper()
	id, err := p.Publish(context.Background(), &client.Message{Body: []byte(body)}).Get(context.Background())
	if err != nil {
		t.Fatalf("publish %q: %v", body, err)
	}
	return id
}

// TestReceiveExtendsLease: a handler that runs three times the ack
// deadline keeps its delivery: it is not redelivered.
func TestReceiveExtendsLease(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	c := newClient(t, e.gw.addr)
	p := c.Publisher("lease", client.PublishSettings{})
	defer p.Stop()
	const deadline = time.Second
	var slow, sentinel atomic.Int32
	slowAcked, sentinelSeen := make(chan struct{}), make(chan struct{})
	s := c.Subscriber("lease", "c", client.ReceiveSettings{AckDeadline: deadline, NumGoroutines: 4})
	stop := receive(s, func(ctx context.Context, d *client.Delivery) {
		switch string(d.Body) {
		case "slow":
			if slow.Add(1) > 1 {
				d.Ack() // a redelivery: counted, the test fails
				return
			}
			select {
			case <-time.After(3 * deadline):
			case <-ctx.Done():
			}
			d.Ack()
			close(slowAcked)
		case "sentinel":
			if sentinel.Add(1) == 1 {
				close(sentinelSeen)
			}
			d.Ack()
		}
	})
	publishOne(t, p, "slow")
	select {
	case <-slowAcked:
	case <-time.After(60 * time.Second):
		t.Fatal("the slow handler did not finish")
	}
	// Published after the slow handler acked, 3 s after the slow
	// delivery: a redelivery at the first expired deadline (1 s) would
	// have come before it.
	publishOne(t, p, "sentinel")
	select {
	case <-sentinelSeen:
	case <-time.After(30 * time.Second):
		t.Fatal("sentinel not delivered")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := slow.Load(); n != 1 {
		t.Errorf("slow message delivered %d times, want 1 (its lease was not extended)", n)
	}
}

// TestReceivePermanentErrors: Receive returns at once, with the code, for
// errors that retrying cannot fix; a Publish fails with them too.
func TestReceivePermanentErrors(t *testing.T) {
	tok := auth.Token{Name: "app", Secret: "0123456789abcdef-app", Send: []string{"allowed"}, Subscribe: []string{"allowed"}}
	e := newEnv(t, gatewayOptions{tokens: []auth.Token{tok}})
	for _, tc := range []struct {
		name     string
		opts     []client.Option
		topic    string
		channel  string // default "c"
		replicas int
		want     codes.Code
	}{
		{"no token", nil, "allowed", "", 0, codes.Unauthenticated},
		{"wrong token", []client.Option{client.WithToken("0123456789abcdef-bad")}, "allowed", "", 0, codes.Unauthenticated},
		{"forbidden topic", []client.Option{client.WithToken(tok.Secret)}, "other", "", 0, codes.PermissionDenied},
		{"bad request", []client.Option{client.WithToken(tok.Secret)}, "allowed", "bad channel!", 9, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, e.gw.addr, tc.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			channel := tc.channel
			if channel == "" {
				channel = "c"
			}
			err := c.Subscriber(tc.topic, channel, client.ReceiveSettings{}).Receive(ctx, func(context.Context, *client.Delivery) {})
			if status.Code(err) != tc.want || ctx.Err() != nil {
				t.Errorf("Receive: %v, want %v before the test's deadline", err, tc.want)
			}
			p := c.Publisher(tc.topic, client.PublishSettings{Replicas: tc.replicas})
			defer p.Stop()
			if _, err := p.Publish(ctx, &client.Message{Body: []byte("x")}).Get(ctx); status.Code(err) != tc.want || ctx.Err() != nil {
				t.Errorf("Publish: %v, want %v before the test's deadline", err, tc.want)
			}
		})
	}
	// The token from a function is fetched per stream.
	var calls atomic.Int32
	c := newClient(t, e.gw.addr, client.WithTokenFunc(func(context.Context) (string, error) {
		calls.Add(1)
		return tok.Secret, nil
	}))
	p := c.Publisher("allowed", client.PublishSettings{})
	publishOne(t, p, "with a token")
	p.Stop()
	if calls.Load() == 0 {
		t.Error("token function not called")
	}
}

// clientGoroutines returns the stacks of the goroutines that belong to
// package client or to a gRPC client connection. The gateway and nsqd run
// in the same process, so a plain goroutine count would mix in theirs.
func clientGoroutines() []string {
	buf := make([]byte, 4<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "github.com/qgate/qgate/client.") ||
			strings.Contains(g, "transport.(*http2Client)") || strings.Contains(g, "grpc.(*addrConn)") ||
			strings.Contains(g, "grpc.(*ClientConn)") {
			out = append(out, g)
		}
	}
	return out
}

// noClientGoroutines waits until clientGoroutines is empty, within a
// generous deadline.
func noClientGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := clientGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d client goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoGoroutineLeak: after Stop, the end of Receive and Close, the
// goroutines the client started are gone.
func TestNoGoroutineLeak(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	noClientGoroutines(t) // the helpers' own are gone
	c, err := client.New(context.Background(), e.gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Publisher("leak", client.PublishSettings{})
	s := c.Subscriber("leak", "c", client.ReceiveSettings{NumGoroutines: 8})
	got := make(chan struct{}, 100)
	stop := receive(s, func(_ context.Context, d *client.Delivery) {
		d.Ack()
		got <- struct{}{}
	})
	for i := range 50 {
		publishOne(t, p, fmt.Sprint(i))
	}
	for range 50 {
		<-got
	}
	p.Stop()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	noClientGoroutines(t)
}

// TestReceiveFlowControl: MaxOutstandingBytes stops reading the stream
// while the bodies held exceed it, whatever NumGoroutines and
// max_in_flight would allow.
func TestReceiveFlowControl(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	c := newClient(t, e.gw.addr)
	p := c.Publisher("rflow", client.PublishSettings{})
	for i := range 10 {
		publishOne(t, p, fmt.Sprintf("body-%03d", i)) // 8 bytes each
	}
	p.Stop()
	var running, most, done atomic.Int32
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	s := c.Subscriber("rflow", "c", client.ReceiveSettings{MaxOutstandingBytes: 10, MaxBatch: 1, NumGoroutines: 4})
	stop := receive(s, func(_ context.Context, d *client.Delivery) {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		started <- struct{}{}
		<-release
		running.Add(-1)
		d.Ack()
		done.Add(1)
	})
	<-started
	// A second handler would start within this window if the bound did
	// not hold (4 handlers, max_in_flight 1000, 9 messages queued).
	select {
	case <-started:
		t.Error("a second delivery was handed out while the first held the byte bound")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	waitFor(t, "every message", func() bool { return done.Load() == 10 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if m := most.Load(); m != 1 {
		t.Errorf("at most %d handlers ran at once, want 1 (10-byte bound, 8-byte bodies)", m)
	}
}

// TestTTLRoundTrip: a message published with a TTL is received with its
// expiry (qgate's accept time + TTL); one without has none.
func TestTTLRoundTrip(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	c := newClient(t, e.gw.addr)
	p := c.Publisher("ttl", client.PublishSettings{})
	defer p.Stop()
	s := c.Subscriber("ttl", "c", client.ReceiveSettings{})
	got := make(chan *client.Delivery, 2)
	stop := receive(s, func(_ context.Context, d *client.Delivery) {
		d.Ack()
		got <- d
	})
	defer stop()
	before := time.Now()
	if _, err := p.Publish(t.Context(), &client.Message{Body: []byte("ttl"), TTL: time.Hour}).Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	publishOne(t, p, "none")
	for range 2 {
		select {
		case d := <-got:
			switch string(d.Body) {
			case "ttl":
				if d.ExpireTime.Before(before.Add(time.Hour)) || d.ExpireTime.After(after.Add(time.Hour)) {
					t.Errorf("ExpireTime %v, want between %v and %v", d.ExpireTime, before.Add(time.Hour), after.Add(time.Hour))
				}
			default:
				if !d.ExpireTime.IsZero() {
					t.Errorf("ExpireTime %v for a message without TTL", d.ExpireTime)
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("not delivered")
		}
	}
}

// TestNackRetryPolicy: with a retry policy, Nack hands the delivery back
// for the policy's backoff (1.5 s here); the redelivery is attempt 2.
func TestNackRetryPolicy(t *testing.T) {
	e := newEnv(t, gatewayOptions{})
	c := newClient(t, e.gw.addr)
	p := c.Publisher("nackretry", client.PublishSettings{})
	defer p.Stop()
	s := c.Subscriber("nackretry", "c", client.ReceiveSettings{
		RetryPolicy: &client.RetryPolicy{MinBackoff: 1500 * time.Millisecond, MaxBackoff: 1500 * time.Millisecond}})
	type got struct {
		attempt int
		at      time.Time
	}
	ch := make(chan got, 4)
	stop := receive(s, func(_ context.Context, d *client.Delivery) {
		ch <- got{d.Attempt, time.Now()}
		if d.Attempt == 1 {
			d.Nack()
		} else {
			d.Ack()
		}
	})
	defer stop()
	publishOne(t, p, "m")
	var first, second got
	for i, g := range []*got{&first, &second} {
		select {
		case *g = <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("delivery %d missing", i+1)
		}
	}
	if second.attempt != 2 || second.at.Sub(first.at) < 1400*time.Millisecond {
		t.Errorf("redelivery attempt %d after %v, want attempt 2 after at least 1.4 s", second.attempt, second.at.Sub(first.at))
	}
}
