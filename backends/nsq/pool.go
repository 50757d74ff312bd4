package nsq

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
)

// Pool is a pool of nsqd nodes behind the backends.Backend interface. It is
// safe for concurrent use; see the package documentation for routing,
// failover and delivery semantics.
type Pool struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client // nsqd's HTTP API (channel creation); see newHTTPClient

	channels *channelCreates // channels created per node (channels.go)

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the pool starts

	closeOnce sync.Once

	mu       sync.RWMutex
	groups   []*group
	nodes    map[string]*node
	subs     map[*subscription]struct{}
	watchers map[*watcher]struct{}
	closed   bool

	// acked holds the replicated message ids acked per topic and channel
	// (deduplication); bus shares them with other instances (nil without
	// Config.AckTopic).
	acked  *ackedIDs
	bus    *ackBus
	timer  *timerMover // nil without Config.TimerTopic
	peers  busPeers    // the other instances the bus hears of
	stalls stalls      // the pool's own recent stalls (stall.go)

	rr uint64 // round-robin counter over groups; guarded by rrMu
	// rrMu is separate from mu so picking a group never waits on a writer.
	rrMu sync.Mutex
}

var _ backends.Backend = (*Pool)(nil)

// New validates cfg, connects the pool's nodes and starts health checking.
// It runs one round of checks before returning (bounded by Check.Timeout) so
// the pool starts with real node states. Close releases everything.
func New(cfg Config) (*Pool, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		cfg:      cfg,
		log:      cfg.Logger,
		http:     newHTTPClient(cfg),
		channels: newChannelCreates(),
		ctx:      ctx,
		cancel:   cancel,
		nodes:    make(map[string]*node),
		subs:     make(map[*subscription]struct{}),
		watchers: make(map[*watcher]struct{}),
		acked:    newAckedIDs(cfg.DedupWindow, cfg.DedupMaxIDs),
	}
	var created []*node
	for _, gc := range cfg.Groups {
		g := &group{name: gc.Name}
		for i, nc := range gc.Nodes {
			n, err := p.newNode(nc, g, i)
			if err != nil {
				for _, n := range created {
					n.producer.Stop()
					n.mon.Stop()
				}
				cancel()
				return nil, err
			}
			g.members = append(g.members, n)
			p.nodes[n.cfg.Name] = n
			created = append(created, n)
		}
		p.groups = append(p.groups, g)
	}
	p.probeAll(created)
	p.mu.Lock()
	for _, n := range created {
		p.startNodeLocked(n)
	}
	p.refreshLocked(time.Now()) // record initial Active flags; no watchers yet
	p.mu.Unlock()
	p.wg.Add(2)
	go p.housekeeping()
	go p.watchStalls()
	if len(cfg.LookupdHTTPAddrs) > 0 {
		if err := p.startDiscovery(); err != nil {
			p.Close()
			return nil, err
		}
	}
	if cfg.AckTopic != "" {
		p.startAckBus()
	}
	if cfg.TimerTopic != "" {
		p.startTimer()
	}
	p.log.Info("nsq pool started", "groups", len(p.groups), "nodes", len(created), "instance", cfg.InstanceID)
	return p, nil
}

// newHTTPClient returns the client of the pool's calls to nsqd's HTTP API,
// on a transport of its own: nsqd is dialled directly even when the
// process has HTTP_PROXY set (http.DefaultTransport honours it), and Close
// closes only the pool's idle connections, not those of every
// DefaultTransport user in the process. Each request is also bounded by its
// context (createChannel: Check.Timeout).
func newHTTPClient(cfg Config) *http.Client {
	var tr http.RoundTripper = &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.Check.Timeout,
		DisableCompression:    true,
	}
	if cfg.wrapHTTP != nil {
		tr = cfg.wrapHTTP(tr)
	}
	return &http.Client{Transport: tr}
}

// newNode creates a node's producer and monitor; nothing runs yet.
func (p *Pool) newNode(nc NodeConfig, g *group, priority int) (*node, error) {
	n := &node{
		cfg:      nc,
		group:    g,
		priority: priority,
		reqs:     make(chan *pubReq),
		kick:     make(chan struct{}, 1),
		results:  make(chan *gonsq.ProducerTransaction, maxOutstanding),
		pending:  make(map[string][]*cbatch),
		busy:     make(map[string]bool),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		health:   backends.NodeUnknown,
		downc:    make(chan struct{}),
	}
	n.newProd = func() (*gonsq.Producer, error) {
		prod, err := gonsq.NewProducer(nc.TCPAddr, p.producerConfig())
		if err != nil {
			return nil, fmt.Errorf("nsq: node %s: producer: %w", nc.Name, err)
		}
		// go-nsq logs at Info when the producer's router exits; the
		// logger watches for it to mark the producer stale.
		prod.SetLogger(producerLogger{nsqLogger{p.log.With("node", nc.Name)}, &n.stale}, gonsq.LogLevelInfo)
		return prod, nil
	}
	prod, err := n.newProd()
	if err != nil {
		return nil, err
	}
	n.producer = prod
	now := time.Now()
	n.healthSince, n.reportedSince = now, now
	mon, err := health.New(nc.HTTPAddr, p.cfg.Check, func(old, now backends.NodeState, snap health.Snapshot) {
		p.onHealth(n, old, now, snap)
	}, health.WithLogger(p.log), health.WithName(nc.Name), health.WithEjection(p.cfg.Eject))
	if err != nil {
		prod.Stop()
		return nil, fmt.Errorf("nsq: node %s: monitor: %w", nc.Name, err)
	}
	n.mon = mon
	return n, nil
}

// probeAll runs one check of every node at once, bounded by the check
// timeout, and records the results as the nodes' first states.
func (p *Pool) probeAll(nodes []*node) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Check.Timeout+100*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.mon.Probe(ctx) // the result is in the snapshot
		}()
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range nodes {
		snap := n.mon.Snapshot()
		n.snap = snap
		if snap.State != backends.NodeUnknown {
			n.setHealthLocked(snap.State, snap.Since)
			n.reported, n.reportedSince = n.reportedState(), snap.Since
		}
	}
}

// startNodeLocked starts n's sender goroutine and monitor. Callers hold
// p.mu.
func (p *Pool) startNodeLocked(n *node) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		n.sendLoop()
	}()
	n.mon.Start(p.ctx)
}

// Close stops the pool: subscriptions are closed (their unacked deliveries
// handed back), watchers' channels closed, monitors, senders and producers
// stopped; later calls return backends.ErrClosed. It waits for every
// goroutine the pool started. Safe to call more than once.
func (p *Pool) Close() error {
	p.closeOnce.Do(p.close)
	return nil
}

func (p *Pool) close() {
	if p.timer != nil {
		p.timer.close() // its writes end while the pool can still send
	}
	if p.bus != nil {
		p.bus.close() // flush what is queued while the pool can still send
	}
	p.mu.Lock()
	p.closed = true
	subs := make([]*subscription, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	// Subscriptions first: their dead-letter sends still need the pool.
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Close()
		}()
	}
	wg.Wait()
	p.cancel()
	p.mu.Lock()
	nodes := make([]*node, 0, len(p.nodes))
	for _, n := range p.nodes {
		nodes = append(nodes, n)
	}
	p.mu.Unlock()
	for _, n := range nodes {
		p.stopNode(n)
	}
	p.wg.Wait()
	p.http.CloseIdleConnections()
	p.log.Info("nsq pool closed")
}

// stopNode stops n's monitor, sender and producer. It blocks until they
// exit (the producer's router may finish a write, up to WriteTimeout). Safe
// to call more than once and concurrently: Close may list a node that
// discovery removes (and stops) before Close gets to it.
func (p *Pool) stopNode(n *node) {
	n.mon.Stop()
	n.stopOnce.Do(func() { close(n.stop) })
	<-n.done // the sender stops its producer
}

// onHealth is the monitors' state-change callback: it mirrors the state
// (which moves sends waiting on a node gone Down elsewhere), emits Watch
// events, and tells subscriptions to reconnect (Up).
//
// A Down node's deliveries are not handed back here: a failed /ping, or an
// ejection for failed sends, says nothing of the consumer connections,
// which may well be delivering and taking acks still. Handing back what
// such a connection holds made every one of those messages a duplicate,
// and their acks refused. Deliveries are released when their connection is
// actually gone (subscription.lost) or the node left the pool.
func (p *Pool) onHealth(n *node, old, now backends.NodeState, snap health.Snapshot) {
	p.mu.Lock()
	if n.removed {
		p.mu.Unlock()
		return
	}
	n.snap = snap
	if n.health != now {
		n.setHealthLocked(now, snap.Since)
	}
	p.refreshLocked(time.Now())
	subs := p.subsLocked()
	p.mu.Unlock()

	attrs := []any{"node", n.cfg.Name, "group", n.group.name, "from", old.String(), "to", now.String()}
	if snap.LastError != nil {
		attrs = append(attrs, "err", snap.LastError.Error())
	}
	if now == backends.NodeDown {
		attrs = append(attrs, "reason", snap.Reason.String())
		if !snap.EjectedUntil.IsZero() {
			attrs = append(attrs, "until", snap.EjectedUntil.Format(time.RFC3339Nano))
		}
	}
	p.log.Info("nsq node state changed", attrs...)
	if now == backends.NodeDown {
		// The producer's connection is suspect: a fresh one is dialled
		// when the node takes sends again.
		n.stale.Store(true)
		if o, ok := p.cfg.Observer.(EjectionObserver); ok && old != backends.NodeDown {
			o.NodeOut(n.cfg.Name, snap.Reason.String())
		}
	}
	if now == backends.NodeUp {
		for _, s := range subs {
			s.kickConnect()
		}
	}
}

// dataFailure feeds a failed send on n to its data-path signal, and ejects
// n when the signal calls for it and the ejection cap allows it: no
// ejection once Eject.MaxEjected(nodes) nodes are out already (for either
// signal), and never of the last usable node (with nowhere else to send,
// ejecting it would only turn a slow moment into an outage).
func (p *Pool) dataFailure(n *node, err error) {
	if lag, stalled := p.stalledDuring(err); stalled {
		p.log.Warn("nsq send timeout not counted against the node: the gateway itself stalled",
			"node", n.cfg.Name, "stall", lag)
		return
	}
	if !n.mon.DataFailure() {
		return
	}
	p.mu.Lock()
	if n.removed {
		p.mu.Unlock()
		return
	}
	if reason := p.ejectCapLocked(n); reason != "" {
		p.mu.Unlock()
		p.log.Warn("nsq node not ejected", "node", n.cfg.Name, "why", reason, "err", err)
		if o, ok := p.cfg.Observer.(EjectionObserver); ok {
			o.EjectionCapped(n.cfg.Name)
		}
		return
	}
	if _, ejected := n.mon.Eject(err); ejected {
		now := time.Now()
		n.setHealthLocked(backends.NodeDown, now) // until the monitor's own report arrives
		n.snap.LastError = err
		p.refreshLocked(now)
	}
	p.mu.Unlock()
}

// ejectCapLocked tells why n may not be ejected now ("" if it may).
// Callers hold p.mu.
func (p *Pool) ejectCapLocked(n *node) string {
	now := time.Now()
	out, usable := 0, 0
	for _, m := range p.nodes {
		if m == n {
			continue
		}
		if m.health == backends.NodeDown || m.mon.Snapshot().EjectedUntil.After(now) {
			out++
		}
		if m.usable() {
			usable++
		}
	}
	if usable == 0 {
		return "last usable node"
	}
	if limit := p.cfg.Eject.MaxEjected(len(p.nodes)); out+1 > limit {
		return fmt.Sprintf("max ejection share: %d of %d nodes out already", out, len(p.nodes))
	}
	return ""
}

func (p *Pool) subsLocked() []*subscription {
	subs := make([]*subscription, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	return subs
}

// refreshLocked recomputes every node's reported state and Active flag and
// sends an event to the watchers for each node whose view changed.
// Callers hold p.mu (write).
func (p *Pool) refreshLocked(now time.Time) {
	for _, g := range p.groups {
		a := g.active(now, p.cfg.FailbackHold)
		g.current = a
		for _, m := range g.members {
			st := m.reportedState()
			isActive := m == a
			reason, _ := m.outReasonLocked(now)
			if st == m.reported && isActive == m.active && reason == m.reportedReason {
				continue
			}
			m.reportedReason = reason
			prev := m.reported
			if st != m.reported {
				m.reported = st
				m.reportedSince = m.healthSince
				if st == backends.NodeDraining || prev == backends.NodeDraining {
					m.reportedSince = now
				}
			}
			if isActive != m.active {
				m.active = isActive
				if isActive {
					p.log.Info("nsq node active", "node", m.cfg.Name, "group", g.name)
				}
			}
			ev := backends.NodeEvent{Node: p.statusLocked(m), Previous: prev}
			for w := range p.watchers {
				w.push(ev)
			}
		}
	}
}

// housekeeping re-evaluates Active flags as failback holds expire, so
// watchers see a failback when it happens, and pokes subscriptions to
// reconnect lost nodes once per check interval.
func (p *Pool) housekeeping() {
	defer p.wg.Done()
	tick := clampDuration(p.cfg.FailbackHold/20, 10*time.Millisecond, 250*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastConnect, lastEvict := time.Now(), time.Now()
	for {
		select {
		case now := <-t.C:
			if now.Sub(lastEvict) >= time.Second {
				lastEvict = now
				p.acked.evict(now)
			}
			p.mu.Lock()
			p.refreshLocked(now)
			var subs []*subscription
			if now.Sub(lastConnect) >= p.cfg.Check.Interval {
				lastConnect = now
				subs = p.subsLocked()
			}
			p.mu.Unlock()
			for _, s := range subs {
				s.kickConnect()
			}
		case <-p.ctx.Done():
			return
		}
	}
}

// statusLocked returns n's NodeStatus. Callers hold p.mu.
//
// The last check's time, latency, error and the node's depth come from the
// monitor's current snapshot (a copy under its own lock, no I/O), not from
// the snapshot recorded at the last state change: a node that stays Up
// shows fresh check data on every call. The state is the pool's own (it
// also reflects ejections by failed sends).
func (p *Pool) statusLocked(n *node) backends.NodeStatus {
	live := n.mon.Snapshot()
	if live.LastCheck.Before(n.snap.LastCheck) {
		live = n.snap // a monitor never goes back; keep the newer view
	}
	lastErr := live.LastError
	if lastErr == nil && n.health == backends.NodeDown {
		lastErr = n.snap.LastError // the ejection's error until a check fails too
	}
	st := backends.NodeStatus{
		Name:         n.cfg.Name,
		TCPAddr:      n.cfg.TCPAddr,
		HTTPAddr:     n.cfg.HTTPAddr,
		Group:        n.group.name,
		Priority:     n.priority,
		State:        n.reported,
		Since:        n.reportedSince,
		LastCheck:    live.LastCheck,
		CheckLatency: live.Latency,
		Depth:        live.Stats.Depth,
		InFlight:     live.Stats.InFlight,
		Active:       n.active,
	}
	if lastErr != nil {
		st.LastError = lastErr.Error()
	}
	st.Ejections = live.Ejections
	st.OutReason, st.OutUntil = n.outReasonLocked(time.Now())
	return st
}

// Nodes returns a snapshot of every node, in group order and, within a
// group, in priority order.
func (p *Pool) Nodes() []backends.NodeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(time.Now())
	var out []backends.NodeStatus
	for _, g := range p.groups {
		for _, m := range g.members {
			out = append(out, p.statusLocked(m))
		}
	}
	return out
}

// SetDraining drains (true) or undrains (false) the named node: a drained
// node takes no new sends, while subscriptions keep reading it. It returns
// the node's status after the change, or backends.ErrNotFound.
func (p *Pool) SetDraining(name string, draining bool) (backends.NodeStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.nodes[name]
	if !ok {
		return backends.NodeStatus{}, fmt.Errorf("nsq: node %q: %w", name, backends.ErrNotFound)
	}
	if n.draining != draining {
		n.draining = draining
		p.log.Info("nsq node draining changed", "node", name, "draining", draining)
	}
	p.refreshLocked(time.Now())
	return p.statusLocked(n), nil
}

// Writable reports whether some node can take sends now.
func (p *Pool) Writable() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	for _, n := range p.nodes {
		if n.usable() {
			return true
		}
	}
	return false
}

// errClosed wraps backends.ErrClosed.
var errClosed = fmt.Errorf("nsq: pool: %w", backends.ErrClosed)

// ErrRejected marks a request that nsqd refused as invalid (a bad topic
// name, an empty or oversized body). It is not retried on other nodes and
// does not count against the node's health. The service validates requests
// so that this should not happen. It wraps backends.ErrRejected.
var ErrRejected = fmt.Errorf("nsq: request rejected by nsqd: %w", backends.ErrRejected)
