package bench

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	gonsq "github.com/nsqio/go-nsq"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

// This file measures the design of coalesced sends proposed in RESULTS.md
// before the pool has it: coalescer is a minimal backends.Backend (Send
// only, one node, no retries, no failover) that does group commit over a
// real go-nsq producer to a real in-process nsqd, served by the real
// service and server packages. It is a measurement, not an implementation:
// delete it when backends/nsq coalesces and BenchmarkSendUnaryParallel
// shows the gain itself.

// coalescer does group commit on one node: Sends to a topic that arrive
// while pipeline MPUBs are outstanding ride the next MPUB; a Send that
// finds a free pipeline slot goes out at once. No timer anywhere.
type coalescer struct {
	p        *gonsq.Producer
	pipeline int

	mu       sync.Mutex
	pending  map[string]*batch
	order    []string
	inflight int
	kick     chan struct{}
	results  chan *gonsq.ProducerTransaction
	stop     chan struct{}
	wg       sync.WaitGroup
}

// batch is what the next MPUB of a topic carries and whom it answers.
type batch struct {
	topic   string
	bodies  [][]byte
	waiters []chan error
}

func newCoalescer(p *gonsq.Producer, pipeline int) *coalescer {
	c := &coalescer{p: p, pipeline: pipeline, pending: map[string]*batch{},
		kick: make(chan struct{}, 1), results: make(chan *gonsq.ProducerTransaction, 64), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.loop()
	return c
}

func (c *coalescer) Send(ctx context.Context, topic string, msgs []*backends.Message, _ backends.SendOptions) error {
	done := make(chan error, 1)
	c.mu.Lock()
	b := c.pending[topic]
	if b == nil {
		b = &batch{topic: topic}
		c.pending[topic] = b
		c.order = append(c.order, topic)
	}
	for _, m := range msgs {
		e := &envelope.Message{ID: m.ID, Attributes: m.Attributes, PublishTime: m.PublishTime, Body: m.Body}
		b.bodies = append(b.bodies, envelope.Append(make([]byte, 0, envelope.Size(e)), e))
	}
	b.waiters = append(b.waiters, done)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop is the flusher: it writes pending batches while fewer than
// pipeline are outstanding and fans each result out to its waiters.
func (c *coalescer) loop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.kick:
		case t := <-c.results:
			c.mu.Lock()
			c.inflight--
			c.mu.Unlock()
			for _, w := range t.Args[0].(*batch).waiters {
				w <- t.Error
			}
		case <-c.stop:
			return
		}
		for {
			c.mu.Lock()
			if c.inflight >= c.pipeline || len(c.order) == 0 {
				c.mu.Unlock()
				break
			}
			topic := c.order[0]
			c.order = c.order[1:]
			b := c.pending[topic]
			delete(c.pending, topic)
			c.inflight++
			c.mu.Unlock()
			var err error
			if len(b.bodies) == 1 {
				err = c.p.PublishAsync(topic, b.bodies[0], c.results, b)
			} else {
				err = c.p.MultiPublishAsync(topic, b.bodies, c.results, b)
			}
			if err != nil {
				c.results <- &gonsq.ProducerTransaction{Error: err, Args: []any{b}}
			}
		}
	}
}

func (c *coalescer) Subscribe(context.Context, backends.SubscribeOptions) (backends.Subscription, error) {
	return nil, errors.New("no")
}

func (c *coalescer) Close() error {
	close(c.stop)
	c.wg.Wait()
	return nil
}

// benchCoalesced runs 64 callers (on 2 CPUs) of a unary Send of one
// message through service + server over a coalescer.
func benchCoalesced(b *testing.B, pipeline int) {
	e, body := benchEnv(b)
	prod, err := newProducer(e.nodes[0].TCP)
	if err != nil {
		b.Fatal(err)
	}
	co := newCoalescer(prod, pipeline)
	q := service.New(co)
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Queue: q})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		cancel()
		<-served
		co.Close()
		prod.Stop()
	})
	client := qgatev1.NewQueueServiceClient(conn)
	req := &qgatev1.SendRequest{Topic: "co#ephemeral", Messages: []*qgatev1.Message{{Body: body}}}
	b.ReportAllocs()
	b.SetParallelism(32)
	c0 := cpuNow()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Send(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	cpuReport(b, c0, b.N)
}

// BenchmarkCoalescedSendParallel1 is BenchmarkSendUnaryParallel with
// coalesced sends, one MPUB outstanding per node.
func BenchmarkCoalescedSendParallel1(b *testing.B) { benchCoalesced(b, 1) }

// BenchmarkCoalescedSendParallel2 is the same with two MPUBs outstanding.
func BenchmarkCoalescedSendParallel2(b *testing.B) { benchCoalesced(b, 2) }
