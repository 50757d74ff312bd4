package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// dial connects to a qgate; the connection reconnects fast after the
// gateway restarts on the same address.
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 300 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
}

// classify maps a Send error to an outcome: errors by which the server says
// it rejected the request are failures; everything that may have written
// (deadline, cancellation, a broken connection, UNAVAILABLE, internal
// errors) is unknown.
func classify(err error) (Outcome, string) {
	if err == nil {
		return Acked, ""
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted,
		codes.PermissionDenied, codes.Unauthenticated, codes.NotFound,
		codes.AlreadyExists, codes.OutOfRange, codes.Unimplemented:
		return Failed, st.Code().String()
	}
	return Unknown, st.Code().String()
}

// publisher sends messages with unique ids at a fixed rate, one message per
// Send, and records each attempt.
type publisher struct {
	name     string
	client   qgatev1.QueueServiceClient
	topic    string
	interval time.Duration
	timeout  time.Duration
	replicas uint32
	delay    time.Duration
	ledger   *Ledger
	// due records, for deferred messages, when each id may be delivered.
	due *sync.Map
	seq int
	// twice: send every message twice, a retry with its id as the
	// client-chosen message id (S18).
	twice bool
	// ttl, if set, is given to every other message; expires records for
	// each the latest moment it can expire (the Send's end + ttl).
	ttl     time.Duration
	expires *sync.Map
}

// run sends until ctx is done.
func (p *publisher) run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.seq++
		id := fmt.Sprintf("%s-%06d", p.name, p.seq)
		req := &qgatev1.SendRequest{
			Topic:    p.topic,
			Messages: []*qgatev1.Message{{Body: []byte(id), Attributes: map[string]string{"chaos": "1"}}},
			Replicas: p.replicas,
		}
		if p.delay > 0 {
			req.Delay = durationpb.New(p.delay)
		}
		if p.due != nil {
			p.due.Store(id, time.Now().Add(p.delay))
		}
		expiring := p.ttl > 0 && p.seq%2 == 0
		if expiring {
			req.Messages[0].Ttl = durationpb.New(p.ttl)
		}
		if !p.twice {
			sendRecorded(p.client, req, id, p.timeout, p.ledger)
			if expiring {
				p.expires.Store(id, time.Now().Add(p.ttl)) // accepted before now
			}
			continue
		}
		req.Messages[0].Id = id
		for range 2 { // the second is a retry, whatever the first's outcome
			sendRecorded(p.client, req, id, p.timeout, p.ledger)
		}
	}
}

// sendRecorded makes one Send of the message id and records it. The send
// is not cut short by the load's end: an attempt in progress completes
// (or times out) and is recorded.
func sendRecorded(client qgatev1.QueueServiceClient, req *qgatev1.SendRequest, id string, timeout time.Duration, l *Ledger) Outcome {
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	resp, err := client.Send(sctx, req)
	o, code := classify(err)
	l.RecordSend(SendRecord{IDs: []string{id}, MessageIDs: resp.GetMessageIds(), Outcome: o, Code: code, Start: start, End: time.Now()})
	return o
}

// Action is what a subscriber does with a delivery.
type Action int

// Subscriber actions.
const (
	// AckNow acks at once.
	AckNow Action = iota
	// Nack hands the delivery back with the returned delay.
	Nack
	// Hold neither acks nor nacks: the delivery waits for its ack deadline
	// (a stuck consumer). A held delivery does not count as delivered.
	Hold
	// AckLater acks after the returned delay (a slow consumer).
	AckLater
)

// subscriber reads a subscription through qgate, records each delivery
// and acks it (or does what decide says). It reopens the stream after an
// error until ctx is done.
type subscriber struct {
	name        string
	client      qgatev1.QueueServiceClient
	topic       string
	channel     string
	maxInFlight uint32
	ackDeadline time.Duration
	ledger      *Ledger
	// decide, if set, picks the Action for a delivery and a nack delay.
	decide func(d *qgatev1.Delivery) (Action, time.Duration)

	opens     atomic.Int64 // streams opened
	broken    atomic.Int64 // streams that ended with an error
	ackErrors atomic.Int64 // ack_error responses (ack of an unknown delivery)
}

// run reads until ctx is done.
func (s *subscriber) run(ctx context.Context, opened chan<- struct{}) {
	first := true
	for ctx.Err() == nil {
		err := s.stream(ctx, func() {
			if first {
				first = false
				close(opened)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.broken.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stream runs one Subscribe stream.
func (s *subscriber) stream(ctx context.Context, onOpen func()) error {
	// The sender goroutine and pending delayed acks end with ctx; the
	// stream returns after them.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := s.client.Subscribe(ctx)
	if err != nil {
		return err
	}
	err = st.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: &qgatev1.SubscribeRequest_Open{
		Topic: s.topic, Channel: s.channel, MaxInFlight: s.maxInFlight,
		AckDeadline: durationpb.New(s.ackDeadline),
	}}})
	if err != nil {
		return err
	}
	resp, err := st.Recv()
	if err != nil {
		return err
	}
	if resp.GetOpened() == nil {
		return fmt.Errorf("chaos: subscribe: first response is not opened: %v", resp)
	}
	s.opens.Add(1)
	onOpen()
	// One goroutine sends (gRPC allows one sender at a time); delayed acks
	// reach it through out.
	out := make(chan *qgatev1.SubscribeRequest, 64)
	sendErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case req := <-out:
				if err := st.Send(req); err != nil {
					sendErr <- err
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	enqueue := func(req *qgatev1.SubscribeRequest) {
		select {
		case out <- req:
		case <-ctx.Done():
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			select {
			case err = <-sendErr:
			default:
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		d := resp.GetDelivery()
		if d == nil {
			if resp.GetAckError() != nil {
				s.ackErrors.Add(1) // the delivery went back; it comes again
			}
			continue
		}
		act, delay := AckNow, time.Duration(0)
		if s.decide != nil {
			act, delay = s.decide(d)
		}
		// A delivery counts as consumed when the application got it and
		// will ack it; whether the ack reaches nsqd decides duplicates.
		s.ledger.RecordDelivery(DeliveryRecord{
			ID: string(d.GetBody()), MessageID: d.GetMessageId(), Attempt: int(d.GetAttempt()), At: time.Now(),
			Acked: act == AckNow || act == AckLater, Subscriber: s.name,
		})
		ids := []string{d.GetAckId()}
		switch act {
		case AckNow:
			enqueue(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{Ack: &qgatev1.SubscribeRequest_Ack{AckIds: ids}}})
		case AckLater:
			req := &qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{Ack: &qgatev1.SubscribeRequest_Ack{AckIds: ids}}}
			wg.Add(1)
			time.AfterFunc(delay, func() {
				defer wg.Done()
				enqueue(req)
			})
		case Nack:
			enqueue(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Nack_{Nack: &qgatev1.SubscribeRequest_Nack{AckIds: ids, Delay: durationpb.New(delay)}}})
		}
	}
}

// watcher follows AdminService.WatchNodes and records every event; it
// reconnects after the gateway restarts.
type watcher struct {
	client qgatev1.AdminServiceClient
	mu     sync.Mutex
	events []NodeEvent
}

func (w *watcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		st, err := w.client.WatchNodes(ctx, &qgatev1.WatchNodesRequest{})
		for err == nil {
			var ev *qgatev1.WatchNodesResponse
			if ev, err = st.Recv(); err == nil {
				w.record(ev)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *watcher) record(ev *qgatev1.WatchNodesResponse) {
	prev := ""
	if !ev.GetInitial() {
		prev = stateName(ev.GetPreviousState())
	}
	w.mu.Lock()
	w.events = append(w.events, NodeEvent{
		At: time.Now(), Node: ev.GetNode().GetName(), State: stateName(ev.GetNode().GetState()),
		Previous: prev, Active: ev.GetNode().GetActive(),
	})
	w.mu.Unlock()
}

func (w *watcher) snapshot() []NodeEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]NodeEvent(nil), w.events...)
}

func stateName(s qgatev1.NodeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_STATE_"))
}

// streamPublisher sends messages with unique ids at a fixed rate over
// QueueService.SendStream, one message per request, and records each
// request's outcome: the response's status, or unknown when the stream
// breaks (or the response does not come within timeout) first.
type streamPublisher struct {
	name     string
	client   qgatev1.QueueServiceClient
	topic    string
	interval time.Duration
	timeout  time.Duration
	replicas uint32
	ledger   *Ledger
	seq      int
}

// run sends until ctx is done, reopening the stream after it breaks.
func (p *streamPublisher) run(ctx context.Context) {
	for ctx.Err() == nil {
		p.stream(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pendingSend is a SendStream request waiting for its response.
type pendingSend struct {
	id    string
	start time.Time
}

// stream runs one SendStream stream until ctx is done (then it half-closes
// and waits for the outstanding responses) or the stream breaks.
func (p *streamPublisher) stream(ctx context.Context) {
	// Not cut short by ctx: requests in progress when the load stops get
	// their responses (or time out) and are recorded.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := p.client.SendStream(sctx)
	if err != nil {
		return
	}
	var mu sync.Mutex
	pending := make(map[uint64]pendingSend)
	record := func(req uint64, resp *qgatev1.SendStreamResponse, code string) {
		mu.Lock()
		ps, ok := pending[req]
		delete(pending, req)
		mu.Unlock()
		if !ok {
			return
		}
		o := Unknown
		var mids []string
		if resp != nil {
			o, code = classify(status.ErrorProto(resp.GetStatus()))
			mids = resp.GetMessageIds()
		}
		p.ledger.RecordSend(SendRecord{IDs: []string{ps.id}, MessageIDs: mids, Outcome: o, Code: code, Start: ps.start, End: time.Now()})
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			resp, err := st.Recv()
			if err != nil {
				return
			}
			record(resp.GetRequestId(), resp, "")
		}
	}()
	// expire marks requests older than the timeout unknown (the response
	// may still come; it is then ignored), as a unary Send's deadline does.
	expire := func(now time.Time) {
		mu.Lock()
		var old []uint64
		for req, ps := range pending {
			if now.Sub(ps.start) > p.timeout {
				old = append(old, req)
			}
		}
		mu.Unlock()
		for _, req := range old {
			record(req, nil, "DeadlineExceeded")
		}
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	var reqID uint64
loop:
	for {
		select {
		case <-ctx.Done():
			_ = st.CloseSend()
			select {
			case <-recvDone:
			case <-time.After(p.timeout):
			}
			break loop
		case <-recvDone:
			break loop
		case now := <-t.C:
			expire(now)
			p.seq++
			reqID++
			id := fmt.Sprintf("%s-%06d", p.name, p.seq)
			mu.Lock()
			pending[reqID] = pendingSend{id: id, start: time.Now()}
			mu.Unlock()
			err := st.Send(&qgatev1.SendStreamRequest{RequestId: reqID, Send: &qgatev1.SendRequest{
				Topic:    p.topic,
				Messages: []*qgatev1.Message{{Body: []byte(id), Attributes: map[string]string{"chaos": "1"}}},
				Replicas: p.replicas,
			}})
			if err != nil {
				break loop
			}
		}
	}
	cancel()
	<-recvDone
	mu.Lock()
	var rest []uint64
	for req := range pending {
		rest = append(rest, req)
	}
	mu.Unlock()
	for _, req := range rest {
		record(req, nil, "stream broken")
	}
}

// Burst sends n messages at once through qgate number gw (n concurrent
// unary Sends, recorded in the ledger) and returns when half of them
// were acked, or all have ended, or 5 s passed: the peak of writes, with
// the other half in flight. The sends go on in the background; the run
// waits for them before it drains.
func (h *Harness) Burst(ctx context.Context, gw, n int) {
	client := h.inst[gw].queue
	var acked atomic.Int64
	half := make(chan struct{})
	var once sync.Once
	var ended sync.WaitGroup
	h.mu.Lock()
	h.burstN++
	tag := fmt.Sprintf("b%d", h.burstN)
	h.mu.Unlock()
	for i := range n {
		h.bursts.Add(1)
		ended.Add(1)
		go func() {
			defer h.bursts.Done()
			defer ended.Done()
			id := fmt.Sprintf("%s-%06d", tag, i+1)
			req := &qgatev1.SendRequest{
				Topic:    h.topic,
				Messages: []*qgatev1.Message{{Body: []byte(id), Attributes: map[string]string{"chaos": "1"}}},
				Replicas: uint32(h.replicas()),
			}
			if h.twice {
				req.Messages[0].Id = id
			}
			o := sendRecorded(client, req, id, 2*time.Second, h.ledger)
			if o == Acked && acked.Add(1) >= int64(n/2) {
				once.Do(func() { close(half) })
			}
			if h.twice {
				sendRecorded(client, req, id, 2*time.Second, h.ledger) // the retry
			}
		}()
	}
	allEnded := make(chan struct{})
	go func() {
		ended.Wait()
		close(allEnded)
	}()
	select {
	case <-half:
	case <-allEnded:
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
}
