package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of the package. Errors from qgate carry their gRPC status:
// status.Code(err) works on every error a Publisher or Subscriber returns.
var (
	// ErrStopped is the result of a Publish after Stop.
	ErrStopped = errors.New("client: publisher stopped")
	// ErrFlowControl is the result of a Publish that would exceed
	// PublishSettings.MaxOutstandingMessages or MaxOutstandingBytes when
	// FlowControl is FlowFail.
	ErrFlowControl = errors.New("client: too many outstanding messages")
	// ErrEmptyBody is the result of a Publish of a message without a body
	// (qgate requires at least one byte).
	ErrEmptyBody = errors.New("client: empty message body")
	// ErrBadID is the result of a Publish of a message whose ID is longer
	// than 64 bytes or has a byte outside [A-Za-z0-9._:-] (qgate would
	// refuse it, and the whole request it travels in with it).
	ErrBadID = errors.New("client: bad message id")
	// ErrReceiving is returned by a second concurrent Receive on one
	// Subscriber.
	ErrReceiving = errors.New("client: Receive already running")
)

// permanent reports whether a stream or call that failed with err cannot
// succeed by trying again: bad credentials, a forbidden topic, a bad
// request or an operation the server does not have.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument,
		codes.FailedPrecondition, codes.Unimplemented, codes.NotFound, codes.OutOfRange:
		return true
	}
	return false
}

// retryableResult reports whether a request the server answered with err
// may be sent again: UNAVAILABLE (no node took it) and DEADLINE_EXCEEDED
// (outcome unknown: a retry may write the messages again, under the same
// ids, which qgate delivers once). RESOURCE_EXHAUSTED (a rate or
// size limit) is returned to the caller, who knows whether waiting helps.
func retryableResult(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// retryableStream reports whether the requests in flight on a stream that
// ended with err may be sent again on a new one: any end but a permanent
// error or a limit.
func retryableStream(err error) bool {
	return !permanent(err) && status.Code(err) != codes.ResourceExhausted
}

// Backoff is an exponential backoff with jitter: retry n (from 0) waits a
// random time between half and all of min(Max, Initial·2ⁿ), so clients
// that lost the same gateway do not come back in step.
type Backoff struct {
	Initial, Max time.Duration
}

// delay returns the wait before retry number attempt (0 for the first).
func (b Backoff) delay(attempt int) time.Duration {
	d := b.Max
	if attempt < 30 {
		d = min(b.Max, b.Initial<<attempt)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
