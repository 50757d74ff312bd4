package client

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// sendStream is one open SendStream and its reader.
type sendStream struct {
	gen    int
	stream grpc.BidiStreamingClient[qgatev1.SendStreamRequest, qgatev1.SendStreamResponse]
	cancel context.CancelFunc
}

// streamEvent is a response, or the error that ended stream gen.
type streamEvent struct {
	gen  int
	resp *qgatev1.SendStreamResponse
	err  error
}

// sender is the state of Publisher.run, the one goroutine that writes the
// stream. It owns every batch from the moment it is taken until it is
// settled.
type sender struct {
	p            *Publisher
	st           *sendStream
	gen          int
	nextID       uint64
	outstanding  map[uint64]*batch
	retries      []*batch
	events       chan streamEvent
	openAttempts int
	openAfter    time.Time
	openErr      error // why the last stream failed
	readers      sync.WaitGroup
}

// run is the Publisher's sender loop: it opens the stream when there is
// something to write, keeps up to MaxOutstandingBatches requests in
// flight, settles results from responses, retries what may be retried
// (after a backoff, within each batch's deadline) and reopens a broken
// stream. It returns when Stop closes quit, which Stop does only once
// every result is settled.
func (p *Publisher) run() {
	s := &sender{p: p, outstanding: map[uint64]*batch{},
		events: make(chan streamEvent, p.s.MaxOutstandingBatches+1)}
	defer s.readers.Wait()
	defer s.endStream()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		s.expire(now)
		wait := s.write(now)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-p.kick:
		case ev := <-s.events:
			if ev.gen == s.gen {
				s.handle(ev, time.Now())
			}
		case <-timer.C:
		case <-p.quit:
			return
		}
	}
}

// write opens the stream if needed and writes batches while slots are
// free. It returns how long run may sleep before there is something to do
// without a wake-up.
func (s *sender) write(now time.Time) time.Duration {
	p := s.p
	wait := time.Hour
	for len(s.outstanding) < p.s.MaxOutstandingBatches {
		b, delay := s.next(now)
		if b == nil {
			if delay > 0 {
				wait = min(wait, delay)
			}
			break
		}
		if s.st == nil && !s.open(now) {
			if s.openErr != nil {
				b.lastErr = s.openErr
			}
			s.retries = append([]*batch{b}, s.retries...)
			wait = min(wait, s.openAfter.Sub(now))
			break
		}
		s.nextID++
		b.attempts++
		s.outstanding[s.nextID] = b
		p.requests.Add(1)
		if err := s.st.stream.Send(b.request(p.topic, s.nextID)); err != nil {
			// The stream is broken; its reader reports why.
			break
		}
	}
	for _, b := range s.retries {
		wait = min(wait, b.notBefore.Sub(now), b.deadline.Sub(now))
	}
	for _, b := range s.outstanding {
		wait = min(wait, b.deadline.Sub(now))
	}
	return max(wait, time.Millisecond)
}

// next returns a retry that is due, else a new batch.
func (s *sender) next(now time.Time) (*batch, time.Duration) {
	for i, b := range s.retries {
		if !b.notBefore.After(now) {
			s.retries = append(s.retries[:i], s.retries[i+1:]...)
			return b, 0
		}
	}
	return s.p.take(now)
}

// open opens a stream unless the backoff after a failure forbids it yet.
func (s *sender) open(now time.Time) bool {
	if now.Before(s.openAfter) {
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.p.client.queue.SendStream(ctx)
	if err != nil {
		cancel()
		s.failedStream(err, now)
		return false
	}
	s.gen++
	s.st = &sendStream{gen: s.gen, stream: stream, cancel: cancel}
	s.readers.Add(1)
	go func(gen int) {
		defer s.readers.Done()
		for {
			resp, err := stream.Recv()
			select {
			case s.events <- streamEvent{gen: gen, resp: resp, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}(s.gen)
	return true
}

// endStream half-closes the stream and waits (up to closeWait) for the
// server to end it, so that it ends with OK rather than CANCELLED in the
// server's logs and metrics. Every result is settled by then.
func (s *sender) endStream() {
	if s.st == nil {
		return
	}
	if s.st.stream.CloseSend() == nil {
		t := time.NewTimer(closeWait)
		defer t.Stop()
	wait:
		for {
			select {
			case ev := <-s.events:
				if ev.gen == s.gen && ev.err != nil {
					break wait
				}
			case <-t.C:
				break wait
			}
		}
	}
	s.closeStream()
}

// closeStream half-closes and abandons the current stream.
func (s *sender) closeStream() {
	if s.st == nil {
		return
	}
	_ = s.st.stream.CloseSend()
	s.st.cancel()
	s.st = nil
}

// failedStream schedules the next open after a backoff.
func (s *sender) failedStream(err error, now time.Time) {
	s.openAfter = now.Add(s.p.s.Retry.delay(s.openAttempts))
	s.openAttempts++
	s.openErr = err
}

// handle applies a response or the end of the stream.
func (s *sender) handle(ev streamEvent, now time.Time) {
	if ev.err != nil {
		if isStreamEnd(ev.err) {
			ev.err = status.Error(codes.Unavailable, "client: SendStream ended by the server")
		}
		s.closeStream()
		s.failedStream(ev.err, now)
		for id, b := range s.outstanding {
			delete(s.outstanding, id)
			// The outcome is unknown: a retry may write the batch again,
			// under the same message ids (delivered once).
			s.retryOrFail(b, ev.err, retryableStream(ev.err), now)
		}
		return
	}
	b, ok := s.outstanding[ev.resp.GetRequestId()]
	if !ok {
		return // expired locally
	}
	delete(s.outstanding, ev.resp.GetRequestId())
	s.openAttempts = 0
	if st := ev.resp.GetStatus(); st.GetCode() != int32(codes.OK) {
		err := status.ErrorProto(st)
		s.retryOrFail(b, err, retryableResult(err), now)
		return
	}
	s.p.settle(b, ev.resp.GetMessageIds(), nil)
}

// retryOrFail queues b for another attempt after its backoff if retry is
// set and its deadline allows, else fails it with err.
func (s *sender) retryOrFail(b *batch, err error, retry bool, now time.Time) {
	b.lastErr = err
	if !retry {
		s.p.settle(b, nil, err)
		return
	}
	b.notBefore = now.Add(s.p.s.Retry.delay(b.attempts - 1))
	if !b.notBefore.Before(b.deadline) {
		s.p.settle(b, nil, errDeadline(err))
		return
	}
	s.retries = append(s.retries, b)
}

// expire fails the batches whose deadline has passed. A response that
// comes later for one of them is ignored.
func (s *sender) expire(now time.Time) {
	for id, b := range s.outstanding {
		if !now.Before(b.deadline) {
			delete(s.outstanding, id)
			s.p.settle(b, nil, errDeadline(b.lastErr))
		}
	}
	kept := s.retries[:0]
	for _, b := range s.retries {
		if now.Before(b.deadline) {
			kept = append(kept, b)
		} else {
			s.p.settle(b, nil, errDeadline(b.lastErr))
		}
	}
	clear(s.retries[len(kept):])
	s.retries = kept
}
