package nsq

import (
	"sync"
	"sync/atomic"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
)

// group is an ordered list of members; members[0] is the primary.
type group struct {
	name    string
	members []*node
	current *node // the active member as last recorded; guarded by Pool.mu
}

// node is one nsqd of the pool: its producer, its monitor and the sender
// goroutine that feeds the producer.
type node struct {
	cfg      NodeConfig
	group    *group
	priority int

	// producer is owned by the sender goroutine, which replaces it after
	// its connection was lost: a go-nsq Producer that reconnects races with
	// its own exiting router goroutine (a data race in go-nsq 1.1.0), so we
	// use a fresh Producer per connection instead.
	producer *gonsq.Producer
	newProd  func() (*gonsq.Producer, error)
	// stale is set when the producer's connection was lost (its router
	// exited, a command failed with a connection error, or the node went
	// down); the sender replaces the producer before the next publish.
	stale atomic.Bool
	mon   *health.Monitor
	// reqs feeds delayed sends (DPUBs, not coalesced) to the sender
	// goroutine. Unbuffered: a caller whose attempt times out while the
	// sender is stuck (dialling a frozen node) simply gives up, and nothing
	// is queued behind a dead node.
	reqs chan *pubReq
	stop chan struct{} // closed when the node leaves the pool
	// stopOnce closes stop: Close and discovery's removeNode can both stop
	// a node (Close lists it just before discovery takes it out).
	stopOnce sync.Once
	done     chan struct{} // closed when the sender goroutine has exited

	// Coalesced sends (coalesce.go). kick (buffered 1) wakes the sender;
	// results receives the producer's transactions of coalesced MPUBs
	// (buffered maxOutstanding, so go-nsq never blocks on it).
	kick    chan struct{}
	results chan *gonsq.ProducerTransaction
	mpubs   atomic.Int64 // coalesced commands written, for benchmarks
	// lat keeps the node's recent answer times, for the adaptive attempt
	// timeout.
	lat latencyWindow
	// Guarded by mu, which is never held across I/O.
	mu          sync.Mutex
	pending     map[string][]*cbatch // per topic, batches not yet written
	order       []string             // topics with pending batches, oldest first
	busy        map[string]bool      // topics with an MPUB outstanding
	ready       []*cbatch            // takeReady's result, reused by the sender
	outstanding int
	stopped     bool

	// Guarded by Pool.mu.
	health      backends.NodeState // from the monitor (or a local ejection)
	healthSince time.Time
	// downc is closed while the node is Down: attempts waiting on the node
	// watch it, to move elsewhere at once rather than wait out their
	// timeout. A new one is made when the node comes back.
	downc    chan struct{}
	upSince  time.Time // when it last came Up; for the failback hold
	draining bool
	snap     health.Snapshot
	// What Watch last reported, to emit events only on change.
	reported      backends.NodeState
	reportedSince time.Time
	// reportedReason is the OutReason Watch last reported.
	reportedReason backends.OutReason
	active         bool
	removed        bool
	discovered     bool // joined through nsqlookupd; may leave
}

// pubReq is one attempt of a Send on one node.
type pubReq struct {
	topic  string
	bodies [][]byte
	delay  time.Duration
	// done receives one transaction per nsqd command: one for a PUB or
	// MPUB, one per message for DPUBs. Buffered to that count, so neither
	// the sender nor go-nsq ever blocks on a caller that gave up.
	done chan *gonsq.ProducerTransaction
}

// commands returns how many nsqd commands r takes.
func (r *pubReq) commands() int {
	if r.delay > 0 {
		return len(r.bodies)
	}
	return 1
}

// sendLoop is the node's sender goroutine. go-nsq's async publish calls
// block while the producer dials (up to DialTimeout plus readTimeout on a
// frozen node) and while its router writes; running them here lets callers
// give up on their deadline instead of blocking with them. After every
// event it writes what is ready of the coalesced queue.
func (n *node) sendLoop() {
	defer close(n.done)
	defer func() { n.producer.Stop() }()
	for {
		select {
		case r := <-n.reqs:
			if n.stale.Swap(false) {
				n.replaceProducer()
			}
			n.publish(r)
		case <-n.kick:
		case t := <-n.results:
			n.complete(t.Args[0].(*cbatch), t.Error)
		case <-n.stop:
			n.failPending(errNodeGone)
			return
		}
		for i, b := range n.takeReady() {
			n.ready[i] = nil
			n.write(b)
		}
	}
}

// replaceProducer stops the producer (its router has exited or will soon)
// and makes a new one, which connects on the next publish.
func (n *node) replaceProducer() {
	n.producer.Stop()
	if p, err := n.newProd(); err == nil {
		n.producer = p
	}
}

// publish hands r's commands to the producer. A command that cannot be
// started reports its error on r.done, as go-nsq would, so r.done always
// receives exactly r.commands() results.
func (n *node) publish(r *pubReq) {
	var err error
	sent := 0
	switch {
	case r.delay > 0:
		// nsqd has no deferred MPUB: one DPUB per message, pipelined.
		for i, b := range r.bodies {
			if i > 0 && n.stale.Load() {
				err = gonsq.ErrNotConnected // the connection closed under the run
				break
			}
			if err = n.producer.DeferredPublishAsync(r.topic, r.delay, b, r.done); err != nil {
				break
			}
			sent++
		}
	case len(r.bodies) == 1:
		if err = n.producer.PublishAsync(r.topic, r.bodies[0], r.done); err == nil {
			sent++
		}
	default:
		if err = n.producer.MultiPublishAsync(r.topic, r.bodies, r.done); err == nil {
			sent++
		}
	}
	for ; sent < r.commands(); sent++ {
		r.done <- &gonsq.ProducerTransaction{Error: err}
	}
}

// setHealthLocked records n's state from either signal, and closes or
// renews downc. Callers hold Pool.mu.
func (n *node) setHealthLocked(st backends.NodeState, since time.Time) {
	n.health, n.healthSince = st, since
	if st == backends.NodeUp {
		n.upSince = since
	}
	select {
	case <-n.downc:
		if st != backends.NodeDown {
			n.downc = make(chan struct{})
		}
	default:
		if st == backends.NodeDown {
			close(n.downc)
		}
	}
}

// outReasonLocked says why n takes no new sends at now, and until when
// for a data-path ejection. Callers hold Pool.mu.
func (n *node) outReasonLocked(now time.Time) (backends.OutReason, time.Time) {
	if n.draining {
		return backends.OutDrain, time.Time{}
	}
	if n.mon != nil {
		if until := n.mon.Snapshot().EjectedUntil; until.After(now) {
			return backends.OutDataPath, until
		}
	}
	if n.health == backends.NodeDown {
		return backends.OutHealthCheck, time.Time{}
	}
	return backends.OutNone, time.Time{}
}

// downSignal returns the channel that is closed while n is Down.
func (p *Pool) downSignal(n *node) <-chan struct{} {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return n.downc
}

// usable reports whether n may take new sends. Unknown counts as usable
// until a check or a send says otherwise. Callers hold Pool.mu.
func (n *node) usable() bool {
	return !n.removed && !n.draining && (n.health == backends.NodeUp || n.health == backends.NodeUnknown)
}

// reportedState is the state operators see: Draining while otherwise Up.
func (n *node) reportedState() backends.NodeState {
	if n.draining && n.health == backends.NodeUp {
		return backends.NodeDraining
	}
	return n.health
}

// active returns g's active member at now, or nil. The member active
// until now (g.current) keeps the group while it is usable, unless a
// higher-priority member has been Up for at least hold: that is the
// failback, and the hold keeps a flapping primary from taking the traffic
// back each time it answers. When the current member is not usable, the
// group fails over at once to its highest-priority usable Up member (its
// uptime does not matter), else to its highest-priority Unknown one. So a
// fresh pool starts on the primaries, and after a total outage the first
// member back takes the traffic. Callers hold Pool.mu.
func (g *group) active(now time.Time, hold time.Duration) *node {
	cur := g.current
	if cur != nil && cur.usable() && cur.health == backends.NodeUp {
		for _, m := range g.members {
			if m == cur {
				break
			}
			if m.usable() && m.health == backends.NodeUp && now.Sub(m.upSince) >= hold {
				return m
			}
		}
		return cur
	}
	var unknown *node
	for _, m := range g.members {
		if !m.usable() {
			continue
		}
		if m.health == backends.NodeUp {
			return m
		}
		if unknown == nil {
			unknown = m
		}
	}
	return unknown
}
