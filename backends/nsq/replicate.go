package nsq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/qgate/qgate/backends"
)

// replicaSet is the state shared by the copies of one replicated send: the
// nodes that hold a copy or are writing one.
type replicaSet struct {
	mu   sync.Mutex
	busy map[*node]bool
}

// UnderReplicatedObserver is an optional Observer method: an Observer that
// has it is told of every replicated send that found fewer usable nodes
// than copies asked for and wrote fewer (at least Config.MinReplicas).
type UnderReplicatedObserver interface {
	SendUnderReplicated(topic string, copies, want int)
}

// sendReplicated writes msgs to replicas distinct nodes at once, preferring
// nodes of distinct groups (in failover mode, one group, the active member
// and the next usable backup), and succeeds when every copy was
// acknowledged. The first copy is delivered as usual; the others are
// standbys (see encode and the package documentation): deliverable only
// StandbyDelay after the send, and then only if the message was not acked.
//
// A copy whose attempt fails (and may be retried) moves to a node that
// holds no copy, preferring a group that holds none; when no such node is
// left the send fails with backends.ErrUnavailable: some copies may have
// been written, none may be assumed. When fewer usable nodes than replicas
// exist to begin with, the send fails the same way, unless
// Config.MinReplicas allows fewer copies (one per usable node). nsqd's
// rejection of the request fails it at once (ErrRejected). Each copy but
// the first runs in a goroutine of its own; all have ended when
// sendReplicated returns.
func (p *Pool) sendReplicated(ctx context.Context, topic string, msgs []*backends.Message, delay time.Duration, replicas int) error {
	start := p.nextStart()
	first, err := p.pickReplicaNodes(start, replicas)
	if err != nil {
		return err
	}
	if len(first) < replicas {
		need := p.cfg.MinReplicas
		if need <= 0 || need > replicas {
			need = replicas
		}
		if len(first) < need || len(first) == 0 {
			return fmt.Errorf("nsq: send to %s: %d replicas asked (at least %d), %d nodes usable: %w",
				topic, replicas, need, len(first), backends.ErrUnavailable)
		}
		if o, ok := p.cfg.Observer.(UnderReplicatedObserver); ok {
			o.SendUnderReplicated(topic, len(first), replicas)
		}
		if len(first) == 1 {
			bodies := encode(msgs, 1, delay, false, time.Time{})
			if p.long(delay) {
				return p.sendOnce(ctx, p.cfg.TimerTopic, p.toTimer(topic, bodies), 0)
			}
			return p.sendOnce(ctx, topic, bodies, delay)
		}
		replicas = len(first)
	}
	now := time.Now()
	d := p.cfg.StandbyDelay
	primary := encode(msgs, replicas, delay, false, time.Time{})
	// Standbys are written without nsqd's deferral (in the coalesced MPUBs):
	// the subscription that first receives one defers it (REQ) until its
	// not_before. nsqd would lose a DPUB's timer anyway when it writes the
	// message to disk (--mem-queue-size=0). Their due times are staggered
	// by half the standby delay, so that no two copies surface at once
	// (then two gateways could each take one before either's hold reached
	// the other): a first copy that had to move is due at D/2 (its failed
	// attempt may have landed and be delivered at once), the standbys at D,
	// 1.5 D, ...
	moved := encode(msgs, replicas, 0, true, now.Add(delay+d/2))
	// A long delay: every copy waits on the timer topic (see
	// timerMover), written without deferral, until its not_before.
	long := p.long(delay)
	to, primaryDelay := topic, delay
	if long {
		to, primaryDelay = p.cfg.TimerTopic, 0
		primary, moved = p.toTimer(topic, primary), p.toTimer(topic, moved)
	}
	rs := &replicaSet{busy: make(map[*node]bool, replicas)}
	for _, n := range first {
		rs.busy[n] = true
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, replicas)
	for i, n := range first[1:] {
		standby := encode(msgs, replicas, 0, true, now.Add(delay+d+time.Duration(i)*d/2))
		if long {
			standby = p.toTimer(topic, standby)
		}
		go func() { errc <- p.sendCopy(cctx, to, standby, 0, nil, n, rs, start) }()
	}
	errc <- p.sendCopy(cctx, to, primary, primaryDelay, moved, first[0], rs, start)
	var firstErr error
	for range replicas {
		if err := <-errc; err != nil && firstErr == nil {
			firstErr = err
			cancel() // the send has failed; stop the other copies' retries
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return firstErr
}

// sendCopy writes one copy, starting on n, moving to another node without
// a copy when an attempt fails. When the first copy moves (moved non-nil),
// it is written as a standby (moved, without delay) on the next node: the
// failed attempt may still have landed, and two live first copies would be
// delivered twice; if it did not land, the standbys deliver the message
// after the standby delay.
func (p *Pool) sendCopy(ctx context.Context, topic string, bodies [][]byte, delay time.Duration, moved [][]byte, n *node, rs *replicaSet, start int) error {
	var tried []*node
	for {
		// As in sendOnce: the attempt timeout is there to move the copy on;
		// with no node left to move it to, it would only eject a node over
		// a slow moment and fail the send (under load, every node in turn):
		// wait for it instead, within the call's deadline.
		rs.mu.Lock()
		alt, _ := p.pickFree(start, append(tried[:len(tried):len(tried)], n), rs.busy)
		rs.mu.Unlock()
		var err error
		switch {
		case alt == nil:
			err = p.attemptWatch(ctx, n, topic, bodies, delay, aloneAttemptTimeout, nil)
		case !p.stillUsable(n): // taken in panic mode (pickReplicaNodes): it is Down
			err = p.attemptWatch(ctx, n, topic, bodies, delay, p.attemptTimeout(n), nil)
		default:
			err = p.attempt(ctx, n, topic, bodies, delay, p.attemptTimeout(n))
		}
		p.cfg.Observer.SendAttempt(n.cfg.Name, topic, len(bodies), err)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if errors.Is(err, errClosed) {
			return err
		}
		if rejected := p.failed(n, topic, err); rejected != nil {
			return rejected
		}
		tried = append(tried, n)
		rs.mu.Lock()
		delete(rs.busy, n)
		next, perr := p.pickFree(start, tried, rs.busy)
		if next != nil {
			rs.busy[next] = true
		}
		rs.mu.Unlock()
		if perr != nil {
			return perr
		}
		if next == nil {
			return fmt.Errorf("nsq: send to %s: no node without a copy left for a replica: %w (last error: %s: %w)",
				topic, backends.ErrUnavailable, n.cfg.Name, err)
		}
		p.cfg.Observer.SendRetry(topic)
		p.log.Info("nsq replica moved", "topic", topic, "from", n.cfg.Name, "to", next.cfg.Name)
		if moved != nil {
			bodies, delay, moved = moved, 0, nil
		}
		n = next
	}
}

// pickReplicaNodes returns up to k distinct usable nodes for the copies of
// a send: first the active members of distinct groups, round-robin from
// start; then, when fewer groups than k have one, other usable members in
// group and priority order (failover mode: the active member, then the
// next usable backup). Fewer than k when fewer nodes are usable.
func (p *Pool) pickReplicaNodes(start, k int) ([]*node, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, errClosed
	}
	now := time.Now()
	var live []*node
	for _, g := range p.groups {
		if a := g.active(now, p.cfg.FailbackHold); a != nil {
			live = append(live, a)
		}
	}
	out := make([]*node, 0, k)
	for i := 0; i < len(live) && len(out) < k; i++ {
		out = append(out, live[(start+i)%len(live)])
	}
	for i := 0; i < len(p.groups) && len(out) < k; i++ {
		for _, m := range p.groups[(start+i)%len(p.groups)].members {
			if len(out) < k && m.usable() && !contains(out, m) {
				out = append(out, m)
			}
		}
	}
	// Too few: take nodes out only for data-path failures whose checks
	// pass (Envoy's panic mode): a node ejected for timeouts while it was
	// merely slow is better than refusing every replicated send while
	// another node is dead (the ejection cap then keeps the dead one in
	// until its checks fail, and the slow one out).
	for i := 0; i < len(p.groups) && len(out) < k; i++ {
		for _, m := range p.groups[(start+i)%len(p.groups)].members {
			if len(out) < k && m.panicUsable() && !contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// panicUsable reports whether n is out only for data-path failures while
// its checks pass: usable for a replicated send that has too few nodes
// otherwise. Callers hold Pool.mu.
func (n *node) panicUsable() bool {
	if n.removed || n.draining || n.usable() || n.mon == nil {
		return false
	}
	snap := n.mon.Snapshot()
	return snap.Reason == backends.OutDataPath && snap.CheckState == backends.NodeUp
}

// pickFree returns a node for a copy whose attempt failed: one that is
// neither busy (holding or writing a copy) nor tried, preferring the
// active member of a group without a copy. nil when none is left.
func (p *Pool) pickFree(start int, tried []*node, busy map[*node]bool) (*node, error) {
	skip := make(map[*group]bool, len(busy))
	for n := range busy {
		skip[n.group] = true
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, errClosed
	}
	if n := p.pickLocked(start, tried, skip); n != nil {
		return n, nil
	}
	for _, ok := range []func(*node) bool{(*node).usable, (*node).panicUsable} {
		for i := range p.groups {
			for _, m := range p.groups[(start+i)%len(p.groups)].members {
				if ok(m) && !busy[m] && !contains(tried, m) {
					return m, nil
				}
			}
		}
	}
	return nil, nil
}
