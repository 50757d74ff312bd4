package auth

import (
	"context"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Scheme is the authorization scheme clients use: "authorization: Bearer <secret>".
const Scheme = "bearer"

type principalKey struct{}

// FromContext returns the caller authenticated by an Authenticator's
// interceptor, if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// NewContext returns ctx carrying p, for tests of code that calls
// FromContext.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// Protected is a selector.Matcher that matches the calls that need a token:
// every call but grpc.health.v1 and server reflection (both versions). The
// interceptors apply only to those; use it to skip other interceptors
// (limits) for the same calls.
var Protected = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return !IsPublic(c.Service)
})

// IsPublic reports whether the calls of service (full name, e.g.
// "grpc.health.v1.Health") need no token.
func IsPublic(service string) bool {
	return service == "grpc.health.v1.Health" || strings.HasPrefix(service, "grpc.reflection.")
}

// Authenticator holds the interceptors of a Store. Create it with New.
type Authenticator struct {
	store *Store
}

// New returns an Authenticator checking callers against store.
func New(store *Store) *Authenticator { return &Authenticator{store: store} }

// Store is the token set the Authenticator checks against.
func (a *Authenticator) Store() *Store { return a.store }

// AuthFunc is the go-grpc-middleware auth function: it reads the bearer
// token and puts the Principal in the context (FromContext), or fails with
// UNAUTHENTICATED.
func (a *Authenticator) AuthFunc(ctx context.Context) (context.Context, error) {
	p, _, err := a.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return NewContext(ctx, p), nil
}

// authenticate returns the caller's principal and the store snapshot it was
// found in.
func (a *Authenticator) authenticate(ctx context.Context) (*Principal, *snapshot, error) {
	secret, err := grpcauth.AuthFromMD(ctx, Scheme)
	if err != nil {
		return nil, nil, grpcstatus.Error(codes.Unauthenticated, "auth: missing bearer token")
	}
	p, snap := a.store.lookup(secret)
	if p == nil {
		return nil, nil, grpcstatus.Error(codes.Unauthenticated, "auth: unknown token")
	}
	return p, snap, nil
}

// UnaryServerInterceptor authenticates every unary call but the public
// ones (go-grpc-middleware's auth interceptor with AuthFunc, behind a
// selector with Protected) and checks the request's topic against the
// token's ACL.
func (a *Authenticator) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	authn := grpcauth.UnaryServerInterceptor(a.AuthFunc)
	return selector.UnaryServerInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return authn(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return a.authorizeUnary(ctx, req, info, handler)
		})
	}, Protected)
}

// StreamServerInterceptor authenticates every stream but the public ones
// (as UnaryServerInterceptor), checks each request's topic against the
// token's ACL as it is read, and ends the stream when the token is revoked
// (see the package doc).
func (a *Authenticator) StreamServerInterceptor() grpc.StreamServerInterceptor {
	authn := grpcauth.StreamServerInterceptor(a.AuthFunc)
	return selector.StreamServerInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return authn(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
			return a.authorizeStream(srv, ss, info, handler)
		})
	}, Protected)
}

// authorizeUnary runs after AuthFunc: the principal is in ctx.
func (a *Authenticator) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, ok := FromContext(ctx)
	if !ok {
		return nil, grpcstatus.Error(codes.Unauthenticated, "auth: not authenticated")
	}
	if err := checkMethod(p, info.FullMethod); err != nil {
		return nil, err
	}
	if r, ok := req.(*qgatev1.SendRequest); ok {
		if err := checkSend(p, r.GetTopic()); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

// checkMethod checks grants that depend on the method alone.
func checkMethod(p *Principal, fullMethod string) error {
	if strings.HasPrefix(fullMethod, "/"+qgatev1.AdminService_ServiceDesc.ServiceName+"/") && !p.CanAdmin() {
		return grpcstatus.Errorf(codes.PermissionDenied, "auth: token %q may not use the admin service", p.Name())
	}
	return nil
}

func checkSend(p *Principal, topic string) error {
	if !p.CanSend(topic) {
		return grpcstatus.Errorf(codes.PermissionDenied, "auth: token %q may not send to topic %q", p.Name(), topic)
	}
	return nil
}

func checkSubscribe(p *Principal, o *qgatev1.SubscribeRequest_Open) error {
	if !p.CanSubscribe(o.GetTopic()) {
		return grpcstatus.Errorf(codes.PermissionDenied, "auth: token %q may not subscribe to topic %q", p.Name(), o.GetTopic())
	}
	dl := o.GetDeadLetterTopic()
	if dl != "" && dl != deadLetterDefault(o.GetTopic()) && !p.CanSend(dl) {
		return grpcstatus.Errorf(codes.PermissionDenied, "auth: token %q may not send to dead-letter topic %q", p.Name(), dl)
	}
	return nil
}

// deadLetterDefault mirrors the service's default dead-letter topic,
// which a subscribe grant includes.
func deadLetterDefault(topic string) string {
	return strings.TrimSuffix(topic, "#ephemeral") + ".dead"
}

// authorizeStream runs after AuthFunc. It looks the token up once more to
// learn the store snapshot to watch: a Replace since AuthFunc is then not
// missed.
func (a *Authenticator) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, snap, err := a.authenticate(ss.Context())
	if err != nil {
		return err
	}
	if err := checkMethod(p, info.FullMethod); err != nil {
		return err
	}
	secret, _ := grpcauth.AuthFromMD(ss.Context(), Scheme)
	ctx, cancel := context.WithCancel(NewContext(ss.Context(), p))
	s := &authStream{ServerStream: ss, ctx: ctx, p: p, method: info.FullMethod}

	// The watcher ends the stream when the token is revoked or loses the
	// grant the stream relies on. It is stopped and waited for before the
	// interceptor returns.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.watch(ctx, cancel, s, secret, snap)
	}()
	err = handler(srv, s)
	cancel()
	wg.Wait()
	if denied := s.denial(); denied != nil {
		return denied
	}
	return err
}

// watch waits for store changes until ctx is done; after each it looks the
// stream's secret up again and, if the stream may not go on, records why
// and cancels the stream's context.
func (a *Authenticator) watch(ctx context.Context, cancel context.CancelFunc, s *authStream, secret string, snap *snapshot) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-snap.changed:
		}
		var p *Principal
		p, snap = a.store.lookup(secret)
		if err := s.recheck(p); err != nil {
			s.deny(err)
			cancel()
			return
		}
	}
}

// authStream checks the requests of one stream as the handler reads them.
type authStream struct {
	grpc.ServerStream
	ctx    context.Context
	method string

	sendMu sync.Mutex // serializes SendMsg: the handler's and the interceptor's

	mu     sync.Mutex
	p      *Principal
	open   *qgatev1.SubscribeRequest_Open // the subscription, once opened
	denied error                          // why the stream was ended, if it was
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) SendMsg(m any) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.ServerStream.SendMsg(m)
}

// RecvMsg checks each request. A denied SendStreamRequest is answered here
// with PERMISSION_DENIED and the next request is read; a denied Subscribe
// open ends the stream.
func (s *authStream) RecvMsg(m any) error {
	for {
		if err := s.ServerStream.RecvMsg(m); err != nil {
			return err
		}
		s.mu.Lock()
		p := s.p
		s.mu.Unlock()
		switch r := m.(type) {
		case *qgatev1.SendStreamRequest:
			err := checkSend(p, r.GetSend().GetTopic())
			if err == nil {
				return nil
			}
			st := grpcstatus.Convert(err).Proto()
			if err := s.SendMsg(&qgatev1.SendStreamResponse{RequestId: r.GetRequestId(), Status: st}); err != nil {
				return err
			}
		case *qgatev1.SubscribeRequest:
			o := r.GetOpen()
			if o == nil {
				return nil
			}
			if err := checkSubscribe(p, o); err != nil {
				s.deny(err)
				return err
			}
			s.mu.Lock()
			if s.open == nil {
				s.open = o
			}
			s.mu.Unlock()
			return nil
		default:
			return nil
		}
	}
}

// recheck updates the stream's principal to p (nil: the token is gone) and
// returns why the stream must end, if it must.
func (s *authStream) recheck(p *Principal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p == nil || p.name != s.p.name {
		return grpcstatus.Errorf(codes.Unauthenticated, "auth: token %q was revoked", s.p.name)
	}
	s.p = p
	if err := checkMethod(p, s.method); err != nil {
		return err
	}
	if s.open != nil {
		return checkSubscribe(p, s.open)
	}
	return nil
}

func (s *authStream) deny(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.denied == nil {
		s.denied = err
	}
}

func (s *authStream) denial() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denied
}
