package client

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// ReceiveSettings configure a Subscriber. Zero values take the defaults.
type ReceiveSettings struct {
	// MaxOutstandingMessages is the most deliveries received and not yet
	// acked or nacked: the subscription's max_in_flight, enforced by the
	// server. Default DefaultReceiveMaxOutstandingMessages, at most 2500.
	MaxOutstandingMessages int
	// MaxOutstandingBytes bounds the bodies received and not yet settled:
	// past it the Subscriber stops reading the stream until handlers
	// settle some. It is checked per server response, so a response of
	// up to MaxBatch deliveries is admitted whole when nothing is held.
	// -1 is no bound. Default DefaultReceiveMaxOutstandingBytes.
	MaxOutstandingBytes int
	// NumGoroutines is how many handlers run at once. Default
	// DefaultNumGoroutines.
	NumGoroutines int
	// AckDeadline is how long the server waits for an ack before it
	// redelivers (1 s to 15 min). The Subscriber extends the deadline of
	// every delivery it holds every third of it. 0: the server's default
	// (60 s).
	AckDeadline time.Duration
	// MaxExtension is how long the Subscriber keeps extending a delivery
	// that is not settled; after it the delivery is left to expire and
	// be redelivered. Default DefaultMaxExtension.
	MaxExtension time.Duration
	// MaxBatch is the most deliveries per server response (open.max_batch).
	// Default MaxOutstandingMessages: the server never waits to fill a
	// batch, so this only saves work when a backlog drains.
	MaxBatch int
	// MaxBatchBytes is the most bytes per server response
	// (open.max_batch_bytes; 0: the server's default, 1 MiB). The
	// Subscriber accepts responses up to 4 MiB or MaxBatchBytes + 1 MiB,
	// whichever is larger: set it to receive messages larger than 4 MiB.
	MaxBatchBytes int
	// AckDelay is how long acks, nacks and extends may wait to be sent
	// together. Default DefaultAckDelay. A quarter of
	// MaxOutstandingMessages pending acks are sent at once.
	AckDelay time.Duration
	// MaxAttempts and DeadLetterTopic are the subscription's dead
	// lettering (open.max_attempts, open.dead_letter_topic);
	// DeadLetterExpired sends expired messages there too instead of
	// dropping them (open.dead_letter_expired).
	MaxAttempts       int
	DeadLetterTopic   string
	DeadLetterExpired bool
	// RetryPolicy, if set, spaces out redeliveries of deliveries nacked
	// without a delay (Nack) and of deliveries whose ack deadline passed:
	// MinBackoff × 2^(attempt-1), at most MaxBackoff, ±20%
	// (open.retry_policy; a zero field takes the server's default, 1 s and
	// 10 min).
	RetryPolicy *RetryPolicy
	// Filter, if set, is the subscription's filter: a CEL expression over
	// attributes (open.filter); messages it rejects are finished on the
	// channel. Every subscriber of a channel should use the same one.
	Filter string
	// Retry is the backoff between attempts to reopen a broken stream.
	// Default DefaultRetry.
	Retry Backoff
	// OnStreamError, if set, is called with the error that broke or
	// failed to open a stream, before Receive retries; for logs. It runs
	// on Receive's goroutine and must return promptly.
	OnStreamError func(error)
}

// Defaults of ReceiveSettings.
const (
	DefaultReceiveMaxOutstandingMessages = 1000
	DefaultReceiveMaxOutstandingBytes    = 256 << 20
	DefaultNumGoroutines                 = 16
	DefaultMaxExtension                  = time.Hour
	DefaultAckDelay                      = 2 * time.Millisecond
)

// serverDefaultAckDeadline is the server's ack deadline when open leaves it
// unset; the Opened response says the effective one anyway.
const serverDefaultAckDeadline = 60 * time.Second

func (s ReceiveSettings) withDefaults() ReceiveSettings {
	if s.MaxOutstandingMessages <= 0 {
		s.MaxOutstandingMessages = DefaultReceiveMaxOutstandingMessages
	}
	s.MaxOutstandingMessages = min(s.MaxOutstandingMessages, 2500)
	if s.MaxOutstandingBytes == 0 {
		s.MaxOutstandingBytes = DefaultReceiveMaxOutstandingBytes
	}
	if s.NumGoroutines <= 0 {
		s.NumGoroutines = DefaultNumGoroutines
	}
	if s.MaxExtension <= 0 {
		s.MaxExtension = DefaultMaxExtension
	}
	if s.MaxBatch <= 0 {
		s.MaxBatch = s.MaxOutstandingMessages
	}
	s.MaxBatch = min(s.MaxBatch, s.MaxOutstandingMessages)
	if s.AckDelay <= 0 {
		s.AckDelay = DefaultAckDelay
	}
	if s.Retry.Initial <= 0 || s.Retry.Max < s.Retry.Initial {
		s.Retry = DefaultRetry
	}
	return s
}

// Subscriber receives the messages of a topic through a channel.
type Subscriber struct {
	client           *Client
	topic, channel   string
	s                ReceiveSettings
	receiving        atomic.Bool
	opens, ackErrors atomic.Int64 // for tests
}

// Subscriber returns a Subscriber of topic through channel. Subscribers on
// the same topic and channel share its messages; every channel gets every
// message. A channel ending in "#ephemeral" disappears with its last
// subscriber.
func (c *Client) Subscriber(topic, channel string, s ReceiveSettings) *Subscriber {
	return &Subscriber{client: c, topic: topic, channel: channel, s: s.withDefaults()}
}

// RetryPolicy is a subscription's redelivery backoff (see
// ReceiveSettings.RetryPolicy).
type RetryPolicy struct {
	MinBackoff, MaxBackoff time.Duration
}

// Delivery is one delivery of a message. Settle it with exactly one of
// Ack, Nack or NackWithDelay; further calls do nothing.
type Delivery struct {
	// ID is the id Publish returned for the message.
	ID string
	// Body and Attributes are the message as published.
	Body       []byte
	Attributes map[string]string
	// Attempt is 1 for the first delivery of the message.
	Attempt int
	// PublishTime is when qgate accepted the message.
	PublishTime time.Time
	// ExpireTime is when the message expires (Message.TTL); zero if it
	// does not. qgate does not deliver it after then; a handler that
	// finishes later may still ack it.
	ExpireTime time.Time

	ackID    string
	sess     *session
	size     int
	received time.Time
	settled  atomic.Bool
}

// AckID returns the delivery's ack id on its stream, for logs.
func (d *Delivery) AckID() string { return d.ackID }

// Ack acknowledges the delivery: it will not be delivered again. Acks are
// sent in batches within ReceiveSettings.AckDelay. An ack made after the
// stream that carried the delivery broke is lost: the message was handed
// back and is delivered again.
func (d *Delivery) Ack() { d.settle(settleAck, 0) }

// Nack hands the delivery back for redelivery at once, or after the
// subscription's retry policy's backoff when it has one.
func (d *Delivery) Nack() { d.settle(settleNack, 0) }

// NackWithDelay hands the delivery back for redelivery after delay (at
// most 1 h); a delay of 0 is Nack.
func (d *Delivery) NackWithDelay(delay time.Duration) { d.settle(settleNack, delay) }

type settleKind int

const (
	settleAck settleKind = iota
	settleNack
)

type settleReq struct {
	d     *Delivery
	kind  settleKind
	delay time.Duration
}

func (d *Delivery) settle(kind settleKind, delay time.Duration) {
	if d.sess == nil || !d.settled.CompareAndSwap(false, true) {
		return
	}
	d.sess.post(settleReq{d: d, kind: kind, delay: delay})
}

// Receive calls f for every delivery, on up to NumGoroutines goroutines at
// once, until ctx ends or a permanent error occurs. f must settle each
// delivery (Ack, Nack or NackWithDelay); while it holds one, Receive keeps
// extending its ack deadline, up to MaxExtension.
//
// When the stream breaks (gateway restart, UNAVAILABLE, network) Receive
// opens a new one after a backoff, on any gateway the Client reaches, and
// goes on. It returns nil when ctx ends, after every running f returned
// and their acks were sent; the server hands back every delivery that was
// not acked. It returns an error at once for a permanent failure:
// UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT (a bad topic,
// channel or setting), FAILED_PRECONDITION, UNIMPLEMENTED, NOT_FOUND.
//
// Only one Receive may run at a time on a Subscriber.
func (s *Subscriber) Receive(ctx context.Context, f func(context.Context, *Delivery)) error {
	if !s.receiving.CompareAndSwap(false, true) {
		return ErrReceiving
	}
	defer s.receiving.Store(false)

	// Buffered, so handlers take the next delivery without waiting for
	// the session loop to run; a delivery of a session that is ending is
	// skipped (it goes back to the server with the stream).
	work := make(chan *Delivery, s.s.MaxOutstandingMessages)
	var handlers sync.WaitGroup
	for range s.s.NumGoroutines {
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			for d := range work {
				if !d.sess.stopping.Load() {
					f(ctx, d)
				}
				d.sess.handled()
			}
		}()
	}
	defer handlers.Wait()
	defer close(work)

	fc := newFlowController(-1, s.s.MaxOutstandingBytes)
	for attempt := 0; ; {
		healthy, err := s.session(ctx, work, fc)
		if ctx.Err() != nil {
			return nil
		}
		if permanent(err) {
			return fmt.Errorf("client: subscribe to %s/%s: %w", s.topic, s.channel, err)
		}
		if healthy {
			attempt = 0
		}
		if s.s.OnStreamError != nil {
			s.s.OnStreamError(err)
		}
		if sleep(ctx, s.s.Retry.delay(attempt)) != nil {
			return nil
		}
		attempt++
	}
}

// session runs one Subscribe stream until it breaks or ctx ends. healthy
// says whether it was opened.
func (s *Subscriber) session(ctx context.Context, work chan<- *Delivery, fc *flowController) (healthy bool, err error) {
	// The stream outlives ctx briefly, to send the last acks.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// Until the stream is open, ctx ending ends it.
	stopOpening := context.AfterFunc(ctx, cancel)
	// gRPC's default receive limit is 4 MiB; a response is at most the
	// batch budget, or one delivery larger than it.
	recvLimit := max(4<<20, s.s.MaxBatchBytes+1<<20)
	stream, err := s.client.queue.Subscribe(sctx, grpc.MaxCallRecvMsgSize(recvLimit))
	if err != nil {
		return false, err
	}
	open := &qgatev1.SubscribeRequest_Open{Topic: s.topic, Channel: s.channel,
		MaxInFlight: uint32(s.s.MaxOutstandingMessages), MaxBatch: uint32(s.s.MaxBatch),
		MaxBatchBytes: uint32(min(max(s.s.MaxBatchBytes, 0), math.MaxUint32)),
		MaxAttempts:   uint32(s.s.MaxAttempts), DeadLetterTopic: s.s.DeadLetterTopic,
		DeadLetterExpired: s.s.DeadLetterExpired, Filter: s.s.Filter}
	if r := s.s.RetryPolicy; r != nil {
		open.RetryPolicy = &qgatev1.RetryPolicy{}
		if r.MinBackoff > 0 {
			open.RetryPolicy.MinimumBackoff = durationpb.New(r.MinBackoff)
		}
		if r.MaxBackoff > 0 {
			open.RetryPolicy.MaximumBackoff = durationpb.New(r.MaxBackoff)
		}
	}
	if s.s.AckDeadline > 0 {
		open.AckDeadline = durationpb.New(s.s.AckDeadline)
	}
	if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
		_, err = stream.Recv() // the reason
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	opened := first.GetOpened()
	if opened == nil {
		return false, status.Error(codes.Internal, "client: Subscribe: first response is not opened")
	}
	if !stopOpening() {
		return false, ctx.Err()
	}
	s.opens.Add(1)
	ackDeadline := serverDefaultAckDeadline
	if d := opened.GetAckDeadline(); d != nil {
		ackDeadline = d.AsDuration()
	}
	ss := &session{
		sub: s, stream: stream, fc: fc, ackDeadline: ackDeadline,
		flushAt:     max(1, int(opened.GetMaxInFlight())/4),
		outstanding: map[string]*Delivery{},
		kick:        make(chan struct{}, 1),
		incoming:    make(chan []*Delivery, 1),
		recvErr:     make(chan error, 1),
		nacks:       map[time.Duration][]string{},
	}
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		ss.read(sctx)
	}()
	defer reader.Wait()
	defer cancel()
	return true, ss.loop(ctx, work)
}
