package service

import (
	"context"
	"errors"
	"io"
	"sync"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

type sendStreamServer = grpc.BidiStreamingServer[qgatev1.SendStreamRequest, qgatev1.SendStreamResponse]

// SendStream implements QueueService.SendStream.
//
// The handler takes a request only when one of its window slots is free, so
// while the window is full it reads nothing and gRPC flow control slows the
// client down. Each request runs in a goroutine that holds a slot until its
// response is sent. Before it returns, the handler waits until every
// request it took is processed, and then for the responses at most the
// send grace: a client that half-closed and stopped reading blocks their
// Sends until the stream ends, which happens once the handler returns.
func (q *Queue) SendStream(stream sendStreamServer) error {
	if !q.enter() {
		return errShutdown
	}
	defer q.streams.Done()

	ctx := stream.Context()
	stop := make(chan struct{})
	defer close(stop)
	reqs := make(chan *qgatev1.SendStreamRequest)
	readErr := make(chan error, 1)
	recvLoop(q, stream.Recv, reqs, readErr, stop)

	s := &sendStream{q: q, stream: stream, failed: make(chan error, 1)}
	slots := make(chan struct{}, q.opts.window)
	// processing counts requests being sent to the backend; workers, the
	// goroutines until their response is sent.
	var processing, workers sync.WaitGroup
	defer func() {
		processing.Wait()
		q.waitSends(&workers)
	}()
	for {
		// A slot first: a full window stops reading.
		select {
		case slots <- struct{}{}:
		case err := <-s.failed:
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-q.done:
			return errShutdown
		}
		select {
		case req := <-reqs:
			workers.Add(1)
			processing.Add(1)
			q.goStream(func() {
				defer workers.Done()
				defer func() { <-slots }()
				s.handle(ctx, req, processing.Done)
			})
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil // half-close: answer what is in flight, then end OK
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

// sendStream is the state of one SendStream shared by its workers.
type sendStream struct {
	q      *Queue
	stream sendStreamServer
	mu     sync.Mutex // serializes stream.Send
	failed chan error // the first stream.Send error
}

// handle processes one request, calls processed, and sends its response.
func (s *sendStream) handle(ctx context.Context, req *qgatev1.SendStreamRequest, processed func()) {
	resp := &qgatev1.SendStreamResponse{RequestId: req.GetRequestId(), Status: &spb.Status{}}
	sendReq := req.GetSend()
	if sendReq == nil {
		var v violations
		v.add("send", "is required")
		resp.Status = status.Convert(v.err("send stream request")).Proto()
	} else {
		if t := s.q.opts.streamTimeout; t > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
		ids, err := s.q.send(ctx, sendReq)
		if err != nil {
			resp.Status = status.Convert(err).Proto()
		} else {
			resp.MessageIds = ids
		}
	}
	processed()
	s.mu.Lock()
	err := s.stream.Send(resp)
	s.mu.Unlock()
	if err != nil {
		select {
		case s.failed <- err:
		default:
		}
	}
}
