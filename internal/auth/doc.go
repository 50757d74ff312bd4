// Package auth authenticates qgate's gRPC callers with bearer tokens and
// authorizes them per topic.
//
// # Tokens
//
// A Token has a name (for logs, metrics and limits), a secret, and two lists
// of topic patterns: Send (QueueService.Send and SendStream) and Subscribe
// (QueueService.Subscribe). Admin grants AdminService. A client sends its
// secret in the "authorization" metadata as "Bearer <secret>". The token set
// lives in a Store, which can be replaced at run time (a config reload):
// Store.Replace takes effect for new calls at once and ends open streams
// whose token is gone or no longer grants their topic (see Revocation).
//
// EnvToken (QGATE_TOKEN) names an environment variable holding one secret
// that grants everything (send and subscribe "*", admin): a quick way to
// protect a single-tenant gateway without a config file. FromEnv builds it.
//
// Secrets are compared in constant time, over SHA-256 digests so that the
// comparison does not depend on their lengths either, and every token is
// compared on every lookup.
//
// # Patterns
//
// A pattern is an anchored glob over the whole topic name (path.Match
// syntax): "orders" grants the topic "orders" and nothing else (never
// "orders_secret"); "orders.*" grants "orders.eu" and "orders.eu.west"; "*"
// grants every topic; "?" is one character; "[a-c]" a class. Topic names
// have no '/', so '*' spans the whole name. Bad patterns are rejected when
// the Store is built.
//
// # Where the checks happen
//
// Authenticator's interceptors do all of it, so the service needs no change:
//
//   - the bearer token, through go-grpc-middleware's auth interceptor behind
//     a selector that skips grpc.health.v1 and server reflection (Protected):
//     a missing or unknown token is UNAUTHENTICATED;
//   - the topic ACL, by request type: a SendRequest (unary Send) must be
//     granted by Send, else PERMISSION_DENIED; each SendStreamRequest is
//     checked as it is read, and a denied one is answered on the stream with
//     a SendStreamResponse whose status is PERMISSION_DENIED (the stream goes
//     on); a Subscribe open must be granted by Subscribe, else the stream
//     ends with PERMISSION_DENIED. A subscription that names its own
//     dead_letter_topic (other than the default "<topic>.dead") writes to it,
//     so that topic must be granted by Send as well.
//   - AdminService calls need Token.Admin, else PERMISSION_DENIED.
//
// Handlers that need the caller can call FromContext(ctx) and ask the
// Principal (CanSend, CanSubscribe).
//
// # Revocation
//
// A Subscribe or SendStream stream is authorized when it starts, but may
// live for days. Every stream started under a token watches the Store: when
// the Store is replaced and the stream's token is gone (or renamed, or its
// secret changed) the stream ends with UNAUTHENTICATED; when the token no
// longer grants the stream's subscribed topic it ends with
// PERMISSION_DENIED. A subscription's unacked messages go back to the queue
// as with any ended stream. The check runs on every Replace, without
// polling: a stream waits on the Store's change signal.
package auth
