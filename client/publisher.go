package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Message is a message to publish.
type Message struct {
	// ID, if set, is the message's id, chosen by the application: 1 to 64
	// bytes of [A-Za-z0-9._:-], the same in every send of the message (see
	// qgate.v1.Message.id). Empty: the Publisher assigns one. Either way
	// every retry of the message carries it, so qgate delivers it once per
	// channel within its dedup window (see "Retries and duplicates" in the
	// package documentation). Two messages with the same ID are one
	// message: qgate delivers one of them.
	ID string
	// Body is the payload; at least 1 byte, at most the server's body
	// limit (1 MiB by default, counting qgate's envelope).
	Body []byte
	// Attributes are delivered with the message.
	Attributes map[string]string
	// Delay, if above 0, overrides PublishSettings.Delay for this message.
	Delay time.Duration
	// DeliverAt, if not zero, is when the message is due
	// (qgate.v1.SendRequest.deliver_at): at most the server's delay limit
	// ahead (366 days by default); a time in the past means at once. It
	// overrides any Delay. Unlike a delay, it is not counted again when a
	// send is retried.
	DeliverAt time.Time
	// Replicas, if above 0, overrides PublishSettings.Replicas for this
	// message.
	Replicas int
	// TTL, if above 0, is the message's time to live (qgate.v1.Message.ttl):
	// it is not delivered after TTL from when qgate accepted it. From 1 ms
	// to 366 days, and longer than the delay. A retry counts it again from
	// its own acceptance, so a retried message may live up to the retry
	// time longer.
	TTL time.Duration
}

// FlowControl says what Publish does when the outstanding bounds are
// reached.
type FlowControl int

const (
	// FlowBlock makes Publish wait for room (or for its ctx to end).
	FlowBlock FlowControl = iota
	// FlowFail makes Publish return a result that fails with ErrFlowControl.
	FlowFail
)

// PublishSettings configure a Publisher. Zero values take the defaults.
type PublishSettings struct {
	// CountThreshold and ByteThreshold cap a batch: one SendStream request
	// carries at most this many messages and about this many bytes.
	// Defaults DefaultCountThreshold and DefaultByteThreshold.
	CountThreshold int
	ByteThreshold  int
	// DelayThreshold is the least time a batch stays open for more
	// messages once a request slot is free. Default 0: a batch is written
	// as soon as one of MaxOutstandingBatches slots is free, and messages
	// published while every slot is busy gather in the next batch, so the
	// batching delay adapts to load (one round trip at most) and a lone
	// Publish is written at once.
	DelayThreshold time.Duration
	// MaxOutstandingBatches is how many requests may be in flight on the
	// stream at once. Default DefaultMaxOutstandingBatches.
	MaxOutstandingBatches int
	// MaxOutstandingMessages and MaxOutstandingBytes bound the messages
	// published and not yet settled (acknowledged or failed); a bound of
	// -1 is no bound. Defaults DefaultPublishMaxOutstandingMessages and
	// DefaultPublishMaxOutstandingBytes.
	MaxOutstandingMessages int
	MaxOutstandingBytes    int
	// FlowControl says what happens at the bounds. Default FlowBlock.
	FlowControl FlowControl
	// Timeout is each message's deadline from Publish, retries included:
	// a message not acknowledged by then fails with the last error seen.
	// Default DefaultPublishTimeout.
	Timeout time.Duration
	// Retry is the backoff between attempts of a batch and between
	// attempts to open the stream. Default DefaultRetry.
	Retry Backoff
	// Delay defers delivery of every message (at most the server's delay
	// limit: 366 days by default); 0 means at once. A retried send counts
	// it again from its own acceptance (Message.DeliverAt does not).
	Delay time.Duration
	// Replicas is how many nodes, each in a different group, must
	// acknowledge a copy; 0 means the server's default.
	Replicas int
}

// Defaults of PublishSettings. The batch thresholds stay well inside the
// server's batch limit (1000 messages, 5 MiB) so a full batch is never
// rejected for its size.
const (
	DefaultCountThreshold                = 256
	DefaultByteThreshold                 = 1 << 20
	DefaultMaxOutstandingBatches         = 4
	DefaultPublishMaxOutstandingMessages = 10000
	DefaultPublishMaxOutstandingBytes    = 64 << 20
	DefaultPublishTimeout                = 60 * time.Second
)

// DefaultRetry is PublishSettings.Retry's and ReceiveSettings.Retry's
// default: 50 ms growing to 2 s, so a gateway restart costs well under
// the 2 s it takes to be noticed by people.
var DefaultRetry = Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}

func (s PublishSettings) withDefaults() PublishSettings {
	if s.CountThreshold <= 0 {
		s.CountThreshold = DefaultCountThreshold
	}
	if s.ByteThreshold <= 0 {
		s.ByteThreshold = DefaultByteThreshold
	}
	if s.MaxOutstandingBatches <= 0 {
		s.MaxOutstandingBatches = DefaultMaxOutstandingBatches
	}
	if s.MaxOutstandingMessages == 0 {
		s.MaxOutstandingMessages = DefaultPublishMaxOutstandingMessages
	}
	if s.MaxOutstandingBytes == 0 {
		s.MaxOutstandingBytes = DefaultPublishMaxOutstandingBytes
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultPublishTimeout
	}
	if s.Retry.Initial <= 0 || s.Retry.Max < s.Retry.Initial {
		s.Retry = DefaultRetry
	}
	return s
}

// PublishResult is the outcome of one Publish, known once Ready is closed.
type PublishResult struct {
	ready chan struct{}
	id    string
	err   error
}

// Ready is closed when the result is known.
func (r *PublishResult) Ready() <-chan struct{} { return r.ready }

// Get waits for the result: the message id (Message.ID, or the one the
// Publisher assigned; what subscribers see as Delivery.ID), or why the
// message was not published.
// A ctx that ends first returns ctx's error; the publish goes on.
func (r *PublishResult) Get(ctx context.Context) (id string, err error) {
	select {
	case <-r.ready:
		return r.id, r.err
	default:
	}
	select {
	case <-r.ready:
		return r.id, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (r *PublishResult) set(id string, err error) {
	r.id, r.err = id, err
	close(r.ready)
}

func failedResult(err error) *PublishResult {
	r := &PublishResult{ready: make(chan struct{})}
	r.set("", err)
	return r
}

// batchKey is what the messages of one request share.
type batchKey struct {
	delay     time.Duration
	deliverAt int64 // Unix nanoseconds; 0: none
	replicas  int
}

// batch is one SendStream request and the results it settles.
type batch struct {
	key  batchKey
	msgs []*qgatev1.Message
	// appIDs holds the ids the application chose (Message.ID), allocated
	// on the first: qgate refuses a request with an id twice, so a
	// message whose id is in the batch goes in the next one.
	appIDs   map[string]bool
	results  []*PublishResult
	bytes    int
	start    time.Time // first Publish into the batch
	deadline time.Time // start + Timeout
	req      *qgatev1.SendStreamRequest

	attempts  int
	notBefore time.Time // earliest next attempt, for retries
	lastErr   error
}

// Publisher publishes messages to one topic, in batches over one
// SendStream. It is safe for concurrent use. Create it with
// Client.Publisher and Stop it when done.
type Publisher struct {
	client *Client
	topic  string
	s      PublishSettings
	fc     *flowController

	mu      sync.Mutex
	cur     *batch   // open batch, nil if none
	sealed  []*batch // full batches waiting for a slot
	stopped bool

	kick chan struct{} // cap 1: something to do for run
	quit chan struct{} // closed by Stop once everything is settled
	wg   sync.WaitGroup

	ids *idSource // assigns the ids of messages published without one

	requests atomic.Int64 // SendStream requests written, for tests
}

// Publisher returns a Publisher for topic and starts its sender. Call
// Stop to flush it and release it.
func (c *Client) Publisher(topic string, s PublishSettings) *Publisher {
	s = s.withDefaults()
	p := &Publisher{
		client: c, topic: topic, s: s,
		fc:   newFlowController(s.MaxOutstandingMessages, s.MaxOutstandingBytes),
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		ids:  newIDSource(),
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.run()
	}()
	return p
}

// Topic returns the topic the Publisher writes to.
func (p *Publisher) Topic() string { return p.topic }

// messageSize estimates what m adds to a request: the body, the
// attributes, and qgate's envelope (id, timestamp, framing).
func messageSize(m *Message) int {
	n := len(m.Body) + 64 + len(m.ID)
	for k, v := range m.Attributes {
		n += len(k) + len(v) + 8
	}
	return n
}

// Publish queues m for publishing and returns at once with its result,
// unless flow control makes it wait (FlowBlock, until ctx ends). m must
// not be changed until the result is ready. ctx bounds only that wait; the
// message's deadline is PublishSettings.Timeout.
func (p *Publisher) Publish(ctx context.Context, m *Message) *PublishResult {
	if len(m.Body) == 0 {
		return failedResult(ErrEmptyBody)
	}
	if m.ID != "" && !validID(m.ID) {
		return failedResult(fmt.Errorf("%w: %q", ErrBadID, m.ID))
	}
	size := messageSize(m)
	if err := p.fc.acquire(ctx, 1, size, p.s.FlowControl == FlowBlock); err != nil {
		return failedResult(err)
	}
	key := batchKey{delay: p.s.Delay, replicas: p.s.Replicas}
	if m.Delay > 0 {
		key.delay = m.Delay
	}
	if !m.DeliverAt.IsZero() {
		key.delay, key.deliverAt = 0, m.DeliverAt.UnixNano()
	}
	if m.Replicas > 0 {
		key.replicas = m.Replicas
	}
	r := &PublishResult{ready: make(chan struct{})}
	msg := &qgatev1.Message{Id: m.ID, Body: m.Body, Attributes: m.Attributes}
	if m.TTL > 0 {
		msg.Ttl = durationpb.New(m.TTL)
	}
	if msg.Id == "" {
		// An id of its own, kept by every retry of the batch: a retried
		// batch whose first attempt was written after all is then
		// delivered once, not twice.
		msg.Id = p.ids.next()
	}

	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.fc.release(1, size)
		r.set("", ErrStopped)
		return r
	}
	if p.cur != nil && (p.cur.key != key || p.cur.bytes+size > p.s.ByteThreshold || p.cur.appIDs[m.ID]) {
		p.sealLocked()
	}
	if p.cur == nil {
		now := time.Now()
		p.cur = &batch{key: key, start: now, deadline: now.Add(p.s.Timeout)}
	}
	b := p.cur
	if m.ID != "" {
		if b.appIDs == nil {
			b.appIDs = make(map[string]bool)
		}
		b.appIDs[m.ID] = true
	}
	b.msgs = append(b.msgs, msg)
	b.results = append(b.results, r)
	b.bytes += size
	if len(b.msgs) >= p.s.CountThreshold {
		p.sealLocked()
	}
	p.mu.Unlock()
	p.wake()
	return r
}

// sealLocked moves the open batch to the sealed queue; mu held.
func (p *Publisher) sealLocked() {
	if p.cur != nil {
		p.sealed = append(p.sealed, p.cur)
		p.cur = nil
	}
}

func (p *Publisher) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Flush writes the open batch at once and waits until every message
// published so far has its result, or ctx ends. Messages published
// concurrently with Flush may be waited for too.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	p.sealLocked()
	p.mu.Unlock()
	p.wake()
	return p.fc.waitEmpty(ctx)
}

// Stop flushes, waits for every outstanding result (each bounded by
// PublishSettings.Timeout), then closes the stream. Publish after Stop
// fails with ErrStopped. Stop is safe to call more than once.
func (p *Publisher) Stop() {
	p.mu.Lock()
	already := p.stopped
	p.stopped = true
	p.sealLocked()
	p.mu.Unlock()
	if !already {
		p.wake()
		_ = p.fc.waitEmpty(context.Background())
		close(p.quit)
	}
	p.wg.Wait()
}

// take returns the next batch to write: sealed batches first, then the
// open batch once it is DelayThreshold old. ok is false if there is none;
// wait, if above 0, is when the open batch will be old enough.
func (p *Publisher) take(now time.Time) (b *batch, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sealed) > 0 {
		b = p.sealed[0]
		p.sealed[0] = nil
		p.sealed = p.sealed[1:]
		return b, 0
	}
	if p.cur == nil {
		return nil, 0
	}
	if age := now.Sub(p.cur.start); age < p.s.DelayThreshold {
		return nil, p.s.DelayThreshold - age
	}
	b, p.cur = p.cur, nil
	return b, 0
}

// settle gives every result of b its outcome and releases its room.
func (p *Publisher) settle(b *batch, ids []string, err error) {
	if err == nil && len(ids) != len(b.results) {
		err = status.Errorf(codes.Internal, "client: %d message ids for %d messages", len(ids), len(b.results))
	}
	for i, r := range b.results {
		if err != nil {
			r.set("", fmt.Errorf("client: publish to %q: %w", p.topic, err))
		} else {
			r.set(ids[i], nil)
		}
	}
	p.fc.release(len(b.results), b.bytes)
}

func (b *batch) request(topic string, id uint64) *qgatev1.SendStreamRequest {
	if b.req == nil {
		send := &qgatev1.SendRequest{Topic: topic, Messages: b.msgs, Replicas: uint32(b.key.replicas)}
		if b.key.delay > 0 {
			send.Delay = durationpb.New(b.key.delay)
		}
		if b.key.deliverAt != 0 {
			send.DeliverAt = timestamppb.New(time.Unix(0, b.key.deliverAt))
		}
		b.req = &qgatev1.SendStreamRequest{Send: send}
	}
	b.req.RequestId = id
	return b.req
}

// errDeadline wraps the last error of a batch whose deadline passed.
func errDeadline(last error) error {
	if last == nil {
		return status.Error(codes.DeadlineExceeded, "client: publish deadline passed")
	}
	return fmt.Errorf("client: publish deadline passed, last attempt: %w", last)
}

// isStreamEnd reports whether err only says the stream ended.
func isStreamEnd(err error) bool { return errors.Is(err, io.EOF) }
