package service

import (
	"log/slog"
	"time"
)

// Limits bound what a request may ask for. The defaults are nsqd's defaults;
// a limit above what the nsqd nodes are configured for lets requests through
// that nsqd rejects by closing the connection, so raise both together.
type Limits struct {
	// MaxBodyBytes is the largest message body as the backend stores it
	// (backends.Sizer; for NSQ after qgate's envelope with the id,
	// attributes and publish time is added): nsqd's --max-msg-size.
	// Default 1 MiB.
	MaxBodyBytes int
	// MaxBatchMessages is the most messages in one Send. Default 1000.
	MaxBatchMessages int
	// MaxBatchBytes bounds a Send's messages together as the backend
	// writes them (for NSQ the body of the MPUB command: 4 bytes plus, per
	// message, 4 bytes and its enveloped size). nsqd's --max-body-size.
	// Default 5 MiB.
	MaxBatchBytes int
	// MaxDelay bounds Nack's delay and retry backoffs: nsqd's
	// --max-req-timeout. Default 1 h.
	MaxDelay time.Duration
	// MaxSendDelay bounds Send's delay and deliver_at. Default: the
	// backend's MaxDelay when it is a backends.MaxDelayer (366 days for
	// an NSQ pool with a timer topic), else MaxDelay.
	MaxSendDelay time.Duration
	// MaxInFlight bounds Subscribe's max_in_flight: nsqd's
	// --max-rdy-count. Default 2500.
	MaxInFlight int
	// MaxAckDeadline bounds Subscribe's ack_deadline: nsqd's
	// --max-msg-timeout. Default 15 min.
	MaxAckDeadline time.Duration
}

// Default values of Limits and of stream settings.
const (
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxBatchMessages = 1000
	DefaultMaxBatchBytes    = 5 << 20
	DefaultMaxDelay         = time.Hour
	DefaultMaxInFlight      = 2500
	DefaultMaxAckDeadline   = 15 * time.Minute

	// DefaultSendStreamWindow is how many requests of one SendStream are
	// processed at once.
	DefaultSendStreamWindow = 64
	// DefaultSendStreamTimeout bounds each request of a SendStream, which
	// has no deadline of its own (the stream's deadline still applies).
	DefaultSendStreamTimeout = 30 * time.Second
	// DefaultSendGrace is how long an ending stream waits for responses
	// its client does not read (see WithSendGrace).
	DefaultSendGrace = 5 * time.Second
	// DefaultSubscribeMaxInFlight is max_in_flight when the client sends 0.
	DefaultSubscribeMaxInFlight = 100
	// DefaultAckDeadline is ack_deadline when the client leaves it unset.
	DefaultAckDeadline = 60 * time.Second
	// MinAckDeadline is the shortest ack_deadline.
	MinAckDeadline = time.Second
)

// Fixed limits stated by the API (proto/qgate/v1/queue.proto).
const (
	maxNameLen      = 64
	maxMessageIDLen = 64
	maxAttributes   = 64
	maxAttrKeyBytes = 256
	maxAttrValBytes = 4096
	maxAckIDs       = 2500
	maxMaxAttempts  = 65535
	maxMaxBatch     = 2500
	// A `deliveries` response's default byte budget, a quarter of gRPC's
	// default 4 MiB client receive limit, and the most a client may ask for.
	defaultMaxBatchBytes = 1 << 20
	maxMaxBatchBytes     = 64 << 20
	maxViolations        = 100
	requestSlackSize     = 64 << 10
)

// DefaultLimits returns the default Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxBodyBytes:     DefaultMaxBodyBytes,
		MaxBatchMessages: DefaultMaxBatchMessages,
		MaxBatchBytes:    DefaultMaxBatchBytes,
		MaxDelay:         DefaultMaxDelay,
		MaxInFlight:      DefaultMaxInFlight,
		MaxAckDeadline:   DefaultMaxAckDeadline,
	}
}

// withDefaults fills zero (or negative) fields with the defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.MaxBatchMessages <= 0 {
		l.MaxBatchMessages = d.MaxBatchMessages
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = d.MaxBatchBytes
	}
	if l.MaxDelay <= 0 {
		l.MaxDelay = d.MaxDelay
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = d.MaxInFlight
	}
	if l.MaxAckDeadline <= 0 {
		l.MaxAckDeadline = d.MaxAckDeadline
	}
	if l.MaxAckDeadline < MinAckDeadline {
		l.MaxAckDeadline = MinAckDeadline
	}
	return l
}

// MaxRequestBytes is the gRPC receive limit a server needs so that every
// request within these limits gets through (grpc.MaxRecvMsgSize): the batch
// limit plus room for the topic, the delay and the per-message framing. Zero
// fields count as their defaults. gRPC's own default, 4 MiB, is below the
// default batch limit.
func (l Limits) MaxRequestBytes() int {
	return l.withDefaults().MaxBatchBytes + requestSlackSize
}

// Option configures a Queue.
type Option func(*options)

type options struct {
	limits        Limits
	window        int
	streamTimeout time.Duration
	sendGrace     time.Duration
	logger        *slog.Logger
	replicas      int
}

func defaultOptions() options {
	return options{
		limits:        DefaultLimits(),
		window:        DefaultSendStreamWindow,
		streamTimeout: DefaultSendStreamTimeout,
		sendGrace:     DefaultSendGrace,
		logger:        slog.New(slog.DiscardHandler),
		replicas:      1,
	}
}

// MaxReplicas is the largest replicas a SendRequest may ask for.
const MaxReplicas = 3

// WithDefaultReplicas sets the replicas of a SendRequest that leaves the
// field 0: how many nodes, in distinct groups, must each acknowledge a copy
// (backends.SendOptions.Replicas). n < 1 means 1 (the default), n above
// MaxReplicas means MaxReplicas. A default above the backend's number of
// groups makes every such Send UNAVAILABLE.
func WithDefaultReplicas(n int) Option {
	return func(o *options) { o.replicas = min(max(n, 1), MaxReplicas) }
}

// WithLimits sets the request limits; zero fields keep their defaults.
func WithLimits(l Limits) Option {
	return func(o *options) { o.limits = l.withDefaults() }
}

// WithSendStreamWindow sets how many requests of one SendStream are processed
// at once (default DefaultSendStreamWindow). While the window is full the
// server reads no more requests from that stream. n < 1 means 1.
func WithSendStreamWindow(n int) Option {
	return func(o *options) { o.window = max(n, 1) }
}

// WithSendStreamTimeout bounds the processing of each SendStream request; a
// request that takes longer gets DEADLINE_EXCEEDED. 0 means no bound beyond
// the stream's own deadline. Default DefaultSendStreamTimeout.
func WithSendStreamTimeout(d time.Duration) Option {
	return func(o *options) { o.streamTimeout = max(d, 0) }
}

// WithSendGrace sets how long a stream handler that is ending (its client
// half-closed, its context ended, an error, Shutdown) waits for responses
// still being sent, default DefaultSendGrace. A stream.Send blocks while the
// client does not read (HTTP/2 flow control), and only the end of the
// stream releases it, which gRPC does when the handler returns: past the
// grace the handler returns anyway, and a Subscribe's unsent deliveries
// are handed back for redelivery. d < 1 ms means 1 ms.
func WithSendGrace(d time.Duration) Option {
	return func(o *options) { o.sendGrace = max(d, time.Millisecond) }
}

// WithLogger sets the logger for errors that clients cannot act on (backend
// errors mapped to INTERNAL, stream failures). nil discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		o.logger = l
	}
}
