package service

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Queue implements qgate.v1.QueueService over a backends.Backend.
//
// Its methods are safe for concurrent use. Create it with New; end its
// streams with Shutdown.
type Queue struct {
	qgatev1.UnimplementedQueueServiceServer

	backend backends.Backend
	opts    options
	ids     *idSource

	mu       sync.Mutex
	closing  bool
	done     chan struct{} // closed by Shutdown
	shutOnce sync.Once
	// streams counts running stream handlers and their goroutines: readers,
	// and senders blocked on a client that does not read, outlive the
	// handler until gRPC ends the stream (see waitSends).
	streams sync.WaitGroup
}

var _ qgatev1.QueueServiceServer = (*Queue)(nil)

// New returns a Queue that stores messages in b. b is not closed by the
// Queue; the caller closes it after the gRPC server has stopped.
func New(b backends.Backend, opts ...Option) *Queue {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.limits.MaxSendDelay <= 0 {
		o.limits.MaxSendDelay = cmp.Or(backends.MaxDelay(b), o.limits.MaxDelay)
	}
	return &Queue{
		backend: b,
		opts:    o,
		ids:     newIDSource(),
		done:    make(chan struct{}),
	}
}

// Limits returns the effective limits.
func (q *Queue) Limits() Limits { return q.opts.limits }

// Shutdown ends every SendStream and Subscribe stream with UNAVAILABLE and
// makes new streams fail with UNAVAILABLE at once; unary Sends are not
// affected (grpc.Server.GracefulStop waits for them). A SendStream first
// answers the requests it is processing; a Subscribe hands its unacked
// deliveries back. Shutdown waits until every stream handler and its
// goroutines have returned or ctx is done, and returns ctx.Err() in the
// latter case. A handler whose client stopped reading returns after the
// send grace (WithSendGrace); its blocked send ends when gRPC ends the
// stream. Safe to call more than once.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.BeginShutdown()
	waited := make(chan struct{})
	go func() {
		q.streams.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// BeginShutdown is Shutdown without the wait: it tells every stream to end
// and returns at once. It fits hooks that must return promptly; call
// Shutdown later to wait. Safe to call more than once.
func (q *Queue) BeginShutdown() {
	q.shutOnce.Do(func() {
		q.mu.Lock()
		q.closing = true
		q.mu.Unlock()
		close(q.done)
	})
}

// enter registers a stream handler; false after Shutdown.
func (q *Queue) enter() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return false
	}
	q.streams.Add(1)
	return true
}

// Send implements QueueService.Send.
func (q *Queue) Send(ctx context.Context, req *qgatev1.SendRequest) (*qgatev1.SendResponse, error) {
	ids, err := q.send(ctx, req)
	if err != nil {
		return nil, err
	}
	return &qgatev1.SendResponse{MessageIds: ids}, nil
}

// send validates req, assigns ids and writes the messages. Errors are status
// errors.
func (q *Queue) send(ctx context.Context, req *qgatev1.SendRequest) ([]string, error) {
	delay, err := checkSend(&q.opts.limits, backendSizer{q.backend}, req)
	if err != nil {
		return nil, err
	}
	publish := time.Now()
	in := req.GetMessages()
	ids := q.ids.assign(len(in))
	msgs := make([]backends.Message, len(in))
	ptrs := make([]*backends.Message, len(in))
	for i, m := range in {
		msgs[i] = backends.Message{
			ID:          ids[i],
			Body:        m.GetBody(),
			Attributes:  m.GetAttributes(),
			PublishTime: publish,
		}
		if id := m.GetId(); id != "" {
			// The client's id: a retry of this Send is the same message.
			ids[i], msgs[i].ID, msgs[i].ClientID = id, id, true
		}
		if ttl := m.GetTtl().AsDuration(); ttl > 0 {
			msgs[i].ExpireAt = publish.Add(ttl)
		}
		ptrs[i] = &msgs[i]
	}
	replicas := int(req.GetReplicas())
	if replicas == 0 {
		replicas = q.opts.replicas
	}
	err = q.backend.Send(ctx, req.GetTopic(), ptrs, backends.SendOptions{Delay: delay, Replicas: replicas})
	if err != nil {
		return nil, toStatus(q.opts.logger, "send", err)
	}
	return ids, nil
}

// recvLoop passes what recv returns to out until recv fails (the error goes
// to errc, which must have room for it) or stop is closed. It runs in its own
// goroutine, counted in q.streams, because a blocked Recv ends only when the
// stream does, after its handler returns.
func recvLoop[T any](q *Queue, recv func() (T, error), out chan<- T, errc chan<- error, stop <-chan struct{}) {
	q.streams.Add(1)
	go func() {
		defer q.streams.Done()
		for {
			m, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case out <- m:
			case <-stop:
				return
			}
		}
	}()
}

// goStream runs f in a goroutine counted in q.streams, so Shutdown waits for
// it even when it outlives its stream's handler.
func (q *Queue) goStream(f func()) {
	q.streams.Add(1)
	go func() {
		defer q.streams.Done()
		f()
	}()
}

// waitSends waits for wg, which counts a stream's goroutines that send
// responses, for at most the send grace, and reports whether they ended.
// A handler calls it as it ends: a sender still blocked then waits on a
// client that does not read (flow control), and only the end of the stream
// releases it, which gRPC does once the handler returns (it cancels the
// stream's context). The senders run through goStream, so Shutdown still
// waits for them.
func (q *Queue) waitSends(wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	q.goStream(func() {
		wg.Wait()
		close(done)
	})
	t := time.NewTimer(q.opts.sendGrace)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		q.opts.logger.Debug("stream ends with a response unsent: the client does not read", "grace", q.opts.sendGrace)
		return false
	}
}
