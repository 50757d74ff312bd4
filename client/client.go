package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Client is a connection to one or more qgate instances. It is safe for
// concurrent use; create Publishers and Subscribers from it, and Close it
// after they have stopped.
type Client struct {
	conn  *grpc.ClientConn // nil when the caller owns the connection
	queue qgatev1.QueueServiceClient
}

// Option configures New.
type Option func(*options)

// options are New's settings; defaultOptions is copied for each call.
type options struct {
	creds       credentials.TransportCredentials
	token       func(context.Context) (string, error)
	keepalive   keepalive.ClientParameters
	balancer    string
	backoff     backoff.Config
	dialOptions []grpc.DialOption
}

// Connection defaults. DefaultKeepaliveTime is grpc-go's server default
// enforcement minimum (5 min): a client that pings more often than the
// server's keepalive.EnforcementPolicy allows is disconnected with
// "too_many_pings", and qgate's server runs with grpc-go's defaults.
const (
	DefaultKeepaliveTime    = 5 * time.Minute
	DefaultKeepaliveTimeout = 20 * time.Second
	// DefaultReconnectBaseDelay and DefaultReconnectMaxDelay bound how
	// long the connection waits before dialling a gateway again after it
	// went away. grpc-go's default (1 s growing to 120 s) would keep a
	// Subscriber away from a restarted gateway for seconds to minutes.
	DefaultReconnectBaseDelay = 100 * time.Millisecond
	DefaultReconnectMaxDelay  = 5 * time.Second
)

func defaultOptions() options {
	return options{
		creds:     insecure.NewCredentials(),
		keepalive: keepalive.ClientParameters{Time: DefaultKeepaliveTime, Timeout: DefaultKeepaliveTimeout},
		balancer:  "round_robin",
		backoff: backoff.Config{BaseDelay: DefaultReconnectBaseDelay, Multiplier: 1.6, Jitter: 0.2,
			MaxDelay: DefaultReconnectMaxDelay},
	}
}

// WithTLS connects with TLS configured by conf (nil: the system's roots and
// the dialled host name). A conf with Certificates or GetClientCertificate
// presents a client certificate (mutual TLS). The default is plaintext.
func WithTLS(conf *tls.Config) Option {
	return func(o *options) {
		if conf == nil {
			conf = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.creds = credentials.NewTLS(conf)
	}
}

// WithTransportCredentials sets the gRPC transport credentials, for
// anything WithTLS does not cover.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithToken sends token as "authorization: Bearer <token>" on every call
// (qgate's --auth). It is sent over plaintext too, for a gateway on
// loopback; use TLS across a network.
func WithToken(token string) Option {
	token = strings.TrimSpace(token)
	return WithTokenFunc(func(context.Context) (string, error) { return token, nil })
}

// WithTokenFunc is WithToken with a token fetched for every call (and for
// every stream opened), so a rotated token is picked up without a new
// Client. An error from f fails the call with UNAUTHENTICATED.
func WithTokenFunc(f func(ctx context.Context) (string, error)) Option {
	return func(o *options) { o.token = f }
}

// WithKeepalive sets the connection's keepalive pings. The server's
// enforcement policy must allow them (see DefaultKeepaliveTime).
func WithKeepalive(p keepalive.ClientParameters) Option {
	return func(o *options) { o.keepalive = p }
}

// WithLoadBalancing sets the gRPC load-balancing policy over the addresses
// the target resolves to. Default "round_robin": calls and streams are
// spread over every qgate instance, and a stream that breaks is reopened on
// an instance that is up. "pick_first" uses one instance at a time.
func WithLoadBalancing(policy string) Option {
	return func(o *options) { o.balancer = policy }
}

// WithReconnectBackoff sets how the connection waits between attempts to
// reach a gateway that went away.
func WithReconnectBackoff(c backoff.Config) Option {
	return func(o *options) { o.backoff = c }
}

// WithDialOptions appends raw gRPC dial options, applied after the
// client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// New returns a Client for target, which is one of:
//   - "host:port", a single qgate (names are resolved once per connection
//     attempt);
//   - "dns:///name:port", every address the name resolves to, re-resolved
//     when connections fail (several instances behind one name);
//   - "host1:port,host2:port,...", a static list of instances.
//
// The connection is made lazily: New fails only on bad arguments, and an
// unreachable gateway shows as UNAVAILABLE on the first call (which
// Publishers and Subscribers retry). ctx is not retained.
func New(ctx context.Context, target string, opts ...Option) (*Client, error) {
	_ = ctx // reserved: connecting is lazy
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if target == "" {
		return nil, errors.New("client: empty target")
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(o.creds),
		grpc.WithKeepaliveParams(o.keepalive),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: o.backoff, MinConnectTimeout: 5 * time.Second}),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, o.balancer)),
	}
	if o.token != nil {
		dial = append(dial, grpc.WithPerRPCCredentials(tokenCreds(o.token)))
	}
	if strings.Contains(target, ",") {
		r := manual.NewBuilderWithScheme("qgate-static")
		var addrs []resolver.Address
		for _, a := range strings.Split(target, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, resolver.Address{Addr: a})
			}
		}
		r.InitialState(resolver.State{Addresses: addrs})
		dial = append(dial, grpc.WithResolvers(r))
		target = r.Scheme() + ":///static"
	}
	conn, err := grpc.NewClient(target, append(dial, o.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("client: connect to %s: %w", target, err)
	}
	return &Client{conn: conn, queue: qgatev1.NewQueueServiceClient(conn)}, nil
}

// NewFromConn returns a Client over a connection the caller made and
// closes (Close leaves it open). Useful for custom resolvers and in-process
// connections in tests.
func NewFromConn(conn grpc.ClientConnInterface) *Client {
	return &Client{queue: qgatev1.NewQueueServiceClient(conn)}
}

// Close closes the connection. Stop every Publisher and end every Receive
// first: their calls fail once it is closed.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// tokenCreds sends a bearer token from a function on every call.
type tokenCreds func(context.Context) (string, error)

func (f tokenCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := f(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(tok)}, nil
}

// RequireTransportSecurity is false: a gateway on loopback runs plaintext.
func (tokenCreds) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = tokenCreds(nil)
