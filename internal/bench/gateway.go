package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// gateway is side B: the same traffic through qgate's gRPC API, over one
// client connection shared by every worker.
type gateway struct {
	e    *env
	body []byte
	ids  atomic.Uint64 // the last client-chosen id (Config.ClientIDs)
}

func (g *gateway) name() string { return "B" }

func (g *gateway) request(topic string, n int) *qgatev1.SendRequest {
	msgs := make([]*qgatev1.Message, n)
	for i := range msgs {
		msgs[i] = &qgatev1.Message{Body: g.body}
		if ttl := g.e.cfg.TTL; ttl > 0 {
			msgs[i].Ttl = durationpb.New(ttl)
		}
		if g.e.cfg.ClientIDs {
			msgs[i].Id = "b-" + strconv.FormatUint(g.ids.Add(1), 36)
		}
	}
	return &qgatev1.SendRequest{Topic: topic, Messages: msgs}
}

func (g *gateway) sender(topic string, w *workload, _ int) func(context.Context) error {
	req := g.request(topic, w.batch)
	return func(ctx context.Context) error {
		if g.e.cfg.ClientIDs {
			req = g.request(topic, w.batch) // ids are not reused
		}
		_, err := g.e.client.Send(ctx, req)
		return err
	}
}

func (g *gateway) openWindow(ctx context.Context, topic string, w *workload, complete func(int, error)) (windowSender, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := g.e.client.SendStream(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bench: SendStream: %w", err)
	}
	ws := &gatewayWindow{stream: stream, req: g.request(topic, w.batch), cancel: cancel}
	if g.e.cfg.ClientIDs {
		ws.fresh = func() *qgatev1.SendRequest { return g.request(topic, w.batch) }
	}
	ws.wg.Add(1)
	go func() {
		defer ws.wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				return // EOF after close, or the stream failed: send reports it
			}
			var rerr error
			if st := resp.GetStatus(); st.GetCode() != int32(codes.OK) {
				rerr = status.ErrorProto(st)
			}
			complete(int(resp.GetRequestId()&0xffff), rerr)
		}
	}()
	return ws, nil
}

// gatewayWindow is an open SendStream. Request ids carry the slot in their
// low 16 bits.
type gatewayWindow struct {
	stream interface {
		Send(*qgatev1.SendStreamRequest) error
		CloseSend() error
	}
	req    *qgatev1.SendRequest        // shared, never modified
	fresh  func() *qgatev1.SendRequest // if set, a new request (new ids) per send
	seq    uint64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (ws *gatewayWindow) send(slot int) error {
	ws.seq++
	req := ws.req
	if ws.fresh != nil {
		req = ws.fresh()
	}
	err := ws.stream.Send(&qgatev1.SendStreamRequest{RequestId: ws.seq<<16 | uint64(slot), Send: req})
	if err != nil {
		return fmt.Errorf("bench: SendStream: %w", err)
	}
	return nil
}

func (ws *gatewayWindow) close() {
	_ = ws.stream.CloseSend()
	ws.wg.Wait() // the server ends the stream once it answered everything
	ws.cancel()
}

// prepare writes n messages through qgate with Sends of 100 from 4
// goroutines, so the backlog holds what qgate writes (its envelope).
func (g *gateway) prepare(ctx context.Context, topic string, n int) error {
	return inParallel(ctx, 4, n, 100, func(k int) error {
		_, err := g.e.client.Send(ctx, g.request(topic, k))
		return err
	})
}

// maxBatch is the open's max_batch for a drain at max in flight inFly.
// An older qgate ignores it and sends one `delivery` per response, which
// the reader takes as well.
func (g *gateway) maxBatch(inFly int) int {
	if b := g.e.cfg.SubBatch; b > 0 {
		return min(b, inFly)
	}
	return inFly
}

func (g *gateway) subscribe(ctx context.Context, topic, channel string, inFly int, onMsg func()) (func(), error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := g.e.client.Subscribe(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bench: Subscribe: %w", err)
	}
	err = stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{
		Open: &qgatev1.SubscribeRequest_Open{Topic: topic, Channel: channel, MaxInFlight: uint32(inFly), MaxBatch: uint32(g.maxBatch(inFly)), Filter: g.e.cfg.Filter},
	}})
	if err == nil {
		var resp *qgatev1.SubscribeResponse
		if resp, err = stream.Recv(); err == nil && resp.GetOpened() == nil {
			err = errors.New("first response is not opened")
		}
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bench: Subscribe: %w", err)
	}
	// The reader hands ack ids to the acker, which sends whatever has
	// piled up as one Ack: acks batch themselves under load and go out
	// at once when idle.
	acks := make(chan string, inFly)
	var wg sync.WaitGroup
	var stopped atomic.Bool
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			ds := resp.GetDeliveries().GetDeliveries()
			if d := resp.GetDelivery(); d != nil {
				ds = []*qgatev1.Delivery{d}
			}
			for _, d := range ds {
				onMsg()
				select {
				case acks <- d.GetAckId():
				case <-sctx.Done():
					return
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			var ids []string // a new slice: gRPC may hold a sent message
			select {
			case id := <-acks:
				ids = append(ids, id)
			case <-sctx.Done():
				return
			}
		more:
			for len(ids) < 2500 {
				select {
				case id := <-acks:
					ids = append(ids, id)
				default:
					break more
				}
			}
			err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Ack_{
				Ack: &qgatev1.SubscribeRequest_Ack{AckIds: ids},
			}})
			if err != nil {
				return
			}
		}
	}()
	return func() {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			wg.Wait()
		}
	}, nil
}
