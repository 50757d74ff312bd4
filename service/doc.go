// Package service implements qgate's gRPC services on top of a
// backends.Backend: QueueService (Queue), AdminService (Admin) and the
// grpc.health.v1 status (Health).
//
// The service layer is the only place that knows gRPC: it validates every
// request before anything reaches a backend, assigns message ids (to the
// messages without a client-chosen Message.id, which is kept and marked
// backends.Message.ClientID so that the backend deduplicates its sends) and
// publish times, and maps backend errors to status codes in one place
// (toStatus).
//
// # Validation
//
// nsqd closes the TCP connection of a client that sends a bad topic name or
// an empty or oversized body, which a pool would take for a node failure. So
// nothing invalid is passed on: topic and channel names must match
// ^[.a-zA-Z0-9_-]+(#ephemeral)?$ and be 1 to 64 bytes long (checked by hand,
// without regexp); bodies must be 1 byte to Limits.MaxBodyBytes long counted
// as the backend stores them (backends.Sizer: for NSQ, with qgate's
// envelope); a batch may hold at most Limits.MaxBatchMessages messages and
// Limits.MaxBatchBytes bytes as the backend writes them (for NSQ, the body
// of the MPUB command: 4 bytes, plus 4 bytes and the enveloped body per
// message); a client-chosen message id must be 1 to 64 bytes of
// [A-Za-z0-9._:-] and distinct within the request. A bad request fails
// with INVALID_ARGUMENT and an errdetails.BadRequest detail with one field
// violation per bad field, named by its path ("topic", "messages[3].body",
// "messages[1].id", "messages[0].attributes[\"k\"]", "open.channel",
// "nack.delay"); at most 100 violations are listed.
//
// Strings in a request must be valid UTF-8: the gRPC runtime itself rejects
// a request with an invalid UTF-8 string field with INTERNAL ("failed to
// unmarshal") before the service sees it. The service checks again, for
// callers that do not go through the protobuf codec.
//
// # Subscribe
//
// Ack ids are a per-stream counter in decimal ("1", "2", ...). An ack, nack
// or extend naming an id that is unknown, already acked or nacked, or whose
// deadline passed gets an ack_error with NOT_FOUND for that id; the others
// of the same message are still settled. A settlement message that is bad as
// a whole gets ack_error with INVALID_ARGUMENT and field violations: with no
// or more than 2500 ids (ack_id "" in the ack_error), a message with no kind
// set (ack_id ""), or a nack delay outside 0..Limits.MaxDelay (one ack_error
// per id; those deliveries stay unsettled). A second open, like a first
// message that is not open, ends the stream with FAILED_PRECONDITION.
//
// The dead-letter topic defaults to "<topic>.dead" (#ephemeral dropped).
// When that default is not a valid name (a topic of more than 59 bytes) it
// is an error only if max_attempts > 0; otherwise opened reports "".
//
// # SendStream
//
// Each request is processed with a timeout (WithSendStreamTimeout, default
// 30 s), since the stream has no per-request deadline; a request over it is
// answered with DEADLINE_EXCEEDED and the stream goes on.
//
// # Errors
//
//	INVALID_ARGUMENT     a bad request field (BadRequest details)
//	FAILED_PRECONDITION  a Subscribe stream that does not start with open, or opens twice
//	NOT_FOUND            an unknown node name (Admin); an unknown, settled or
//	                     expired ack id (Subscribe ack_error; the stream goes on)
//	UNAVAILABLE          backends.ErrUnavailable (no node can take the write),
//	                     backends.ErrClosed, and every stream ended by Shutdown
//	DEADLINE_EXCEEDED    the call's deadline passed (context.DeadlineExceeded)
//	CANCELLED            the call was cancelled (context.Canceled)
//	INTERNAL             any other backend error (a bug; logged)
//	RESOURCE_EXHAUSTED   a request larger than the gRPC server's receive limit
//	                     (set by the server with Limits.MaxRequestBytes)
//
// # Shutdown
//
// Queue.Shutdown ends every open SendStream and Subscribe stream with
// UNAVAILABLE (a SendStream first answers the requests it is processing; a
// Subscribe first hands its unacked deliveries back) and refuses new streams.
// Call it after setting the health status to NOT_SERVING and before
// grpc.Server.GracefulStop, which would otherwise wait for streams that never
// end by themselves. Queue.BeginShutdown does the same without waiting, for
// hooks that must return at once.
//
// # Goroutines
//
// A SendStream handler runs at most Options' window of send goroutines, a
// Subscribe handler one delivery goroutine; both wait for them before they
// return. Each stream also has one reader goroutine blocked in Recv, which
// gRPC unblocks when the handler returns; Queue.Shutdown waits for those too.
// Health owns one goroutine, stopped by Health.Stop.
package service
