// Subscriptions: Pool.Subscribe, the subscription and its background loop,
// and Close (hand back, quiesce, stop). The rest of a subscription lives in
// consumers.go (go-nsq Consumers), arrival.go (HandleMessage), delivery.go
// (Receive and the Acker), holds.go (acked ids and holds), handback.go
// (release and expiry) and deadletter.go.

package nsq

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
)

// Timings of subscriptions.
const (
	// maxRequeueDelay is nsqd's default --max-req-timeout; a longer REQ
	// would make nsqd close the connection.
	maxRequeueDelay = time.Hour
	// deliverySkew is how much earlier than our receipt nsqd may have
	// started a delivery's timeout: its output buffering plus slack.
	deliverySkew = outputBufferTimeout + 25*time.Millisecond
	// overflowDelay requeues a message that arrives while the subscription
	// already holds far more than MaxInFlight (only after connection churn).
	overflowDelay = time.Second
	// closeQuiet: Close sets RDY 0 and waits until no message has arrived
	// for this long (at most closeQuietMax) before it sends CLS. nsqd may
	// write a message it took from its queue just before CLS after its
	// CLOSE_WAIT answer; go-nsq stops reading at CLOSE_WAIT, so such a
	// message would stay in flight, unseen, until nsqd's timeout (the whole
	// ack deadline). With RDY 0 first, nsqd's output is quiet by the time
	// CLS is sent. Two output-buffer flushes cover nsqd's buffering.
	closeQuiet    = 2 * outputBufferTimeout
	closeQuietMax = 500 * time.Millisecond
)

// subscription is one Subscribe: a go-nsq Consumer per node, all feeding
// one queue.
//
// One Consumer per node rather than one Consumer connected to every node:
// a go-nsq Consumer splits its max in flight evenly over its connections
// and moves RDY between them only slowly (and, when connections come up
// concurrently, can leave one at RDY 0 for 5s), so a node holding most of
// the messages would be read at a fraction of the rate. Each per-node
// Consumer gets the subscription's MaxInFlight; Receive enforces the
// subscription-wide bound, and messages beyond it wait in the queue (at
// most MaxInFlight per node), reserved for this subscriber and kept alive
// with TOUCH.
type subscription struct {
	p    *Pool
	opts backends.SubscribeOptions
	// timer: the pool's reader of Config.TimerTopic (see timer.go), which
	// takes each message as it is once due.
	timer bool
	log   *slog.Logger
	// msgTimeout is nsqd's timeout of a delivery to this consumer: the ack
	// deadline clamped to what nsqd accepts.
	msgTimeout time.Duration

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closing   <-chan struct{} // ctx.Done()
	closeOnce sync.Once
	kick      chan struct{} // buffered 1: wake the loop (connect, release)
	avail     chan struct{} // buffered 1: wake Receive
	deadKick  chan struct{} // buffered 1: wake the dead-letter goroutine
	wg        sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	held       map[*delivery]struct{} // not settled: queued or handed out
	queue      []*delivery            // waiting for Receive, in arrival order
	handed     int                    // handed out by Receive, not settled
	dead       []*gonsq.Message       // waiting for the dead-letter goroutine
	down       map[string]bool        // node addresses whose deliveries to release
	connecting map[string]bool        // node addresses with a connect running
	consumers  map[string]*gonsq.Consumer
	// retired consumers lost their connection and were stopped; Close
	// waits for them too. Pruned once stopped.
	retired []*gonsq.Consumer

	// lastArrival is when the last message arrived (unix ns), for Close's
	// quiet wait.
	lastArrival atomic.Int64

	// Deduplication of replicated messages (see dedup in the package
	// documentation): the ids acked on this topic and channel are the
	// pool's (Pool.acked); byID, guarded by mu, holds the held copy of each
	// replicated message id.
	byID map[string]*delivery
}

// Subscribe opens a subscription that reads topic/channel from every node
// of the pool. ctx bounds the first connection round; nodes that cannot be
// reached yet are connected when they come up.
func (p *Pool) Subscribe(ctx context.Context, opts backends.SubscribeOptions) (backends.Subscription, error) {
	s, err := p.subscribe(ctx, opts, false)
	if err != nil {
		return nil, err // not a typed nil
	}
	return s, nil
}

func (p *Pool) subscribe(ctx context.Context, opts backends.SubscribeOptions, timer bool) (*subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.MaxInFlight < 1 {
		opts.MaxInFlight = 1
	}
	if opts.AckDeadline <= 0 {
		opts.AckDeadline = 30 * time.Second
	}
	if (opts.MaxAttempts > 0 || opts.DeadLetterExpired) && opts.DeadLetterTopic == "" {
		return nil, fmt.Errorf("nsq: subscribe: max attempts %d or dead-lettered expiry without a dead-letter topic: %w",
			opts.MaxAttempts, ErrRejected)
	}
	if !gonsq.IsValidTopicName(opts.Topic) || !gonsq.IsValidChannelName(opts.Channel) {
		return nil, fmt.Errorf("nsq: subscribe %q/%q: invalid topic or channel name: %w",
			opts.Topic, opts.Channel, ErrRejected)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &subscription{
		p:          p,
		opts:       opts,
		timer:      timer,
		consumers:  make(map[string]*gonsq.Consumer),
		msgTimeout: msgTimeout(opts.AckDeadline),
		log:        p.log.With("topic", opts.Topic, "channel", opts.Channel),
		ctx:        sctx,
		cancel:     cancel,
		closing:    sctx.Done(),
		kick:       make(chan struct{}, 1),
		avail:      make(chan struct{}, 1),
		deadKick:   make(chan struct{}, 1),
		held:       make(map[*delivery]struct{}),
		byID:       make(map[string]*delivery),
		down:       make(map[string]bool),
		connecting: make(map[string]bool),
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		return nil, errClosed
	}
	p.subs[s] = struct{}{}
	p.mu.Unlock()

	round := s.connectRound()
	s.wg.Add(1)
	go s.loop()
	if opts.MaxAttempts > 0 || opts.DeadLetterExpired {
		s.wg.Add(1)
		go s.deadLetterLoop()
	}
	// Wait for the first round so that the channel exists on every
	// reachable node before the caller goes on; a node that hangs does not
	// hold the caller for longer than a dial.
	select {
	case <-round:
	case <-time.After(p.cfg.DialTimeout + 500*time.Millisecond):
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	s.log.Info("nsq subscription opened", "max_in_flight", opts.MaxInFlight, "ack_deadline", opts.AckDeadline)
	return s, nil
}

// kickConnect asks the loop to run a connect round. It never blocks.
func (s *subscription) kickConnect() { wake(s.kick) }

// nodeDown asks the loop to release the deliveries of the node at addr: it
// left the pool.
func (s *subscription) nodeDown(addr string) {
	s.mu.Lock()
	s.down[addr] = true
	s.mu.Unlock()
	wake(s.kick)
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// loop is the subscription's background goroutine: connect rounds when
// kicked, release of deliveries of failed nodes, and expiry of deliveries
// past their ack deadline (nsqd has already handed those back; answering
// them frees go-nsq's per-connection count so a dead connection can close).
func (s *subscription) loop() {
	defer s.wg.Done()
	sweep := time.NewTicker(clampDuration(s.opts.AckDeadline/10, 20*time.Millisecond, time.Second))
	defer sweep.Stop()
	for {
		select {
		case <-s.kick:
			s.releaseDown()
			s.connectRound()
		case now := <-sweep.C:
			s.expire(now)
		case <-s.closing:
			return
		}
	}
}

// Close hands every unsettled delivery back at once (REQ 0), stops the
// consumer and waits for it (bounded) and for the subscription's
// goroutines. Safe to call more than once.
func (s *subscription) Close() error {
	s.closeOnce.Do(s.close)
	return nil
}

func (s *subscription) close() {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	// Our goroutines first: a connect finishing after Stop would add a
	// connection that Stop never closes.
	s.wg.Wait()
	s.mu.Lock()
	cs := make([]*gonsq.Consumer, 0, len(s.consumers)+len(s.retired))
	for _, c := range s.consumers {
		cs = append(cs, c)
	}
	cs = append(cs, s.retired...)
	s.mu.Unlock()
	s.quiesce(cs)
	// Stop first (CLS: nsqd sends nothing more), then hand back: handed
	// back first, nsqd would redeliver the messages to this subscription's
	// connections, which still have RDY. A connection closes once all its
	// messages are answered. Messages already on the wire are handed back
	// by HandleMessage.
	var back []*gonsq.Message
	s.stopConsumers(cs, func() {
		s.mu.Lock()
		back = make([]*gonsq.Message, 0, len(s.held)+len(s.dead))
		var unhold []string
		for d := range s.held {
			if d.settled {
				continue
			}
			if d.holdSent {
				unhold = append(unhold, d.rid)
			}
			back = append(back, d.msg)
			for _, x := range s.settleLocked(d) {
				back = append(back, x.msg)
			}
		}
		back = append(back, s.dead...)
		s.dead, s.queue = nil, nil
		s.mu.Unlock()
		now := time.Now()
		for _, id := range unhold {
			s.p.noteHeld(s.opts.Topic, s.opts.Channel, id, now, time.Time{}, now)
		}
		for _, m := range back {
			m.RequeueWithoutBackoff(0)
		}
	})
	s.p.mu.Lock()
	delete(s.p.subs, s)
	s.p.mu.Unlock()
	s.log.Info("nsq subscription closed", "handed_back", len(back))
}

// quiesce sets RDY 0 on cs and waits until no message has arrived for
// closeQuiet (at most closeQuietMax): see closeQuiet. Messages that arrive
// meanwhile are handed back by HandleMessage.
func (s *subscription) quiesce(cs []*gonsq.Consumer) {
	for _, c := range cs {
		c.ChangeMaxInFlight(0)
	}
	start := time.Now()
	for {
		last := max(start.UnixNano(), s.lastArrival.Load())
		wait := closeQuiet - time.Since(time.Unix(0, last))
		if wait <= 0 || time.Since(start) >= closeQuietMax {
			return
		}
		time.Sleep(wait)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
