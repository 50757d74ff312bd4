// Package limits bounds what one caller can take from a qgate server.
//
//   - Concurrent streams: ServerOptions sets grpc.MaxConcurrentStreams, a
//     per-connection HTTP/2 limit; a client over it waits for a free slot
//     (gRPC queues the stream), it gets no error.
//   - Subscriptions per token: at most MaxSubscriptionsPerToken open
//     Subscribe streams per token; one more ends at once with
//     RESOURCE_EXHAUSTED.
//   - Rate per token: a token bucket of Rate requests per second (Burst
//     deep) per token. A request is a unary call (go-grpc-middleware's
//     ratelimit interceptor), a stream's start, and each SendStream request.
//     A unary call or stream start over the rate fails with
//     RESOURCE_EXHAUSTED; a SendStream request over it is answered on the
//     stream with RESOURCE_EXHAUSTED and the stream goes on. Acks, nacks and
//     extends are never limited (holding them back would only cause
//     redeliveries).
//   - Receive size: MaxRecvMsgSize gives the gRPC receive limit that lets
//     every batch within the service's batch byte limit through.
//
// The token is the caller's auth.Principal name (package auth's
// interceptors must run first); callers without one share the key "". Use
// WithKey to limit by something else. Calls that need no token (health,
// reflection; see auth.Protected) are not limited.
package limits

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/auth"
)

// Config sets the limits. Zero values mean no limit.
type Config struct {
	// MaxConcurrentStreams bounds the concurrent streams (and unary calls)
	// of one client connection (grpc.MaxConcurrentStreams).
	MaxConcurrentStreams uint32
	// MaxSubscriptionsPerToken bounds the open Subscribe streams of one
	// token.
	MaxSubscriptionsPerToken int
	// Rate is the sustained requests per second of one token.
	Rate float64
	// Burst is how many requests a token may make at once; default
	// max(1, ceil(Rate)).
	Burst int
}

// requestSlack is the room a request needs beyond its batch: the topic,
// the delay and the protobuf framing of each message and attribute.
// Matches service.Limits.MaxRequestBytes.
const requestSlack = 64 << 10

// MaxRecvMsgSize is the gRPC receive limit (grpc.MaxRecvMsgSize) that lets
// every Send within a batch limit of maxBatchBytes through (nsqd's
// --max-body-size, service.Limits.MaxBatchBytes); a larger request fails
// with RESOURCE_EXHAUSTED before it is decoded.
func MaxRecvMsgSize(maxBatchBytes int) int { return maxBatchBytes + requestSlack }

// Option configures a Limiter.
type Option func(*Limiter)

// WithKey sets how a call's token is named; default: the auth.Principal's
// name, "" without one. The Limiter keeps a bucket and a count per key, so
// the keys must be a bounded set.
func WithKey(key func(ctx context.Context) string) Option {
	return func(l *Limiter) { l.key = key }
}

func principalName(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok {
		return p.Name()
	}
	return ""
}

// Limiter enforces a Config. Safe for concurrent use.
type Limiter struct {
	cfg Config
	key func(ctx context.Context) string

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	subs    map[string]int // open Subscribe streams per key
}

// New returns a Limiter enforcing cfg.
func New(cfg Config, opts ...Option) *Limiter {
	if cfg.Rate > 0 && cfg.Burst <= 0 {
		cfg.Burst = max(1, int(math.Ceil(cfg.Rate)))
	}
	l := &Limiter{cfg: cfg, key: principalName, buckets: make(map[string]*rate.Limiter), subs: make(map[string]int)}
	for _, o := range opts {
		o(l)
	}
	return l
}

// ServerOptions are the limits that are gRPC server options.
func (l *Limiter) ServerOptions() []grpc.ServerOption {
	if l.cfg.MaxConcurrentStreams == 0 {
		return nil
	}
	return []grpc.ServerOption{grpc.MaxConcurrentStreams(l.cfg.MaxConcurrentStreams)}
}

// Limit takes one request from the caller's bucket. It implements
// go-grpc-middleware's ratelimit.Limiter.
func (l *Limiter) Limit(ctx context.Context) error {
	if l.cfg.Rate <= 0 {
		return nil
	}
	key := l.key(ctx)
	l.mu.Lock()
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst)
		l.buckets[key] = b
	}
	l.mu.Unlock()
	if !b.Allow() {
		return fmt.Errorf("limits: token %q is over its rate of %g requests/s", key, l.cfg.Rate)
	}
	return nil
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// UnaryServerInterceptor rate-limits unary calls but the public ones
// (see auth.Protected).
// Put it after auth's interceptor.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(l), auth.Protected)
}

// StreamServerInterceptor rate-limits stream starts and SendStream
// requests and bounds Subscribe streams per token, for every stream but
// the public ones (see auth.Protected). Put it after auth's interceptor.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(l.stream, auth.Protected)
}

func (l *Limiter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	if err := l.Limit(ctx); err != nil {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	if info.FullMethod == qgatev1.QueueService_Subscribe_FullMethodName {
		release, err := l.acquireSubscription(l.key(ctx))
		if err != nil {
			return err
		}
		defer release()
	}
	if info.FullMethod == qgatev1.QueueService_SendStream_FullMethodName && l.cfg.Rate > 0 {
		ss = &limitedStream{ServerStream: ss, l: l}
	}
	return handler(srv, ss)
}

// acquireSubscription counts one more open subscription of key, or fails
// with RESOURCE_EXHAUSTED. release counts it out.
func (l *Limiter) acquireSubscription(key string) (release func(), err error) {
	most := l.cfg.MaxSubscriptionsPerToken
	if most <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs[key] >= most {
		return nil, status.Errorf(codes.ResourceExhausted, "limits: token %q has %d open subscriptions, the most it may have", key, most)
	}
	l.subs[key]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.subs[key]--; l.subs[key] == 0 {
			delete(l.subs, key)
		}
	}, nil
}

// limitedStream rate-limits the requests of a SendStream as the handler
// reads them. A request over the rate is answered here and not passed on.
type limitedStream struct {
	grpc.ServerStream
	l      *Limiter
	sendMu sync.Mutex // serializes SendMsg: the handler's and ours
}

func (s *limitedStream) SendMsg(m any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.ServerStream.SendMsg(m)
}

func (s *limitedStream) RecvMsg(m any) error {
	for {
		if err := s.ServerStream.RecvMsg(m); err != nil {
			return err
		}
		req, ok := m.(*qgatev1.SendStreamRequest)
		if !ok {
			return nil
		}
		err := s.l.Limit(s.Context())
		if err == nil {
			return nil
		}
		st := status.New(codes.ResourceExhausted, err.Error()).Proto()
		if err := s.SendMsg(&qgatev1.SendStreamResponse{RequestId: req.GetRequestId(), Status: st}); err != nil {
			return err
		}
	}
}
