package bench

import (
	"context"
	"sync"

	"github.com/qgate/qgate/client"
)

// library is side B of the library workloads: the same traffic through
// package client (Publisher and Subscriber) over the bench's connection,
// as an application would write it: one message per call.
type library struct {
	gateway // prepare: the backlog is written as the raw side writes it
	c       *client.Client

	mu   sync.Mutex
	pubs map[string]*client.Publisher // by topic, shared by the workers
}

func newLibrary(e *env, body []byte) *library {
	return &library{gateway: gateway{e: e, body: body}, c: client.NewFromConn(e.conn), pubs: map[string]*client.Publisher{}}
}

// publisher returns topic's Publisher, shared by every worker of a round.
func (l *library) publisher(topic string) *client.Publisher {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pubs[topic]
	if !ok {
		p = l.c.Publisher(topic, client.PublishSettings{})
		l.pubs[topic] = p
	}
	return p
}

// stop stops every Publisher (after a round: they have nothing pending).
func (l *library) stop() {
	l.mu.Lock()
	pubs := l.pubs
	l.pubs = map[string]*client.Publisher{}
	l.mu.Unlock()
	for _, p := range pubs {
		p.Stop()
	}
}

func (l *library) sender(topic string, w *workload, _ int) func(context.Context) error {
	p := l.publisher(topic)
	m := &client.Message{Body: l.body}
	return func(ctx context.Context) error {
		_, err := p.Publish(ctx, m).Get(ctx)
		return err
	}
}

// openWindow publishes one message per send without waiting; one
// goroutine collects the results in publish order, as an application that
// checks them later would.
func (l *library) openWindow(ctx context.Context, topic string, _ *workload, complete func(int, error)) (windowSender, error) {
	ws := &libraryWindow{p: l.publisher(topic), m: &client.Message{Body: l.body}, ctx: ctx,
		results: make(chan pending, 1<<16)}
	ws.wg.Add(1)
	go func() {
		defer ws.wg.Done()
		for r := range ws.results {
			_, err := r.res.Get(ctx)
			complete(r.slot, err)
		}
	}()
	return ws, nil
}

type pending struct {
	slot int
	res  *client.PublishResult
}

type libraryWindow struct {
	p       *client.Publisher
	m       *client.Message
	ctx     context.Context
	results chan pending
	wg      sync.WaitGroup
}

func (ws *libraryWindow) send(slot int) error {
	ws.results <- pending{slot: slot, res: ws.p.Publish(ws.ctx, ws.m)}
	return nil
}

func (ws *libraryWindow) close() {
	close(ws.results)
	ws.wg.Wait()
}

// subscribe receives with one handler goroutine (onMsg must run on one, and
// the direct Consumer has one handler too) that acks at once.
func (l *library) subscribe(ctx context.Context, topic, channel string, inFly int, onMsg func()) (func(), error) {
	s := l.c.Subscriber(topic, channel, client.ReceiveSettings{MaxOutstandingMessages: inFly,
		MaxBatch: l.maxBatch(inFly), NumGoroutines: 1})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Receive(rctx, func(_ context.Context, d *client.Delivery) {
			onMsg()
			d.Ack()
		})
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}, nil
}
