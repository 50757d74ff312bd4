package nsq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
)

// Attributes added to a message written to a dead-letter topic.
const (
	AttrDeadLetterAttempts = "qgate-dead-letter-attempts"
	AttrDeadLetterReason   = "qgate-dead-letter-reason"
)

// Timings of subscriptions.
const (
	// deadLetterTimeout bounds one dead-letter write.
	deadLetterTimeout = 5 * time.Second
	// deadLetterRetryDelay is the requeue delay of a message whose
	// dead-letter write failed: it comes back and is tried again.
	deadLetterRetryDelay = 5 * time.Second
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
	log  *slog.Logger
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

// delivery is one message held by a subscription; it is the Acker.
type delivery struct {
	s   *subscription
	msg *gonsq.Message
	d   backends.Delivery
	// Guarded by s.mu.
	deadline    time.Time // the client's ack deadline, once handed out
	nsqDeadline time.Time // when nsqd times the message out, absent a TOUCH
	settled     bool
	handed      bool
	// released: settled because its node's connection was lost (see
	// releaseDown). A client's Ack that comes later still counts for
	// deduplication: the message's other copies are finished, not
	// delivered again.
	released  bool
	lateAcked bool
	// holdSent: a hold of this delivery's id was recorded (and shared), so
	// that its standby copy waits for its outcome; see heldLong.
	holdSent bool
	// Replicated messages: rid is the message id. A copy that arrives while
	// another copy is held waits, parked (primary set, not queued), for
	// that copy's outcome: finished with it when it is acked, handed back
	// with it otherwise.
	rid     string
	dups    []*delivery // parked copies of this held delivery
	primary *delivery   // the held copy this parked copy waits for
}

// Subscribe opens a subscription that reads topic/channel from every node
// of the pool. ctx bounds the first connection round; nodes that cannot be
// reached yet are connected when they come up.
func (p *Pool) Subscribe(ctx context.Context, opts backends.SubscribeOptions) (backends.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.MaxInFlight < 1 {
		opts.MaxInFlight = 1
	}
	if opts.AckDeadline <= 0 {
		opts.AckDeadline = 30 * time.Second
	}
	if opts.MaxAttempts > 0 && opts.DeadLetterTopic == "" {
		return nil, fmt.Errorf("nsq: subscribe: max attempts %d without a dead-letter topic: %w",
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
	if opts.MaxAttempts > 0 {
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

// connectRound connects the consumer to every node not known to be down,
// one goroutine per node that is not already connecting. The returned
// channel is closed when this round's connects have finished.
func (s *subscription) connectRound() <-chan struct{} {
	targets := s.p.consumeTargets()
	var round sync.WaitGroup
	launched := 0
	s.mu.Lock()
	if !s.closed {
		for _, nc := range targets {
			addr := nc.TCPAddr
			if s.connecting[addr] {
				continue
			}
			if c := s.consumers[addr]; c != nil && c.Stats().Connections > 0 {
				continue // connected (go-nsq reconnects a lost one itself too)
			}
			s.connecting[addr] = true
			launched++
			round.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer round.Done()
				s.connect(nc)
			}()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	if launched == 0 {
		close(done)
		return done
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		round.Wait()
		close(done)
	}()
	return done
}

// connect connects addr's consumer, making it first if needed;
// ErrAlreadyConnected is success.
//
// go-nsq's ConnectToNSQD returns once SUB is written, not when nsqd has
// processed it, so a message published right after Subscribe returns could
// reach the topic before the channel exists, and the channel would never
// see it. Creating the channel first through nsqd's HTTP API, which answers
// once it exists, closes that gap.
func (s *subscription) connect(nc NodeConfig) {
	addr := nc.TCPAddr
	c, err := s.consumerOf(addr)
	if err == nil && c.Stats().Connections > 0 {
		err = gonsq.ErrAlreadyConnected // connected, or a lost connection not yet cleaned up
	} else if err == nil {
		cerr := s.p.createChannel(s.ctx, nc.HTTPAddr, s.opts.Topic, s.opts.Channel)
		switch {
		case cerr == nil, s.ctx.Err() != nil:
		case errors.Is(cerr, errTopicNotFound):
			// Nothing was sent to the topic on this node yet; SUB creates
			// topic and channel, and a topic keeps its messages until its
			// first channel exists, so nothing is missed.
			s.log.Debug("nsq channel create: no topic yet", "node", nc.Name)
		default:
			// Worth a Warn: until SUB lands, messages sent to the topic on
			// this node are not this channel's (nsqd gives a new channel
			// only what comes after). s.log carries topic and channel.
			s.log.Warn("nsq channel create failed", "node", nc.Name, "addr", nc.HTTPAddr, "err", cerr)
		}
		err = c.ConnectToNSQD(addr)
		if err == nil && !s.current(addr, c) {
			// The consumer was retired while connecting (its previous
			// connection's close was reported meanwhile): stopped, it would
			// never send CLS on this connection. Close it; the next round
			// connects a new consumer.
			_ = c.DisconnectFromNSQD(addr)
		}
	}
	s.mu.Lock()
	delete(s.connecting, addr)
	s.mu.Unlock()
	switch {
	case err == nil:
		s.log.Debug("nsq consumer connected", "addr", addr)
	case errors.Is(err, gonsq.ErrAlreadyConnected):
	default:
		s.log.Debug("nsq consumer connect failed", "addr", addr, "err", err)
	}
}

// consumeTargets returns every node that is not known to be down:
// primaries, backups and drained nodes alike.
func (p *Pool) consumeTargets() []NodeConfig {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]NodeConfig, 0, len(p.nodes))
	for _, g := range p.groups {
		for _, m := range g.members {
			if !m.removed && m.health != backends.NodeDown {
				out = append(out, m.cfg)
			}
		}
	}
	return out
}

// createChannel creates topic/channel on the nsqd at httpAddr (POST
// /channel/create), bounded by the check timeout.
func (p *Pool) createChannel(ctx context.Context, httpAddr, topic, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Check.Timeout)
	defer cancel()
	u := "http://" + httpAddr + "/channel/create?" + url.Values{"topic": {topic}, "channel": {channel}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusNotFound: // nsqd's TOPIC_NOT_FOUND
		return fmt.Errorf("%s: %w", u, errTopicNotFound)
	default:
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
}

// errTopicNotFound is nsqd's answer to a channel create on a topic it does
// not have.
var errTopicNotFound = errors.New("nsq: topic not found")

// consumerOf returns addr's consumer, making it if needed.
//
// A consumer lives for one connection, like the pool's producers: when its
// connection closes it is stopped (see consumerLogger) and the next connect
// round makes a new one. A go-nsq Consumer whose connection to a directly
// configured nsqd closes starts a re-dial goroutine of its own, which
// nobody can wait for and which, when it connects while the consumer is
// being stopped, adds a connection that never got CLS: that consumer never
// stops (Close waited for it in vain, and its goroutines and connection
// leaked, still taking messages). Stopped before go-nsq decides to re-dial,
// the consumer starts no such goroutine; the pool's own connect rounds
// (kicked when a node comes Up, and every check interval) reconnect.
func (s *subscription) consumerOf(addr string) (*gonsq.Consumer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.consumers[addr]; c != nil {
		return c, nil
	}
	c, err := gonsq.NewConsumer(s.opts.Topic, s.opts.Channel, s.p.consumerConfig(s.opts.MaxInFlight, s.opts.AckDeadline))
	if err != nil {
		return nil, err
	}
	c.SetLogger(consumerLogger{nsqLogger{s.log.With("addr", addr)}, func() { s.lost(addr, c) }}, s.p.nsqLogLevel())
	// One handler goroutine: the handler never blocks for long (it only
	// queues), so more would not help.
	c.AddHandler(s)
	s.consumers[addr] = c
	return c, nil
}

// current reports whether c is addr's consumer.
func (s *subscription) current(addr string, c *gonsq.Consumer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.consumers[addr] == c
}

// lost retires addr's consumer c after its connection closed. It runs in
// go-nsq's goroutine that closes the connection, before go-nsq would start
// its re-dial goroutine: with the consumer stopped, it starts none.
//
// The connection being gone is what releases the node's deliveries (nsqd
// has requeued them; acks over the dead connection cannot land): not a
// failed health check, which says nothing of this connection.
func (s *subscription) lost(addr string, c *gonsq.Consumer) {
	c.Stop() // no connection left: the consumer stops at once
	s.mu.Lock()
	if s.consumers[addr] == c {
		delete(s.consumers, addr)
	}
	if !s.closed {
		s.down[addr] = true
	}
	live := s.retired[:0]
	for _, r := range s.retired {
		select {
		case <-r.StopChan:
		default:
			live = append(live, r)
		}
	}
	s.retired = append(live, c)
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		wake(s.kick) // reconnect if the node is still up
	}
}

// disconnect stops consuming from addr (a node that left the pool) and
// waits for the consumer to stop, bounded.
func (s *subscription) disconnect(addr string) {
	s.mu.Lock()
	c := s.consumers[addr]
	delete(s.consumers, addr)
	s.mu.Unlock()
	if c != nil {
		s.stopConsumers([]*gonsq.Consumer{c}, nil)
	}
}

// stopConsumers stops cs (CLS on their connections), then runs between (if
// any), then waits for them to stop, bounded: a frozen node's connection
// ends only when its reads time out.
func (s *subscription) stopConsumers(cs []*gonsq.Consumer, between func()) {
	for _, c := range cs {
		c.Stop()
	}
	if between != nil {
		between()
	}
	timeout := time.NewTimer(readTimeout + 2*time.Second)
	defer timeout.Stop()
	for _, c := range cs {
		select {
		case <-c.StopChan:
		case <-timeout.C:
			s.log.Warn("nsq consumer did not stop in time")
			return
		}
	}
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

// releaseDown settles every delivery of the nodes whose connection was lost
// or that left the pool, and hands it back (REQ 0): nsqd requeues them
// anyway when the connection is gone. Their parked copies (from other
// nodes) are handed back too; those of a replicated delivery the client
// holds come back only after its ack deadline, since a late Ack of the
// released delivery still counts (see delivery.Ack) and then finishes them
// on arrival instead of delivering them twice.
func (s *subscription) releaseDown() {
	s.mu.Lock()
	if len(s.down) == 0 {
		s.mu.Unlock()
		return
	}
	type release struct {
		d     *delivery
		delay time.Duration
	}
	var rel []release
	now := time.Now()
	for d := range s.held {
		if s.down[d.msg.NSQDAddress] && !d.settled {
			d.released = true
			var delay time.Duration
			if d.handed && d.rid != "" {
				delay = max(d.deadline.Sub(now), 0) + notBeforePrecision
			}
			// With its connection gone the REQ is moot (nsqd requeues);
			// if the node was marked down while its connection lives, the
			// message comes back only after the client's deadline, when a
			// late Ack has finished it.
			rel = append(rel, release{d, delay})
			for _, x := range s.settleLocked(d) {
				x.released = true
				rel = append(rel, release{x, delay})
			}
		}
	}
	clear(s.down)
	s.mu.Unlock()
	if len(rel) > 0 {
		// The message is matched by chaos/logcount.go; keep it.
		s.log.Info("nsq released deliveries of a down node", "count", len(rel), "why", "connection lost or node left")
	}
	for _, r := range rel {
		r.d.msg.RequeueWithoutBackoff(min(r.delay, maxRequeueDelay))
	}
}

// expire settles handed-out deliveries whose ack deadline has passed, and
// keeps queued ones alive: a message waiting in the queue for Receive has
// not been seen by the client, so its deadline has not started; a TOUCH
// stops nsqd from timing it out (and counting another attempt) meanwhile.
func (s *subscription) expire(now time.Time) {
	s.mu.Lock()
	var exp, touch []*delivery
	var holds []envelope.Hold
	for d := range s.held {
		if d.settled {
			continue
		}
		switch {
		case d.handed && now.After(d.deadline), !d.handed && now.After(d.nsqDeadline):
			if d.holdSent && d.rid != "" {
				holds = append(holds, envelope.Hold{ID: d.rid, Until: now}) // ends it
			}
			exp = append(exp, d)
			exp = append(exp, s.settleLocked(d)...)
		case !d.handed && d.nsqDeadline.Sub(now) < s.msgTimeout/2:
			d.nsqDeadline = now.Add(s.msgTimeout)
			touch = append(touch, d)
		case d.handed && !d.holdSent && s.heldLong(d, now):
			d.holdSent = true
			holds = append(holds, envelope.Hold{ID: d.rid, Until: d.deadline})
		}
	}
	s.mu.Unlock()
	for _, h := range holds {
		s.p.noteHeld(s.opts.Topic, s.opts.Channel, h.ID, h.Until, now)
	}
	for _, d := range exp {
		d.msg.RequeueWithoutBackoff(0)
	}
	for _, d := range touch {
		d.msg.Touch()
	}
}

// heldLong reports whether d, a handed-out delivery, is a replicated
// message held so long that another copy may surface meanwhile (see
// holdAfter): then a hold is recorded, so the
// standby waits for d's outcome wherever it surfaces. A client that acks
// at once never causes one. Callers hold s.mu.
func (s *subscription) heldLong(d *delivery, now time.Time) bool {
	pub := d.d.Message.PublishTime
	return d.rid != "" && !pub.IsZero() && now.Sub(pub) >= s.p.holdAfter()
}

// holdAfter is how long after its send a replicated delivery, unsettled,
// records a hold, and a copy arriving claims one: a quarter of the standby
// delay, before the earliest other copy can surface (a moved first copy,
// due at half of it).
func (p *Pool) holdAfter() time.Duration { return p.cfg.StandbyDelay / 4 }

// HandleMessage is the go-nsq handler: it queues the message for Receive
// (or for the dead-letter goroutine) and returns at once; responses are
// sent when the delivery is settled.
func (s *subscription) HandleMessage(m *gonsq.Message) error {
	m.DisableAutoResponse()
	s.lastArrival.Store(time.Now().UnixNano())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		m.RequeueWithoutBackoff(0)
		return nil
	}
	now := time.Now()
	msg, info := decode(m)
	if wait := info.notBefore.Sub(now); wait > notBeforePrecision {
		// Not due yet: a standby copy, or a deferred message whose timer
		// nsqd dropped. Defer it (again) until it is.
		s.mu.Unlock()
		m.RequeueWithoutBackoff(min(wait, maxRequeueDelay))
		return nil
	}
	var claimed time.Time // a hold this copy took at arrival (see below)
	if info.replicated {
		var acked bool
		var heldUntil time.Time
		if pub := msg.PublishTime; !pub.IsZero() && now.Sub(pub) >= s.p.holdAfter() {
			// Its twin may be live too (a backlog): hold the id at once, so
			// that the twin, arriving at another subscription or gateway
			// meanwhile, waits for this copy's outcome instead of being
			// delivered too.
			until := now.Add(s.opts.AckDeadline + s.msgTimeout/4)
			var ok bool
			acked, heldUntil, ok = s.p.acked.claim(s.opts.Topic, s.opts.Channel, msg.ID, until, now, holdPrecision)
			if ok {
				claimed = until
			}
		} else {
			acked, heldUntil = s.p.acked.state(s.opts.Topic, s.opts.Channel, msg.ID, now)
		}
		if acked {
			s.mu.Unlock()
			m.Finish() // a copy of a message acked on this channel
			return nil
		}
		if wait := heldUntil.Sub(now); wait > holdPrecision && s.byID[msg.ID] == nil {
			// Its twin is held elsewhere (another subscription or
			// gateway): wait for its outcome rather than deliver twice.
			s.mu.Unlock()
			m.RequeueWithoutBackoff(min(wait+notBeforePrecision, maxRequeueDelay))
			return nil
		}
	}
	attempts := int(m.Attempts)
	if info.standby && attempts > 1 {
		attempts-- // its early arrival, deferred above, was not a delivery
	}
	if s.opts.MaxAttempts > 0 && attempts > s.opts.MaxAttempts {
		s.dead = append(s.dead, m)
		s.mu.Unlock()
		wake(s.deadKick)
		return nil
	}
	// Each node's consumer may have MaxInFlight out; more means connection
	// churn left stale RDY somewhere. Bound the queue anyway.
	if len(s.held) >= s.opts.MaxInFlight*(len(s.consumers)+1)+16 {
		s.mu.Unlock()
		if !claimed.IsZero() {
			s.p.acked.hold(s.opts.Topic, s.opts.Channel, []envelope.Hold{{ID: msg.ID, Until: now}}, now)
		}
		m.RequeueWithoutBackoff(overflowDelay)
		return nil
	}
	// nsqd started the message's timeout when it wrote it to its output
	// buffer, up to outputBufferTimeout before we read it: count from then,
	// so an Ack that we accept reaches nsqd before its deadline.
	d := &delivery{s: s, msg: m, nsqDeadline: now.Add(s.msgTimeout - deliverySkew)}
	d.d = backends.Delivery{Message: msg, Attempt: attempts, Acker: d}
	s.held[d] = struct{}{}
	if info.replicated {
		d.rid = msg.ID
		if p := s.byID[msg.ID]; p != nil {
			d.primary = p // park: wait for the held copy's outcome
			p.dups = append(p.dups, d)
			p.holdSent = p.holdSent || !claimed.IsZero() // the held copy ends the hold
			s.mu.Unlock()
			return nil
		}
		s.byID[msg.ID] = d
	}
	d.holdSent = !claimed.IsZero()
	s.queue = append(s.queue, d)
	s.mu.Unlock()
	if !claimed.IsZero() {
		s.p.noteHeld(s.opts.Topic, s.opts.Channel, msg.ID, claimed, now) // share it
	}
	wake(s.avail)
	return nil
}

// notBeforePrecision: a message that arrives at most this much before its
// not_before is delivered rather than deferred again.
const notBeforePrecision = 10 * time.Millisecond

// holdPrecision: a copy whose twin's hold ends within this is not deferred
// for it (the hold is most likely this copy's own, about to end).
const holdPrecision = 100 * time.Millisecond

// copyInfo is what the envelope says about a copy beyond the message.
type copyInfo struct {
	replicated bool      // a copy of a replicated send: deduplicated by id
	standby    bool      // a standby copy (deferred once on arrival)
	notBefore  time.Time // not deliverable before; zero: at once
}

// decode turns an NSQ message into the message qgate sent, and tells
// what kind of copy it is; a body without the envelope is delivered as-is
// with nsqd's id and timestamp, and is never a replicated copy.
func decode(m *gonsq.Message) (backends.Message, copyInfo) {
	if e, ok := envelope.Decode(m.Body); ok {
		return backends.Message{ID: e.ID, Body: e.Body, Attributes: e.Attributes, PublishTime: e.PublishTime},
			copyInfo{replicated: e.Replicas > 1, standby: e.Standby, notBefore: e.NotBefore}
	}
	return backends.Message{ID: string(m.ID[:]), Body: m.Body, PublishTime: time.Unix(0, m.Timestamp)}, copyInfo{}
}

// Receive returns the next delivery; see backends.Subscription. A delivery
// that is ready is returned before ctx is looked at, so with a ctx that is
// already done Receive takes what is ready without blocking (service
// batches deliveries this way).
func (s *subscription) Receive(ctx context.Context) (*backends.Delivery, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, fmt.Errorf("nsq: subscription: %w", backends.ErrClosed)
		}
		if s.handed < s.opts.MaxInFlight {
			for len(s.queue) > 0 {
				d := s.queue[0]
				s.queue[0] = nil
				s.queue = s.queue[1:]
				if d.settled {
					continue
				}
				d.handed = true
				s.handed++
				now := time.Now()
				touch := s.needsTouch(d, now)
				if touch {
					d.nsqDeadline = now.Add(s.msgTimeout)
				}
				d.deadline = minTime(now.Add(s.opts.AckDeadline), d.nsqDeadline)
				hold, until := d.holdSent, d.deadline
				s.mu.Unlock()
				if touch {
					d.msg.Touch()
				}
				if hold { // it waited in the queue: hold it to its deadline
					s.p.noteHeld(s.opts.Topic, s.opts.Channel, d.rid, until, now)
				}
				return &d.d, nil
			}
		}
		s.mu.Unlock()
		select {
		case <-s.avail:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closing:
		}
	}
}

// needsTouch reports whether d, about to be handed out at now, needs a
// TOUCH so that the client gets its full ack deadline from now: whether
// nsqd's timer, started when nsqd wrote the message, would run out first.
//
// nsqd's timeout is the ack deadline plus ackMargin, so a message handed
// out within ackMargin-deliverySkew of its arrival (a drain hands out
// most within milliseconds) needs none; only one that waited in the queue
// longer is touched. A TOUCH per delivery would double the commands a
// drain sends to nsqd. When nsqd's timeout is capped below the ack
// deadline (15 minutes), a TOUCH can give the client at most
// msgTimeout-ackMargin, and the message is touched after the same wait.
// Callers hold s.mu.
func (s *subscription) needsTouch(d *delivery, now time.Time) bool {
	want := now.Add(min(s.opts.AckDeadline, s.msgTimeout-ackMargin))
	return d.nsqDeadline.Before(want)
}

// settleLocked marks d settled. It returns d's parked copies, settled too:
// callers answer them as they answer d (FIN after an Ack, else REQ). Callers
// hold s.mu and respond after unlocking.
func (s *subscription) settleLocked(d *delivery) []*delivery {
	d.settled = true
	delete(s.held, d)
	if d.handed {
		s.handed--
		wake(s.avail)
	}
	if p := d.primary; p != nil { // a parked copy, settled on its own
		p.dups = slices.DeleteFunc(p.dups, func(x *delivery) bool { return x == d })
		d.primary = nil
		return nil
	}
	if d.rid == "" {
		return nil
	}
	if s.byID[d.rid] == d {
		delete(s.byID, d.rid)
	}
	dups := d.dups
	d.dups = nil
	for _, x := range dups {
		x.settled, x.primary = true, nil
		delete(s.held, x)
	}
	return dups
}

// settle settles d for Ack (ack true) or Nack. It reports false when d was
// already settled; expired when its deadline had passed; late for the
// first Ack of a replicated delivery that was released with its lost
// connection (nothing to answer on the wire, but its id counts as acked).
// It returns d's parked copies. An acked replicated message's id is
// remembered, and shared with other instances.
func (d *delivery) settle(ack bool) (ok, expired, late bool, dups []*delivery) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if d.settled {
		if ack && d.released && !d.lateAcked && d.rid != "" && !now.After(d.deadline) {
			d.lateAcked = true
			s.p.noteAcked(s.opts.Topic, s.opts.Channel, d.rid, now)
			return false, false, true, nil
		}
		return false, false, false, nil
	}
	dups = s.settleLocked(d)
	expired = now.After(d.deadline)
	if ack && !expired && d.rid != "" {
		s.p.noteAcked(s.opts.Topic, s.opts.Channel, d.rid, now)
	}
	return true, expired, false, dups
}

// noteAcked remembers that the replicated message id was acked on
// topic/channel (or dead-lettered: settled for good), and tells the other
// instances.
func (p *Pool) noteAcked(topic, channel, id string, now time.Time) {
	p.acked.add(topic, channel, []string{id}, now)
	if p.bus != nil {
		p.bus.note(topic, channel, id, time.Time{})
	}
}

// noteHeld records that the replicated message id is held on
// topic/channel until until (until not after now ends a hold), and tells
// the other instances: its other copies are deferred until then.
func (p *Pool) noteHeld(topic, channel, id string, until, now time.Time) {
	p.acked.hold(topic, channel, []envelope.Hold{{ID: id, Until: until}}, now)
	if p.bus != nil {
		if !until.After(now) {
			until = now // a time in the past ends the hold everywhere
		}
		p.bus.note(topic, channel, id, until)
	}
}

var errUnknown = fmt.Errorf("nsq: %w", backends.ErrUnknownDelivery)

// requeue hands ds back after delay.
func requeue(ds []*delivery, delay time.Duration) {
	for _, d := range ds {
		d.msg.RequeueWithoutBackoff(delay)
	}
}

// Ack finishes the message (FIN), and its parked copies. The Ack of a
// replicated delivery released with its lost connection succeeds without
// a FIN (there is no connection to send it on): its other copies are
// finished wherever they arrive, and nsqd's redelivery of this one too.
func (d *delivery) Ack() error {
	ok, expired, late, dups := d.settle(true)
	switch {
	case late:
		return nil
	case !ok:
		return errUnknown
	case expired:
		d.msg.RequeueWithoutBackoff(0)
		requeue(dups, 0)
		return errUnknown
	}
	d.msg.Finish()
	for _, x := range dups {
		x.msg.Finish()
	}
	return nil
}

// Nack hands the message back for redelivery after delay (REQ, no
// backoff), and its parked copies with it.
func (d *delivery) Nack(delay time.Duration) error {
	ok, expired, _, dups := d.settle(false)
	switch {
	case !ok:
		return errUnknown
	case expired:
		d.msg.RequeueWithoutBackoff(0)
		requeue(dups, 0)
		return errUnknown
	}
	delay = clampDuration(delay, 0, maxRequeueDelay)
	d.msg.RequeueWithoutBackoff(delay)
	requeue(dups, delay)
	if d.rid != "" && (delay > 0 || d.holdSent) {
		// Its other copies wait for the nack's delay too (or no longer,
		// with none): a standby must not bring it back early.
		now := time.Now()
		d.s.p.noteHeld(d.s.opts.Topic, d.s.opts.Channel, d.rid, now.Add(delay), now)
	}
	return nil
}

// Extend resets the ack deadline (TOUCH).
func (d *delivery) Extend() error {
	s := d.s
	s.mu.Lock()
	if d.settled {
		s.mu.Unlock()
		return errUnknown
	}
	now := time.Now()
	if now.After(d.deadline) {
		dups := s.settleLocked(d)
		s.mu.Unlock()
		d.msg.RequeueWithoutBackoff(0)
		requeue(dups, 0)
		return errUnknown
	}
	d.nsqDeadline = now.Add(s.msgTimeout)
	d.deadline = minTime(now.Add(s.opts.AckDeadline), d.nsqDeadline)
	hold := d.holdSent || s.heldLong(d, now)
	d.holdSent = d.holdSent || hold
	until := d.deadline
	s.mu.Unlock()
	d.msg.Touch()
	if hold {
		s.p.noteHeld(s.opts.Topic, s.opts.Channel, d.rid, until, now)
	}
	return nil
}

// deadLetterLoop writes messages past MaxAttempts to the dead-letter topic
// through the pool's Send, then finishes them; a failed write requeues the
// message with a delay, so it is tried again and never dropped.
func (s *subscription) deadLetterLoop() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		var m *gonsq.Message
		if len(s.dead) > 0 && !s.closed {
			m = s.dead[0]
			s.dead[0] = nil
			s.dead = s.dead[1:]
		}
		s.mu.Unlock()
		if m == nil {
			select {
			case <-s.deadKick:
				continue
			case <-s.closing:
				return
			}
		}
		// Close cancels s.ctx: a write in progress ends and its message is
		// handed back.
		s.deadLetter(s.ctx, m)
	}
}

func (s *subscription) deadLetter(ctx context.Context, m *gonsq.Message) {
	msg, info := decode(m)
	attrs := make(map[string]string, len(msg.Attributes)+2)
	maps.Copy(attrs, msg.Attributes)
	attrs[AttrDeadLetterAttempts] = strconv.Itoa(int(m.Attempts) - 1)
	attrs[AttrDeadLetterReason] = fmt.Sprintf("delivered %d times, max attempts %d", int(m.Attempts)-1, s.opts.MaxAttempts)
	msg.Attributes = attrs
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	err := s.p.Send(ctx, s.opts.DeadLetterTopic, []*backends.Message{&msg}, backends.SendOptions{})
	if err != nil {
		s.log.Warn("nsq dead-letter write failed; requeued", "id", msg.ID,
			"dead_letter_topic", s.opts.DeadLetterTopic, "err", err)
		delay := deadLetterRetryDelay
		if s.ctx.Err() != nil || errors.Is(err, backends.ErrClosed) {
			// Closing (this subscription or the pool): hand it back at
			// once, so another subscriber gets it without the retry delay.
			delay = 0
		}
		m.RequeueWithoutBackoff(delay)
		return
	}
	s.log.Info("nsq message dead-lettered", "id", msg.ID, "dead_letter_topic", s.opts.DeadLetterTopic,
		"attempts", int(m.Attempts)-1)
	if info.replicated {
		// Settled for good: its other copies must not be delivered again.
		s.p.noteAcked(s.opts.Topic, s.opts.Channel, msg.ID, time.Now())
	}
	m.Finish()
	s.p.cfg.Observer.DeadLettered(s.opts.Topic, s.opts.Channel)
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
			s.p.noteHeld(s.opts.Topic, s.opts.Channel, id, now, now)
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

// consumerLogger is the logger of one consumer: it calls lost when go-nsq
// reports that the consumer's connection closed ("there are 0 connections
// left alive", logged at Warning before go-nsq decides whether to re-dial).
type consumerLogger struct {
	nsqLogger
	lost func()
}

// Output implements go-nsq's logger interface.
func (l consumerLogger) Output(depth int, s string) error {
	if strings.Contains(s, "connections left alive") {
		l.lost()
	}
	return l.nsqLogger.Output(depth, s)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
