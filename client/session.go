package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// maxIDs is the most ack ids the server takes in one ack, nack or extend.
const maxIDs = 2500

// closeWait bounds how long the end of Receive waits for the server to end
// the stream after the last acks, so they are processed before it returns.
const closeWait = 5 * time.Second

// session is one Subscribe stream of a Receive. Its loop is the only
// goroutine that writes the stream; read is the only one that reads it.
type session struct {
	sub         *Subscriber
	stream      grpc.BidiStreamingClient[qgatev1.SubscribeRequest, qgatev1.SubscribeResponse]
	fc          *flowController
	ackDeadline time.Duration
	flushAt     int // pending acks that are sent at once

	incoming chan []*Delivery // read → loop
	recvErr  chan error       // read → loop, once
	kick     chan struct{}    // cap 1: settles posted or a handler returned
	running  atomic.Int64     // deliveries of this session in work or in handlers
	stopping atomic.Bool      // set when ctx ends or the stream breaks: skip the rest

	mu      sync.Mutex
	posted  []settleReq
	closed  bool // settles after this are dropped
	handoff bool // set by loop when it stops dispatching

	// Owned by loop.
	outstanding map[string]*Delivery // by ack id: received, not settled
	queue       []*Delivery          // received, not yet given to a handler
	acks        []string
	nacks       map[time.Duration][]string
	pending     int // ids in acks and nacks
}

// post hands a settle to the loop.
func (ss *session) post(r settleReq) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.posted = append(ss.posted, r)
	ss.mu.Unlock()
	ss.wake()
}

func (ss *session) handled() {
	ss.running.Add(-1)
	ss.wake()
}

func (ss *session) wake() {
	select {
	case ss.kick <- struct{}{}:
	default:
	}
}

// read receives deliveries until the stream ends, taking room in the
// byte bound for each response before reading the next (so a full bound
// stops reading, and gRPC flow control stops the server).
func (ss *session) read(ctx context.Context) {
	for {
		resp, err := ss.stream.Recv()
		if err != nil {
			ss.recvErr <- err
			return
		}
		var ds []*qgatev1.Delivery
		switch k := resp.GetKind().(type) {
		case *qgatev1.SubscribeResponse_Delivery:
			ds = []*qgatev1.Delivery{k.Delivery}
		case *qgatev1.SubscribeResponse_Deliveries_:
			ds = k.Deliveries.GetDeliveries()
		case *qgatev1.SubscribeResponse_AckError_:
			ss.sub.ackErrors.Add(1)
			continue
		default:
			continue
		}
		now := time.Now()
		out := make([]*Delivery, len(ds))
		total := 0
		for i, pd := range ds {
			d := &Delivery{ID: pd.GetMessageId(), Body: pd.GetBody(), Attributes: pd.GetAttributes(),
				Attempt: int(pd.GetAttempt()), ackID: pd.GetAckId(), sess: ss, size: len(pd.GetBody()), received: now}
			if t := pd.GetPublishTime(); t != nil {
				d.PublishTime = t.AsTime()
			}
			if t := pd.GetExpireTime(); t != nil {
				d.ExpireTime = t.AsTime()
			}
			total += d.size
			out[i] = d
		}
		if err := ss.fc.acquire(ctx, len(out), total, true); err != nil {
			ss.recvErr <- err
			return
		}
		select {
		case ss.incoming <- out:
		case <-ctx.Done():
			ss.fc.release(len(out), total)
			ss.recvErr <- ctx.Err()
			return
		}
	}
}

// loop dispatches deliveries to handlers, sends settles in batches and
// extends the deadlines of what it holds, until the stream breaks (it
// returns the error) or ctx ends (it lets running handlers finish, sends
// their settles, half-closes and waits for the server to end the stream).
func (ss *session) loop(ctx context.Context, work chan<- *Delivery) error {
	defer ss.close()
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	defer ackTimer.Stop()
	ackArmed := false
	lease := time.NewTicker(max(ss.ackDeadline/3, 10*time.Millisecond))
	defer lease.Stop()
	done := ctx.Done()
	for {
		var dispatch chan<- *Delivery
		var next *Delivery
		if len(ss.queue) > 0 && done != nil {
			dispatch, next = work, ss.queue[0]
		}
		if done == nil && ss.running.Load() == 0 {
			ss.applyPosted()
			return ss.finish()
		}
		select {
		case ds := <-ss.incoming:
			for _, d := range ds {
				ss.outstanding[d.ackID] = d
			}
			ss.queue = append(ss.queue, ds...)
			if done != nil {
				ss.dispatchMore(work)
			}
		case dispatch <- next:
			ss.running.Add(1)
			ss.queue[0] = nil
			ss.queue = ss.queue[1:]
			ss.dispatchMore(work)
		case <-ss.kick:
			ss.applyPosted()
			if ss.pending >= ss.flushAt {
				if err := ss.flush(); err != nil {
					return err
				}
			} else if ss.pending > 0 && !ackArmed {
				ackTimer.Reset(ss.sub.s.AckDelay)
				ackArmed = true
			}
		case <-ackTimer.C:
			ackArmed = false
			if err := ss.flush(); err != nil {
				return err
			}
		case <-lease.C:
			if err := ss.extend(time.Now()); err != nil {
				return err
			}
		case err := <-ss.recvErr:
			return err
		case <-done:
			// Stop dispatching: what is queued goes back to the server
			// with the stream; wait for the running handlers.
			done = nil
			ss.stopping.Store(true)
			ss.dropQueue()
		}
	}
}

// dispatchMore hands queued deliveries to the handlers while the work
// channel has room, without a trip through the select per delivery.
func (ss *session) dispatchMore(work chan<- *Delivery) {
	for len(ss.queue) > 0 {
		select {
		case work <- ss.queue[0]:
			ss.running.Add(1)
			ss.queue[0] = nil
			ss.queue = ss.queue[1:]
		default:
			return
		}
	}
}

// applyPosted takes the settles posted by handlers into the wire batches.
func (ss *session) applyPosted() {
	ss.mu.Lock()
	posted := ss.posted
	ss.posted = nil
	ss.mu.Unlock()
	for _, r := range posted {
		if _, ok := ss.outstanding[r.d.ackID]; !ok {
			continue // given up after MaxExtension
		}
		delete(ss.outstanding, r.d.ackID)
		ss.fc.release(1, r.d.size)
		if r.kind == settleAck {
			ss.acks = append(ss.acks, r.d.ackID)
		} else {
			ss.nacks[r.delay] = append(ss.nacks[r.delay], r.d.ackID)
		}
		ss.pending++
	}
}

// flush sends the pending acks and nacks.
func (ss *session) flush() error {
	for ids := range chunks(ss.acks) {
		req := &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{Ack: &qgatev1.SubscribeRequest_Ack{AckIds: ids}}}
		if err := ss.stream.Send(req); err != nil {
			return ss.sendErr(err)
		}
	}
	ss.acks = ss.acks[:0]
	for delay, all := range ss.nacks {
		for ids := range chunks(all) {
			n := &qgatev1.SubscribeRequest_Nack{AckIds: ids}
			if delay > 0 {
				n.Delay = durationpb.New(delay)
			}
			if err := ss.stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Nack_{Nack: n}}); err != nil {
				return ss.sendErr(err)
			}
		}
		delete(ss.nacks, delay)
	}
	ss.pending = 0
	return nil
}

// extend resets the deadline of every delivery held, and gives up those
// held longer than MaxExtension (the server redelivers them).
func (ss *session) extend(now time.Time) error {
	var ids []string
	for id, d := range ss.outstanding {
		if now.Sub(d.received) >= ss.sub.s.MaxExtension {
			delete(ss.outstanding, id)
			ss.fc.release(1, d.size)
			continue
		}
		ids = append(ids, id)
	}
	for part := range chunks(ids) {
		req := &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Extend_{Extend: &qgatev1.SubscribeRequest_Extend{AckIds: part}}}
		if err := ss.stream.Send(req); err != nil {
			return ss.sendErr(err)
		}
	}
	return nil
}

// sendErr turns a failed Send into the stream's error: Send returns io.EOF
// and Recv the reason.
func (ss *session) sendErr(err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	return <-ss.recvErr
}

// dropQueue releases the deliveries not given to a handler.
func (ss *session) dropQueue() {
	for _, d := range ss.queue {
		delete(ss.outstanding, d.ackID)
		ss.fc.release(1, d.size)
	}
	ss.queue = nil
}

// finish sends the last settles, half-closes and waits (up to closeWait)
// for the server to end the stream, so they are processed.
func (ss *session) finish() error {
	if err := ss.flush(); err != nil {
		return err
	}
	// What is still held goes back to the server with the stream; give
	// its room back so a reader waiting for room reads the stream's end.
	for id, d := range ss.outstanding {
		delete(ss.outstanding, id)
		ss.fc.release(1, d.size)
	}
	if err := ss.stream.CloseSend(); err != nil {
		return nil
	}
	t := time.NewTimer(closeWait)
	defer t.Stop()
	for {
		select {
		case ds := <-ss.incoming: // the reader must not block
			for _, d := range ds {
				ss.fc.release(1, d.size)
			}
		case <-ss.recvErr:
			return nil
		case <-t.C:
			return status.Error(codes.DeadlineExceeded, "client: Subscribe: the server did not end the stream")
		}
	}
}

// close drops every later settle and releases what the session holds.
func (ss *session) close() {
	ss.stopping.Store(true)
	ss.mu.Lock()
	ss.closed = true
	ss.posted = nil
	ss.mu.Unlock()
	ss.dropQueue()
	for id, d := range ss.outstanding {
		delete(ss.outstanding, id)
		ss.fc.release(1, d.size)
	}
}

// chunks yields ids in slices of at most maxIDs.
func chunks(ids []string) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(ids) > 0 {
			n := min(len(ids), maxIDs)
			if !yield(ids[:n]) {
				return
			}
			ids = ids[n:]
		}
	}
}
