// Package backends defines the contract between qgate's gRPC service and the
// message stores behind it.
//
// A Backend is portable in the gocloud.dev sense: the service layer validates
// requests, assigns message ids and maps errors to gRPC status codes; a backend
// stores and delivers messages, owns its retries, failover and health checks,
// and tells which errors are worth retrying. Every backend must pass the
// conformance suite in package backendtest.
package backends

import (
	"context"
	"errors"
	"time"
)

// Errors a Backend returns. They are compared with errors.Is; a backend wraps
// them with detail (%w). Context errors are returned unwrapped.
var (
	// ErrClosed: the Backend or Subscription was closed.
	ErrClosed = errors.New("backends: closed")
	// ErrUnavailable: no node can take the request now. Retryable, but not
	// proof that nothing was written: an attempt that timed out or lost its
	// connection may still have landed on its node, so a retry may write a
	// second copy (delivery is at least once).
	ErrUnavailable = errors.New("backends: no node available")
	// ErrUnknownDelivery: Ack, Nack or Extend on a delivery that is no longer
	// held by its subscription (already acked or nacked, deadline passed,
	// subscription closed or its connection lost). Not retryable.
	ErrUnknownDelivery = errors.New("backends: unknown delivery")
	// ErrNotFound: a named object (a node) does not exist.
	ErrNotFound = errors.New("backends: not found")
	// ErrRejected: the store refused the request itself (a name it does not
	// accept, an empty or oversized body): the same request fails on every
	// node, so it is not retried. The caller's fault, not the store's.
	ErrRejected = errors.New("backends: request rejected by the store")
)

// Message is a message to write. The service fills every field.
type Message struct {
	// ID is unique per message, assigned by the caller; the same ID in
	// two sends names one message when ClientID is set.
	ID string
	// Body is the payload; never empty.
	Body []byte
	// Attributes travel with the message; may be nil.
	Attributes map[string]string
	// PublishTime is when the service accepted the message.
	PublishTime time.Time
	// ClientID reports that ID was chosen by the client, which may send it
	// again (a retry): subscriptions deliver the message once per channel
	// within the backend's documented dedup window, as they do the copies
	// of a replicated send.
	ClientID bool
	// ExpireAt, if not zero, is when the message expires: subscriptions
	// do not hand it out after it (see SubscribeOptions.DeadLetterExpired).
	// A delivery made before it stands.
	ExpireAt time.Time
}

// SendOptions modify a Send.
type SendOptions struct {
	// Delay defers delivery; 0 means at once.
	Delay time.Duration
	// Replicas is how many nodes, each in a different group of the store,
	// must each acknowledge a copy of msgs before Send returns nil; 0 and 1
	// mean one copy. With 2 or more, an acknowledged message survives the
	// permanent loss of a node. When fewer groups than Replicas can take a
	// copy, Send fails with ErrUnavailable, and no copy may be assumed
	// written (nor absent). Subscriptions deliver one copy in the normal
	// case; what a backend deduplicates is its documented choice.
	Replicas int
}

// Sizer is implemented by a Backend that stores more than a message's body
// (an envelope, framing), so that requests are checked against the store's
// size limits before anything is written.
type Sizer interface {
	// MessageSize returns the most bytes m takes in the store, whatever its
	// publish time and SendOptions (m.ID has the length of the ids sent).
	MessageSize(m *Message) int
	// BatchSize returns the bytes of one write of n messages whose
	// MessageSizes add up to total.
	BatchSize(n, total int) int
}

// MaxDelayer is implemented by a Backend whose longest SendOptions.Delay
// is known (0: not known); the service refuses longer delays before
// anything is written.
type MaxDelayer interface {
	MaxDelay() time.Duration
}

// MaxDelay is b's MaxDelay when b is a MaxDelayer, else 0 (not known).
// A Backend that wraps another forwards it with this.
func MaxDelay(b Backend) time.Duration {
	if md, ok := b.(MaxDelayer); ok {
		return md.MaxDelay()
	}
	return 0
}

// MessageSize is b's MessageSize when b is a Sizer, else the size of m's
// body and attributes.
func MessageSize(b Backend, m *Message) int {
	if s, ok := b.(Sizer); ok {
		return s.MessageSize(m)
	}
	n := len(m.Body)
	for k, v := range m.Attributes {
		n += len(k) + len(v)
	}
	return n
}

// BatchSize is b's BatchSize when b is a Sizer, else total.
func BatchSize(b Backend, n, total int) int {
	if s, ok := b.(Sizer); ok {
		return s.BatchSize(n, total)
	}
	return total
}

// Backend stores messages and delivers them to subscriptions.
//
// All methods are safe for concurrent use.
type Backend interface {
	// Send writes msgs to topic. It blocks until the write is acknowledged, ctx
	// is done or the backend gives up. nil means every message was durably
	// accepted by the store; any error means nothing may be assumed (some or
	// all messages may have been written). Send retries on other nodes itself:
	// callers should not retry ErrUnavailable in a tight loop. Send honours
	// ctx's deadline even when a node does not answer. msgs must not be
	// modified until Send returns.
	Send(ctx context.Context, topic string, msgs []*Message, opts SendOptions) error

	// Subscribe opens a subscription. ctx bounds only the opening; the
	// subscription lives until its Close or the Backend's Close. Options must
	// be valid (the service validates them); zero values take the defaults
	// documented on SubscribeOptions. Subscribe returns once the channel
	// exists on every reachable node, so messages sent after it returns are
	// kept for the subscription even before the first Receive.
	Subscribe(ctx context.Context, opts SubscribeOptions) (Subscription, error)

	// Close stops the backend: open subscriptions are closed (their unacked
	// deliveries handed back), later calls return ErrClosed. Close waits for
	// every goroutine the backend started. Safe to call more than once; later
	// calls return nil.
	Close() error
}

// SubscribeOptions configure a subscription.
type SubscribeOptions struct {
	Topic   string
	Channel string
	// MaxInFlight bounds deliveries handed out by Receive and not yet acked
	// or nacked. Must be >= 1.
	MaxInFlight int
	// AckDeadline is how long a delivery may stay unacked before the store
	// hands it back for redelivery. Must be > 0.
	AckDeadline time.Duration
	// MaxAttempts, if > 0, sends a message whose next delivery would be
	// attempt MaxAttempts+1 to DeadLetterTopic instead of delivering it. The
	// dead letter carries the attributes qgate-dead-letter-attempts (the
	// deliveries made, i.e. MaxAttempts) and qgate-dead-letter-reason.
	MaxAttempts int
	// DeadLetterTopic receives messages past MaxAttempts, and expired
	// ones with DeadLetterExpired. Required when either is set.
	DeadLetterTopic string
	// DeadLetterExpired sends a message met after its ExpireAt to
	// DeadLetterTopic (reason "expired", and the attribute
	// qgate-dead-letter-expire-time) instead of finishing it undelivered.
	// The dead letter does not expire.
	DeadLetterExpired bool
	// Filter, if set, is called with the attributes of each message (nil
	// for one without); a message it returns false for is finished without
	// delivery. It must be safe for concurrent use.
	Filter func(attributes map[string]string) bool
	// Retry, if set, spaces out redeliveries: a delivery whose ack
	// deadline passed is redelivered after Retry.Backoff(its attempt)
	// instead of at once. (A Nack's delay is the caller's: the service
	// passes the policy's backoff for a nack without one.)
	Retry *RetryPolicy
}

// RetryPolicy is an exponential redelivery backoff: after a delivery of
// attempt n, Min × 2^(n-1), at most Max, jittered by up to 20% either way
// and kept within [Min, Max].
type RetryPolicy struct {
	Min, Max time.Duration
}

// Backoff returns the delay before redelivering a message whose delivery
// of attempt (1 for the first) failed; jitter in [0, 1) picks the point
// within ±20% (0.5: none).
func (p RetryPolicy) Backoff(attempt int, jitter float64) time.Duration {
	d := p.Min
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	d = time.Duration(float64(d) * (0.8 + 0.4*jitter))
	return min(max(d, p.Min), p.Max)
}

// Subscription delivers messages of one topic and channel.
//
// Receive must be called from one goroutine at a time; Close and the
// Delivery methods may be called from any goroutine.
type Subscription interface {
	// Receive blocks until a delivery is ready, ctx is done (ctx.Err()) or the
	// subscription is closed (ErrClosed). It returns at most MaxInFlight
	// deliveries that are not yet acked or nacked. A delivery that is ready
	// is returned even when ctx is already done, so a caller takes what is
	// ready without blocking by passing a done context.
	Receive(ctx context.Context) (*Delivery, error)

	// Close stops deliveries and hands every delivery that is not acked or
	// nacked back for immediate redelivery, without waiting for its
	// deadline. It waits for the subscription's goroutines. Safe to call more
	// than once; later calls return nil.
	Close() error
}

// Delivery is one delivery of a message.
type Delivery struct {
	// Message holds what was sent. For a body written without qgate's
	// envelope, ID is the store's id, Attributes is nil and Body is the raw
	// body.
	Message
	// Attempt is 1 for the first delivery of the message.
	Attempt int
	// Acker settles the delivery.
	Acker Acker
}

// Acker settles a delivery. Its methods are safe for concurrent use; once a
// delivery is acked or nacked, further calls return ErrUnknownDelivery.
type Acker interface {
	// Ack marks the delivery done: it is not delivered again.
	Ack() error
	// Nack hands the delivery back for redelivery after delay.
	Nack(delay time.Duration) error
	// Extend resets the delivery's ack deadline to a full AckDeadline from
	// now.
	Extend() error
}
