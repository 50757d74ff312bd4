package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	gonsq "github.com/nsqio/go-nsq"
)

// direct is side A: go-nsq straight to the nodes, as an application that
// does not use qgate would: one shared producer per node.
type direct struct {
	e    *env
	body []byte
	next atomic.Uint64 // spreads requests over the nodes
}

func (d *direct) name() string { return "A" }

// producer returns the producer for the next request.
func (d *direct) producer() *gonsq.Producer {
	ps := d.e.producers
	return ps[int(d.next.Add(1)%uint64(len(ps)))]
}

func (d *direct) bodies(n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = d.body
	}
	return b
}

func (d *direct) sender(topic string, w *workload, _ int) func(context.Context) error {
	if w.batch == 1 {
		return func(context.Context) error { return d.producer().Publish(topic, d.body) }
	}
	bodies := d.bodies(w.batch)
	return func(context.Context) error { return d.producer().MultiPublish(topic, bodies) }
}

func (d *direct) openWindow(ctx context.Context, topic string, w *workload, complete func(int, error)) (windowSender, error) {
	ws := &directWindow{
		d:       d,
		topic:   topic,
		bodies:  d.bodies(w.batch),
		results: make(chan *gonsq.ProducerTransaction, w.window),
		quit:    make(chan struct{}),
	}
	ws.wg.Add(1)
	go func() {
		defer ws.wg.Done()
		for {
			select {
			case t := <-ws.results:
				complete(t.Args[0].(int), t.Error)
			case <-ws.quit:
				return
			}
		}
	}()
	return ws, nil
}

// directWindow publishes asynchronously; go-nsq reports each result on
// results with the slot as its argument.
type directWindow struct {
	d       *direct
	topic   string
	bodies  [][]byte
	results chan *gonsq.ProducerTransaction
	quit    chan struct{}
	wg      sync.WaitGroup
}

func (ws *directWindow) send(slot int) error {
	p := ws.d.producer()
	if len(ws.bodies) == 1 {
		return p.PublishAsync(ws.topic, ws.bodies[0], ws.results, slot)
	}
	return p.MultiPublishAsync(ws.topic, ws.bodies, ws.results, slot)
}

func (ws *directWindow) close() {
	close(ws.quit)
	ws.wg.Wait()
}

// prepare writes n messages with MultiPublish of 100 from 4 goroutines.
func (d *direct) prepare(ctx context.Context, topic string, n int) error {
	return inParallel(ctx, 4, n, 100, func(k int) error {
		return d.producer().MultiPublish(topic, d.bodies(k))
	})
}

func (d *direct) subscribe(_ context.Context, topic, channel string, inFly int, onMsg func()) (func(), error) {
	cfg := gonsq.NewConfig()
	cfg.MaxInFlight = inFly
	c, err := gonsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: consumer: %w", err)
	}
	c.SetLogger(quietLogger, gonsq.LogLevelError)
	// One handler goroutine, as qgate's one subscriber reads one stream;
	// returning nil finishes (acks) the message.
	c.AddHandler(gonsq.HandlerFunc(func(*gonsq.Message) error {
		onMsg()
		return nil
	}))
	addrs := make([]string, len(d.e.nodes))
	for i, n := range d.e.nodes {
		addrs[i] = n.TCP
	}
	if err := c.ConnectToNSQDs(addrs); err != nil {
		c.Stop()
		<-c.StopChan
		return nil, fmt.Errorf("bench: consumer: %w", err)
	}
	return func() {
		c.Stop()
		<-c.StopChan
	}, nil
}

// inParallel calls send from workers goroutines with batch sizes of at
// most batch until n messages are sent, and returns the first error.
func inParallel(ctx context.Context, workers, n, batch int, send func(k int) error) error {
	var left atomic.Int64
	left.Store(int64(n))
	var errs errLog
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && errs.n.Load() == 0 {
				rest := left.Add(-int64(batch))
				k := batch
				if rest < 0 {
					k += int(rest)
				}
				if k <= 0 {
					return
				}
				if err := send(k); err != nil {
					errs.add(err)
				}
			}
		}()
	}
	wg.Wait()
	if _, err := errs.get(); err != nil {
		return err
	}
	return ctx.Err()
}
