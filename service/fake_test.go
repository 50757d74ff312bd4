package service

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// faultBackend is a backends.Backend whose behaviour a test sets: it injects
// faults (errors, blocking sends, deliveries on demand) that real nsqd
// cannot produce on cue. Tests of behaviour against NSQ use the real pool.
type faultBackend struct {
	sends  atomic.Int64 // Send calls
	send   func(ctx context.Context, topic string, msgs []*backends.Message, opts backends.SendOptions) error
	subErr error
	subs   chan *faultSub
}

func newFaultBackend() *faultBackend {
	return &faultBackend{subs: make(chan *faultSub, 16)}
}

func (b *faultBackend) Send(ctx context.Context, topic string, msgs []*backends.Message, opts backends.SendOptions) error {
	b.sends.Add(1)
	if b.send != nil {
		return b.send(ctx, topic, msgs, opts)
	}
	return nil
}

func (b *faultBackend) Subscribe(_ context.Context, opts backends.SubscribeOptions) (backends.Subscription, error) {
	if b.subErr != nil {
		return nil, b.subErr
	}
	s := &faultSub{opts: opts, deliveries: make(chan *backends.Delivery, 16), closed: make(chan struct{})}
	b.subs <- s
	return s, nil
}

func (b *faultBackend) Close() error { return nil }

// nextSub waits for the next subscription opened on b.
func (b *faultBackend) nextSub(t *testing.T) *faultSub {
	t.Helper()
	select {
	case s := <-b.subs:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no subscription opened")
		return nil
	}
}

type faultSub struct {
	opts       backends.SubscribeOptions
	deliveries chan *backends.Delivery
	closed     chan struct{}
	once       sync.Once
}

func (s *faultSub) Receive(ctx context.Context) (*backends.Delivery, error) {
	select {
	case d := <-s.deliveries:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closed:
		return nil, backends.ErrClosed
	}
}

func (s *faultSub) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// deliver queues a delivery with a fresh faultAcker and returns the acker.
func (s *faultSub) deliver(id, body string) *faultAcker { return s.deliverAttempt(id, body, 1) }

// deliverAttempt delivers the message's attempt-th delivery.
func (s *faultSub) deliverAttempt(id, body string, attempt int) *faultAcker {
	a := &faultAcker{}
	s.deliveries <- &backends.Delivery{
		Message: backends.Message{ID: id, Body: []byte(body), Attributes: map[string]string{"k": "v"}, PublishTime: time.Unix(1_700_000_000, 0)},
		Attempt: attempt,
		Acker:   a,
	}
	return a
}

func (s *faultSub) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// faultAcker records how a delivery was settled.
type faultAcker struct {
	mu      sync.Mutex
	settled string // "", "ack", "nack"
	delay   time.Duration
	extends int
}

func (a *faultAcker) settle(how string, delay time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.settled != "" {
		return backends.ErrUnknownDelivery
	}
	a.settled, a.delay = how, delay
	return nil
}

func (a *faultAcker) Ack() error                 { return a.settle("ack", 0) }
func (a *faultAcker) Nack(d time.Duration) error { return a.settle("nack", d) }
func (a *faultAcker) Extend() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.settled != "" {
		return backends.ErrUnknownDelivery
	}
	a.extends++
	return nil
}

func (a *faultAcker) state() (string, time.Duration, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.settled, a.delay, a.extends
}

// serve serves q (and admin, if not nil) on 127.0.0.1:0 and returns a client
// connection. Both are closed at cleanup.
func serve(t *testing.T, q *Queue, admin *Admin, extra ...func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(q.Limits().MaxRequestBytes()))
	qgatev1.RegisterQueueServiceServer(srv, q)
	if admin != nil {
		qgatev1.RegisterAdminServiceServer(srv, admin)
	}
	for _, f := range extra {
		f(srv)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = q.Shutdown(ctx)
		srv.Stop()
		<-served
	})
	return conn
}
