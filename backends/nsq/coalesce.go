package nsq

import (
	"errors"
	"sync"

	gonsq "github.com/nsqio/go-nsq"
)

// Coalesced sends (group commit). Attempts without delay to one node are
// queued per topic; the node's sender writes everything queued for a topic
// as one MPUB (one PUB for a single body) as soon as no MPUB of that topic
// is outstanding on the node. Attempts that arrive while one is outstanding
// ride the next MPUB, so batches grow with the load and a lone caller waits
// for no timer. Every caller gets the result of the MPUB that carried its
// bodies: all succeed or all fail together, and each retries on its own as
// before. A caller that gives up before its bodies were taken is removed
// from the queue (nothing is written for it); after, its outcome is unknown.
const (
	// maxCoalesceMessages and maxCoalesceBytes bound one coalesced MPUB
	// (bytes counted as nsqd counts an MPUB body), well below nsqd's
	// default --max-body-size of 5 MiB; a single attempt larger than that
	// is written alone.
	maxCoalesceMessages = 1000
	maxCoalesceBytes    = 1 << 20
	// maxOutstanding bounds the MPUBs outstanding on one node (one per
	// topic); it sizes the results channel, which go-nsq must never block
	// on.
	maxOutstanding = 64
)

// waiter is one attempt queued on a node.
type waiter struct {
	bodies [][]byte
	size   int        // MPUB bytes of bodies
	done   chan error // buffered 1: the sender never blocks on it
	alone  bool       // must not share an MPUB (a retry after a shared rejection)
	// Guarded by node.mu.
	taken     bool // in a written (or failed) MPUB
	cancelled bool // gave up before it was taken
}

// waiters and batches are reused: a waiter once its caller has read its
// result (never one whose caller gave up: the sender may still answer it),
// a batch once its result was handed out.
var (
	waiterPool = sync.Pool{New: func() any { return &waiter{done: make(chan error, 1)} }}
	batchPool  = sync.Pool{New: func() any { return new(cbatch) }}
)

// newWaiter returns a waiter for bodies.
func newWaiter(bodies [][]byte, alone bool) *waiter {
	w := waiterPool.Get().(*waiter)
	w.bodies, w.size, w.alone = bodies, mpubSize(bodies), alone
	return w
}

// release returns w, whose result was read, to the pool.
func (w *waiter) release() {
	w.bodies, w.taken, w.cancelled = nil, false, false
	waiterPool.Put(w)
}

// cbatch is what one MPUB carries.
type cbatch struct {
	topic   string
	waiters []*waiter
	msgs    int
	bytes   int
	alone   bool
}

// mpubSize is what bodies add to an MPUB body: a size and the body each.
func mpubSize(bodies [][]byte) int {
	n := 0
	for _, b := range bodies {
		n += 4 + len(b)
	}
	return n
}

// enqueue queues w for topic on n and wakes the sender. It fails with
// errNodeGone once the node left the pool.
func (n *node) enqueue(topic string, w *waiter) error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return errNodeGone
	}
	q := n.pending[topic]
	var b *cbatch
	if len(q) > 0 {
		last := q[len(q)-1]
		if !w.alone && !last.alone && last.msgs+len(w.bodies) <= maxCoalesceMessages && last.bytes+w.size <= maxCoalesceBytes {
			b = last
		}
	}
	if b == nil {
		b = batchPool.Get().(*cbatch)
		b.topic, b.alone, b.bytes, b.msgs = topic, w.alone, 4, 0
		if len(q) == 0 {
			n.order = append(n.order, topic)
		}
		n.pending[topic] = append(q, b)
	}
	b.waiters = append(b.waiters, w)
	b.msgs += len(w.bodies)
	b.bytes += w.size
	n.mu.Unlock()
	wake(n.kick)
	return nil
}

// cancel removes w from its batch if it was not taken yet, so nothing is
// written for it. It reports whether w was taken (outcome unknown).
func (n *node) cancel(w *waiter) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !w.taken {
		w.cancelled = true
	}
	return w.taken
}

// takeReady removes from the queue the first batch of every topic that has
// no MPUB outstanding (up to maxOutstanding in all) and marks them
// outstanding. Cancelled waiters are dropped; batches left empty are not
// returned.
func (n *node) takeReady() []*cbatch {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.ready[:0]
	kept := n.order[:0]
	for _, topic := range n.order {
		q := n.pending[topic]
		for len(q) > 0 && !n.busy[topic] && n.outstanding < maxOutstanding {
			b := q[0]
			q[0] = nil
			q = q[1:]
			live := b.waiters[:0]
			for _, w := range b.waiters {
				if !w.cancelled {
					w.taken = true
					live = append(live, w)
				}
			}
			b.waiters = live
			if len(live) == 0 {
				putBatch(b)
				continue
			}
			n.busy[topic] = true
			n.outstanding++
			out = append(out, b)
		}
		if len(q) == 0 {
			delete(n.pending, topic)
		} else {
			n.pending[topic] = q
			kept = append(kept, topic)
		}
	}
	clear(n.order[len(kept):])
	n.order = kept
	n.ready = out
	return out
}

// putBatch returns b, which nobody references any more, to the pool.
func putBatch(b *cbatch) {
	clear(b.waiters)
	b.waiters = b.waiters[:0]
	b.topic = ""
	batchPool.Put(b)
}

// write starts b's MPUB (PUB for one body). A command that cannot be
// started completes b at once with its error.
func (n *node) write(b *cbatch) {
	bodies := b.waiters[0].bodies
	if len(b.waiters) > 1 {
		bodies = make([][]byte, 0, b.msgs)
		for _, w := range b.waiters {
			bodies = append(bodies, w.bodies...)
		}
	}
	if n.stale.Swap(false) {
		n.replaceProducer()
	}
	n.mpubs.Add(1)
	var err error
	if len(bodies) == 1 {
		err = n.producer.PublishAsync(b.topic, bodies[0], n.results, b)
	} else {
		err = n.producer.MultiPublishAsync(b.topic, bodies, n.results, b)
	}
	if err != nil {
		n.complete(b, err)
	}
}

// complete hands err (nil: written) to every waiter of b and frees its
// topic for the next MPUB.
func (n *node) complete(b *cbatch, err error) {
	n.mu.Lock()
	delete(n.busy, b.topic)
	n.outstanding--
	n.mu.Unlock()
	if err != nil {
		n.stale.Store(true) // the command may have cost the connection
	}
	if err != nil && len(b.waiters) > 1 && isRejection(err) {
		// nsqd refused the merged MPUB (its body limit may be below ours):
		// each caller retries alone, so only a request at fault is refused.
		err = errSharedRejection{err}
	}
	for _, w := range b.waiters {
		w.done <- err
	}
	putBatch(b)
}

// failPending fails every queued waiter with err and refuses new ones
// (the node left the pool).
func (n *node) failPending(err error) {
	n.mu.Lock()
	n.stopped = true
	var ws []*waiter
	for _, q := range n.pending {
		for _, b := range q {
			for _, w := range b.waiters {
				if !w.cancelled {
					w.taken = true
					ws = append(ws, w)
				}
			}
		}
	}
	clear(n.pending)
	n.order = nil
	n.mu.Unlock()
	for _, w := range ws {
		w.done <- err
	}
}

// errSharedRejection is nsqd's rejection of an MPUB that carried several
// callers' bodies; the callers retry alone on the same node.
type errSharedRejection struct{ err error }

func (e errSharedRejection) Error() string { return "nsq: coalesced MPUB rejected: " + e.err.Error() }
func (e errSharedRejection) Unwrap() error { return e.err }

// isRejection reports whether nsqd refused the request itself.
func isRejection(err error) bool {
	retry, _ := classify(err)
	return !retry && !errors.Is(err, gonsq.ErrStopped)
}
