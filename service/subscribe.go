package service

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

type subscribeServer = grpc.BidiStreamingServer[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse]

// Subscribe implements QueueService.Subscribe.
//
// Three goroutines serve a stream: the handler, which waits for the open,
// opens the backend subscription and then settles acks, nacks and extends as
// they arrive; a delivery goroutine, which receives from the subscription
// and sends deliveries; and a reader (see recvLoop). Whatever ends the stream,
// the handler stops the delivery goroutine and closes the subscription,
// which hands every unacked delivery back at once. It waits for a delivery
// being sent at most the send grace: a client that stopped reading blocks
// that Send until the stream ends, which happens once the handler returns.
func (q *Queue) Subscribe(stream subscribeServer) error {
	if !q.enter() {
		return errShutdown
	}
	defer q.streams.Done()

	ctx := stream.Context()
	stop := make(chan struct{})
	defer close(stop)
	reqs := make(chan *qgatev1.SubscribeRequest)
	readErr := make(chan error, 1)
	recvLoop(q, stream.Recv, reqs, readErr, stop)

	var first *qgatev1.SubscribeRequest
	select {
	case first = <-reqs:
	case err := <-readErr:
		if errors.Is(err, io.EOF) {
			return nil // closed before opening: nothing to do
		}
		return err
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-q.done:
		return errShutdown
	}
	open := first.GetOpen()
	if open == nil {
		return status.Error(codes.FailedPrecondition, "subscribe: the first message must be open")
	}
	opts, batch, err := checkOpen(&q.opts.limits, open)
	if err != nil {
		return err
	}
	sub, err := q.backend.Subscribe(ctx, opts)
	if err != nil {
		return toStatus(q.opts.logger, "subscribe", err)
	}
	s := &subStream{
		q:       q,
		stream:  stream,
		sub:     sub,
		batch:   batch,
		retry:   opts.Retry,
		acks:    newAckTable(opts.MaxInFlight, opts.AckDeadline),
		readErr: readErr,
	}
	defer s.close()

	err = s.send(&qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_Opened_{
		Opened: &qgatev1.SubscribeResponse_Opened{
			MaxInFlight:     uint32(opts.MaxInFlight),
			AckDeadline:     durationpb.New(opts.AckDeadline),
			MaxAttempts:     uint32(opts.MaxAttempts),
			DeadLetterTopic: opts.DeadLetterTopic,
			MaxBatch:        uint32(batch.max),
			MaxBatchBytes:   uint32(batch.bytes),
			RetryPolicy:     retryProto(opts.Retry),
		},
	}})
	if err != nil {
		return err
	}
	s.startDeliveries(ctx)

	for {
		select {
		case req := <-reqs:
			if err := s.handle(ctx, req); err != nil {
				if errors.Is(err, io.EOF) {
					return nil // half-closed while an ack_error was being sent
				}
				return err
			}
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case err := <-s.failed:
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-q.done:
			return errShutdown
		}
	}
}

// subStream is one open Subscribe stream.
type subStream struct {
	q      *Queue
	stream subscribeServer
	sub    backends.Subscription
	batch  batching
	retry  *backends.RetryPolicy // the open's retry policy; nil: none
	acks   *ackTable
	// readErr is the reader's end (io.EOF: half-close); see handlerSend.
	readErr <-chan error

	mu sync.Mutex // serializes stream.Send

	cancel    context.CancelFunc
	delivered sync.WaitGroup
	failed    chan error
}

// send sends one response.
func (s *subStream) send(resp *qgatev1.SubscribeResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(resp)
}

// startDeliveries starts the delivery goroutine.
func (s *subStream) startDeliveries(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.failed = make(chan error, 1)
	s.delivered.Add(1)
	s.q.goStream(func() {
		defer s.delivered.Done()
		if err := s.deliver(ctx); err != nil && ctx.Err() == nil {
			s.failed <- err
		}
	})
}

// deliver receives deliveries and sends them until the subscription or the
// stream fails or ctx is done.
func (s *subStream) deliver(ctx context.Context) error {
	if s.batch.max > 1 {
		return s.deliverBatches(ctx)
	}
	for {
		d, err := s.sub.Receive(ctx)
		if err != nil {
			return toStatus(s.q.opts.logger, "subscribe", err)
		}
		resp := &qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_Delivery{
			Delivery: deliveryProto(d, s.acks.add(d)),
		}}
		if err := s.send(resp); err != nil {
			return err // the table still holds d; close hands it back
		}
	}
}

// deliverBatches is deliver for max_batch above 1: after one blocking
// Receive it takes the deliveries that are ready at once, up to
// s.batch.max and s.batch.bytes, and sends them in one `deliveries`
// response. It never waits to fill a batch: a lone message goes out as soon
// as it arrives, and under a backlog the per-response cost of gRPC (a frame,
// a flush, a write) is shared.
//
// The byte budget keeps a response under what the client accepts (gRPC's
// default receive limit is 4 MiB: 20 deliveries of 1 MB in one response
// killed the stream, the messages came back, and the same client failed
// again forever). A delivery that would take a response over the budget
// is kept, already taken from the subscription and in the ack table, and
// starts the next response; one larger than the budget goes alone.
//
// "Ready at once" is Receive with a context that is already done: a
// Subscription returns a delivery it has ready before it looks at ctx (see
// backends/nsq's Receive), and ctx.Err() otherwise. A backend that looks at
// ctx first only makes batches of one. This goes through wrappers of the
// Subscription (internal/metrics counts each delivery), which an optional
// non-blocking method would not.
func (s *subStream) deliverBatches(ctx context.Context) error {
	ready, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cancel()
	var next *qgatev1.Delivery // taken, did not fit the last response
	for {
		if next == nil {
			d, err := s.sub.Receive(ctx)
			if err != nil {
				return toStatus(s.q.opts.logger, "subscribe", err)
			}
			next = deliveryProto(d, s.acks.add(d))
		}
		ds := make([]*qgatev1.Delivery, 1, min(s.batch.max, 16)) // a trickle sends ones
		ds[0], next = next, nil
		size := batchedSize(ds[0])
		for len(ds) < s.batch.max {
			d, err := s.sub.Receive(ready)
			if err != nil {
				break // nothing ready, or a failure the next blocking Receive reports
			}
			pd := deliveryProto(d, s.acks.add(d))
			n := batchedSize(pd)
			if size+n > s.batch.bytes {
				next = pd
				break
			}
			ds = append(ds, pd)
			size += n
		}
		resp := &qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_Deliveries_{
			Deliveries: &qgatev1.SubscribeResponse_Deliveries{Deliveries: ds},
		}}
		if err := s.send(resp); err != nil {
			return err // the table still holds ds; close hands them back
		}
	}
}

// batchedSize is the encoded size of d as an element of Deliveries: the
// message, its length and its field tag.
func batchedSize(d *qgatev1.Delivery) int {
	n := proto.Size(d)
	return protowire.SizeTag(1) + protowire.SizeBytes(n)
}

// close stops the delivery goroutine and closes the subscription, handing
// unacked deliveries back (a delivery still being sent included). It waits
// for the delivery goroutine at most the send grace (see waitSends).
func (s *subStream) close() {
	if s.cancel != nil {
		s.cancel()
	}
	if err := s.sub.Close(); err != nil {
		s.q.opts.logger.Warn("closing a subscription", "err", err)
	}
	s.q.waitSends(&s.delivered)
}

// retryProto is the effective retry policy p as Opened reports it.
func retryProto(p *backends.RetryPolicy) *qgatev1.RetryPolicy {
	if p == nil {
		return nil
	}
	return &qgatev1.RetryPolicy{MinimumBackoff: durationpb.New(p.Min), MaximumBackoff: durationpb.New(p.Max)}
}

// deliveryProto is d as sent, with its ack id.
func deliveryProto(d *backends.Delivery, ackID string) *qgatev1.Delivery {
	out := &qgatev1.Delivery{
		MessageId:  d.ID,
		AckId:      ackID,
		Body:       d.Body,
		Attributes: d.Attributes,
		Attempt:    uint32(min(max(d.Attempt, 0), math.MaxUint32)),
	}
	if !d.PublishTime.IsZero() {
		out.PublishTime = timestamppb.New(d.PublishTime)
	}
	if !d.ExpireAt.IsZero() {
		out.ExpireTime = timestamppb.New(d.ExpireAt)
	}
	return out
}

// handle processes one client message after the open. An error ends the
// stream.
func (s *subStream) handle(ctx context.Context, req *qgatev1.SubscribeRequest) error {
	switch k := req.GetKind().(type) {
	case *qgatev1.SubscribeRequest_Open_:
		return status.Error(codes.FailedPrecondition, "subscribe: the subscription is already open; open may be sent only once")
	case *qgatev1.SubscribeRequest_Ack_:
		return s.settle(ctx, "ack", k.Ack.GetAckIds(), nil, true, func(d *backends.Delivery) error { return d.Acker.Ack() })
	case *qgatev1.SubscribeRequest_Nack_:
		var v violations
		delay := v.checkDuration("nack.delay", k.Nack.GetDelay(), 0, 0, s.q.opts.limits.MaxDelay)
		policy := k.Nack.GetDelay() == nil && s.retry != nil
		return s.settle(ctx, "nack", k.Nack.GetAckIds(), &v, true, func(d *backends.Delivery) error {
			if policy {
				return d.Acker.Nack(s.retry.Backoff(d.Attempt, rand.Float64()))
			}
			return d.Acker.Nack(delay)
		})
	case *qgatev1.SubscribeRequest_Extend_:
		return s.settle(ctx, "extend", k.Extend.GetAckIds(), nil, false, func(d *backends.Delivery) error { return d.Acker.Extend() })
	default:
		var v violations
		v.add("kind", "one of ack, nack or extend is required")
		return s.ackError(ctx, "", v.err("subscribe request"))
	}
}

// settle applies op to the deliveries named by ids. Problems are reported as
// ack_error responses; only a failure to send one ends the stream. v holds
// violations of the message's other fields: if there are any, no id is
// settled and each gets INVALID_ARGUMENT. take removes the entries (ack,
// nack); otherwise their deadline is restarted (extend).
func (s *subStream) settle(ctx context.Context, kind string, ids []string, v *violations, take bool, op func(*backends.Delivery) error) error {
	if v == nil {
		v = &violations{}
	}
	switch {
	case len(ids) == 0:
		v.add(kind+".ack_ids", "at least one ack id is required")
	case len(ids) > maxAckIDs:
		v.addf(kind+".ack_ids", "has %d ack ids; at most %d are allowed", len(ids), maxAckIDs)
	}
	if !v.empty() {
		err := v.err(kind)
		if len(ids) == 0 || len(ids) > maxAckIDs {
			return s.ackError(ctx, "", err)
		}
		for _, id := range ids {
			if err := s.ackError(ctx, id, err); err != nil {
				return err
			}
		}
		return nil
	}
	for _, id := range ids {
		var d *backends.Delivery
		var ok bool
		if take {
			d, ok = s.acks.take(id)
		} else {
			d, ok = s.acks.touch(id)
		}
		if !ok {
			if err := s.ackError(ctx, id, errUnknownAckID(kind, id)); err != nil {
				return err
			}
			continue
		}
		if err := op(d); err != nil {
			if errors.Is(err, backends.ErrUnknownDelivery) {
				s.acks.forget(id) // extend of a delivery the backend gave up
				err = errUnknownAckID(kind, id)
			} else {
				err = toStatus(s.q.opts.logger, kind, err)
			}
			if err := s.ackError(ctx, id, err); err != nil {
				return err
			}
		}
	}
	return nil
}

func errUnknownAckID(kind, id string) error {
	return status.Errorf(codes.NotFound,
		"%s: ack id %q is unknown on this stream, already acked or nacked, or past its deadline", kind, id)
}

// ackError sends an ack_error response.
func (s *subStream) ackError(ctx context.Context, id string, err error) error {
	return s.handlerSend(ctx, &qgatev1.SubscribeResponse{Kind: &qgatev1.SubscribeResponse_AckError_{
		AckError: &qgatev1.SubscribeResponse_AckError{AckId: id, Status: status.Convert(err).Proto()},
	}})
}

// handlerSend is send for the handler's own responses. A client that stops
// reading blocks stream.Send (and the delivery goroutine, blocked, holds
// s.mu), so the send runs in a goroutine of its own while the handler
// keeps watching for the end of the stream: on the reader's end
// (half-close: io.EOF, returned as is) it waits for the send at most the
// send grace, on cancellation or Shutdown not at all. A send still blocked
// ends when gRPC ends the stream, after the handler returns.
func (s *subStream) handlerSend(ctx context.Context, resp *qgatev1.SubscribeResponse) error {
	sent := make(chan error, 1)
	s.q.goStream(func() { sent <- s.send(resp) })
	select {
	case err := <-sent:
		return err
	case err := <-s.readErr:
		t := time.NewTimer(s.q.opts.sendGrace)
		defer t.Stop()
		select {
		case <-sent:
		case <-t.C:
		}
		return err
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.q.done:
		return errShutdown
	}
}
