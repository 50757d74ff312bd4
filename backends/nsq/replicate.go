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
// groups that hold a copy or are writing one.
type replicaSet struct {
	mu   sync.Mutex
	busy map[*group]bool
}

// sendReplicated writes bodies to replicas nodes in distinct groups at
// once, and succeeds when every copy was acknowledged. A copy whose attempt
// fails (and may be retried) moves to a node of a group that holds no copy
// and is not writing one; when no such node is left, or fewer groups than
// replicas have a usable node to begin with, the send fails with
// backends.ErrUnavailable: some copies may have been written, none may be
// assumed. nsqd's rejection of the request fails it at once (ErrRejected).
// Each copy but the first runs in a goroutine of its own; all have ended
// when sendReplicated returns.
func (p *Pool) sendReplicated(ctx context.Context, topic string, bodies [][]byte, delay time.Duration, replicas int) error {
	start := p.nextStart()
	first, err := p.pickGroups(start, replicas)
	if err != nil {
		return err
	}
	if len(first) < replicas {
		return fmt.Errorf("nsq: send to %s: %d replicas asked, %d groups have a usable node: %w",
			topic, replicas, len(first), backends.ErrUnavailable)
	}
	rs := &replicaSet{busy: make(map[*group]bool, replicas)}
	for _, n := range first {
		rs.busy[n.group] = true
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, replicas)
	for _, n := range first[1:] {
		go func() { errc <- p.sendCopy(cctx, topic, bodies, delay, n, rs, start) }()
	}
	errc <- p.sendCopy(cctx, topic, bodies, delay, first[0], rs, start)
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

// sendCopy writes one copy, starting on n, moving to another free group
// when an attempt fails.
func (p *Pool) sendCopy(ctx context.Context, topic string, bodies [][]byte, delay time.Duration, n *node, rs *replicaSet, start int) error {
	var tried []*node
	for {
		err := p.attempt(ctx, n, topic, bodies, delay, p.attemptTimeout(n))
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
		delete(rs.busy, n.group)
		next, perr := p.pick(start, tried, rs.busy)
		if next != nil {
			rs.busy[next.group] = true
		}
		rs.mu.Unlock()
		if perr != nil {
			return perr
		}
		if next == nil {
			return fmt.Errorf("nsq: send to %s: no group without a copy left for a replica: %w (last error: %s: %w)",
				topic, backends.ErrUnavailable, n.cfg.Name, err)
		}
		p.cfg.Observer.SendRetry(topic)
		p.log.Info("nsq replica moved", "topic", topic, "from", n.cfg.Name, "to", next.cfg.Name)
		n = next
	}
}

// pickGroups returns the active members of up to k groups, round-robin from
// start; fewer than k when fewer groups have a usable node.
func (p *Pool) pickGroups(start, k int) ([]*node, error) {
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
	if len(live) <= k {
		return live, nil
	}
	out := make([]*node, k)
	for i := range out {
		out[i] = live[(start+i)%len(live)]
	}
	return out, nil
}
