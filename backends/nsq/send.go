package nsq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
)

// errAttemptTimeout is the error of an attempt that exceeded its budget.
var errAttemptTimeout = errors.New("nsq: no answer within the attempt timeout")

// Send writes msgs to topic on one node: the active member of the next
// group in round-robin order. On a connection-level failure or an attempt
// timeout (which count against the node's data path) it retries on the
// next usable node, within ctx's deadline; when every usable node was tried
// and the last one only timed out, it waits for that one, alone. With opts.Replicas > 1 it writes a copy to that many
// nodes of distinct groups (see sendReplicated). See the package
// documentation for what an error means.
func (p *Pool) Send(ctx context.Context, topic string, msgs []*backends.Message, opts backends.SendOptions) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := p.checkDelay(topic, opts.Delay); err != nil {
		return err
	}
	if opts.Replicas > 1 {
		return p.sendReplicated(ctx, topic, msgs, opts.Delay, opts.Replicas)
	}
	bodies := encode(msgs, 1, opts.Delay, false, time.Time{})
	if p.long(opts.Delay) {
		return p.sendOnce(ctx, p.cfg.TimerTopic, p.toTimer(topic, bodies), 0)
	}
	return p.sendOnce(ctx, topic, bodies, opts.Delay)
}

// sendOnce writes bodies to one node, moving to the next usable node when
// an attempt fails (see Send).
func (p *Pool) sendOnce(ctx context.Context, topic string, bodies [][]byte, delay time.Duration) error {
	start := p.nextStart()
	var tried []*node
	var lastErr error
	var timedOut *node // the last node tried, if its attempt only timed out
	for {
		n, err := p.pick(start, tried, nil)
		if err != nil {
			return err
		}
		if n == nil && timedOut != nil && p.stillUsable(timedOut) {
			// Every other node failed or is out, and this one was only
			// slower than its adaptive timeout (a loaded moment): it is the
			// last node now, which gets the rest of the deadline.
			n, timedOut = timedOut, nil
			tried = slices.DeleteFunc(tried, func(m *node) bool { return m == n })
		}
		if n == nil {
			if lastErr == nil {
				return fmt.Errorf("nsq: send to %s: %w", topic, backends.ErrUnavailable)
			}
			return fmt.Errorf("nsq: send to %s: %w (last error: %w)", topic, backends.ErrUnavailable, lastErr)
		}
		tried = append(tried, n)
		// The attempt timeout exists to move on from a node that does not
		// answer. With nowhere to move on to, it would only eject the last
		// node over a slow moment (an fsync stall, a starved CPU) and fail
		// every Send until the node's next checks: wait for it instead,
		// within the call's deadline, even if it is marked Down meanwhile.
		if alt, _ := p.pick(start, tried, nil); alt == nil {
			err = p.attemptWatch(ctx, n, topic, bodies, delay, aloneAttemptTimeout, nil)
		} else {
			err = p.attempt(ctx, n, topic, bodies, delay, p.attemptTimeout(n))
		}
		p.cfg.Observer.SendAttempt(n.cfg.Name, topic, len(bodies), err)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			p.log.Warn("nsq send failed: deadline", "node", n.cfg.Name, "topic", topic, "err", err)
			return ctxErr
		}
		if errors.Is(err, errClosed) {
			return err
		}
		if rejected := p.failed(n, topic, err); rejected != nil {
			return rejected
		}
		p.cfg.Observer.SendRetry(topic)
		lastErr = fmt.Errorf("%s: %w", n.cfg.Name, err)
		timedOut = nil
		if errors.Is(err, errAttemptTimeout) {
			timedOut = n
		}
	}
}

// stillUsable reports whether n may still take sends.
func (p *Pool) stillUsable(n *node) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return n.usable()
}

// encode returns the envelopes of msgs. Copies of a replicated send carry
// the number of copies, and messages with a client-chosen id are marked
// so, so that subscriptions deduplicate them (and only them); standby
// copies are marked so and carry notBefore; every copy carries the
// message's expiry. A delayed
// message carries its due time (publish time + delay) as not_before, so
// that a subscription defers it again should nsqd deliver it early (nsqd
// drops a deferred message's timer when it writes it to disk).
func encode(msgs []*backends.Message, replicas int, delay time.Duration, standby bool, notBefore time.Time) [][]byte {
	bodies := make([][]byte, len(msgs))
	var e envelope.Message
	if replicas > 1 {
		e.Replicas = uint32(replicas)
	}
	e.Standby = standby
	for i, m := range msgs {
		e.ID, e.Attributes, e.PublishTime, e.Body = m.ID, m.Attributes, m.PublishTime, m.Body
		e.NotBefore = notBefore
		e.ClientID = m.ClientID
		e.ExpireAt = m.ExpireAt
		if !standby && delay > 0 {
			e.NotBefore = publishOrNow(m.PublishTime).Add(delay)
		}
		bodies[i] = envelope.Append(make([]byte, 0, envelope.Size(&e)), &e)
	}
	return bodies
}

func publishOrNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// failed handles a failed attempt on n that is not the caller's deadline
// or the pool's close: it marks the producer stale, logs, and ejects the
// node when classify says so. It returns the error for the caller when the
// request must not be retried (nsqd rejected it), else nil.
func (p *Pool) failed(n *node, topic string, err error) error {
	if !errors.Is(err, errAttemptTimeout) && !errors.Is(err, errNodeDown) {
		n.stale.Store(true) // a failed command may have closed the connection
	}
	retry, eject := classify(err)
	p.log.Warn("nsq send failed", "node", n.cfg.Name, "topic", topic, "err", err,
		"retry", retry, "eject", eject)
	if eject {
		p.dataFailure(n, err)
	}
	if !retry {
		return fmt.Errorf("nsq: send to %s on %s: %w: %w", topic, n.cfg.Name, ErrRejected, err)
	}
	return nil
}

// nextStart returns the round-robin position of a new Send.
func (p *Pool) nextStart() int {
	p.rrMu.Lock()
	defer p.rrMu.Unlock()
	p.rr++
	return int(p.rr)
}

// pick returns the node for the next attempt of a Send, skipping tried
// nodes and the groups in skip (may be nil): first the active member of a
// group, chosen round-robin (from start) among the groups whose active
// member is untried; then any other usable node, in group and priority
// order. nil means no node is left.
func (p *Pool) pick(start int, tried []*node, skip map[*group]bool) (*node, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, errClosed
	}
	return p.pickLocked(start, tried, skip), nil
}

// pickLocked is pick; callers hold p.mu (read).
func (p *Pool) pickLocked(start int, tried []*node, skip map[*group]bool) *node {
	now := time.Now()
	var live []*node
	for _, g := range p.groups {
		if skip[g] {
			continue
		}
		if a := g.active(now, p.cfg.FailbackHold); a != nil && !contains(tried, a) {
			live = append(live, a)
		}
	}
	if len(live) > 0 {
		return live[start%len(live)]
	}
	for i := range p.groups {
		g := p.groups[(start+i)%len(p.groups)]
		if skip[g] {
			continue
		}
		for _, m := range g.members {
			if m.usable() && !contains(tried, m) {
				return m
			}
		}
	}
	return nil
}

func contains(ns []*node, n *node) bool {
	for _, m := range ns {
		if m == n {
			return true
		}
	}
	return false
}

// aloneAttemptTimeout bounds an attempt on the only node a Send has left
// when the call itself has a longer deadline or none.
const aloneAttemptTimeout = 30 * time.Second

// attemptTimeout is the budget of an attempt on n: the adaptive timeout
// (attemptP99Multiple × n's recent p99) within [AttemptTimeoutMin,
// AttemptTimeout].
func (p *Pool) attemptTimeout(n *node) time.Duration {
	return n.lat.timeout(p.cfg.AttemptTimeoutMin, p.cfg.AttemptTimeout)
}

// attempt sends bodies on n within min(ctx's deadline, budget), and gives
// up at once (errNodeDown) if n is marked Down meanwhile: the caller moves
// elsewhere instead of waiting out the budget. A timed-out or abandoned
// attempt has an unknown outcome: its commands may still land. Without
// delay the bodies join n's coalesced queue for topic.
//
// The budget is also at most half of what is left of ctx's deadline (if
// that half is at least AttemptTimeoutMin): an
// attempt that may move on must leave the caller time to move on, or a node
// that stops answering turns every Send that meets it into a deadline error
// (and, ended by the caller's deadline rather than its own timeout, would
// not even count against the node).
func (p *Pool) attempt(ctx context.Context, n *node, topic string, bodies [][]byte, delay, budget time.Duration) error {
	if dl, ok := ctx.Deadline(); ok {
		// Not below AttemptTimeoutMin: a caller nearly out of time waits
		// for its deadline, which does not count against the node.
		if half := time.Until(dl) / 2; half < budget && half >= p.cfg.AttemptTimeoutMin {
			budget = half
		}
	}
	return p.attemptWatch(ctx, n, topic, bodies, delay, budget, p.downSignal(n))
}

// attemptWatch is attempt, giving up when down is closed (never if nil).
// A successful attempt feeds n's answer time to its adaptive timeout and
// its data-path signal.
func (p *Pool) attemptWatch(ctx context.Context, n *node, topic string, bodies [][]byte, delay, budget time.Duration, down <-chan struct{}) error {
	begin := time.Now()
	err := p.attemptOnce(ctx, n, topic, bodies, delay, budget, down)
	if err == nil {
		n.lat.add(time.Since(begin))
		n.mon.DataSuccess()
	}
	if err == errAttemptTimeout {
		return &attemptTimeoutError{begin: begin, budget: budget}
	}
	return err
}

func (p *Pool) attemptOnce(ctx context.Context, n *node, topic string, bodies [][]byte, delay, budget time.Duration, down <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if delay <= 0 {
		err := p.coalesced(ctx, n, topic, bodies, false, down)
		var shared errSharedRejection
		if errors.As(err, &shared) {
			err = p.coalesced(ctx, n, topic, bodies, true, down)
		}
		return err
	}
	r := &pubReq{topic: topic, bodies: bodies, delay: delay}
	r.done = make(chan *gonsq.ProducerTransaction, r.commands())
	select {
	case n.reqs <- r:
	case <-ctx.Done():
		return attemptErr(ctx)
	case <-down:
		return errNodeDown
	case <-n.stop:
		return errNodeGone
	case <-p.ctx.Done():
		return errClosed
	}
	var firstErr error
	for range r.commands() {
		select {
		case t := <-r.done:
			if t.Error != nil && firstErr == nil {
				firstErr = t.Error
			}
		case <-ctx.Done():
			return attemptErr(ctx)
		case <-down:
			return errNodeDown
		case <-p.ctx.Done():
			return errClosed
		}
	}
	return firstErr
}

// coalesced queues bodies on n (alone: in an MPUB of their own) and waits
// for the MPUB's result, ctx's end, the node's removal or the pool's close.
// A caller that gives up before its bodies were taken writes nothing.
func (p *Pool) coalesced(ctx context.Context, n *node, topic string, bodies [][]byte, alone bool, down <-chan struct{}) error {
	w := newWaiter(bodies, alone)
	if err := n.enqueue(topic, w); err != nil {
		w.release()
		return err
	}
	select {
	case err := <-w.done:
		w.release()
		return err
	case <-ctx.Done():
		n.cancel(w)
		return attemptErr(ctx)
	case <-down:
		n.cancel(w)
		return errNodeDown
	case <-n.stop:
		return errNodeGone
	case <-p.ctx.Done():
		return errClosed
	}
}

// attemptErr is the error of an attempt whose context ended.
func attemptErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return errAttemptTimeout
	}
	return ctx.Err()
}

// errNodeGone: the node left the pool during the attempt.
var errNodeGone = errors.New("nsq: node left the pool")

// errNodeDown: the node was marked Down during the attempt, which was
// abandoned to be retried elsewhere at once. It is not a data-path failure
// of its own (the node is out already).
var errNodeDown = errors.New("nsq: node marked down during the attempt")

// classify tells whether a failed attempt is worth retrying on another
// node, and whether it should eject the node (passive health check).
//
//   - nsqd refused the request itself (E_BAD_TOPIC, E_BAD_MESSAGE,
//     E_BAD_BODY, E_INVALID): the same request fails everywhere; neither.
//   - the connection closed under a pending command (go-nsq's
//     ErrNotConnected, also what a protocol error of another request on
//     the same connection causes) or the producer stopped: retry, but no
//     ejection; the next dial tells whether the node is really gone.
//   - the node left the pool or was marked Down during the attempt:
//     retry; it is out already.
//   - anything else (dial and I/O errors, E_PUB_FAILED from an exiting
//     nsqd, an attempt timeout): retry and eject.
func classify(err error) (retry, eject bool) {
	var pe gonsq.ErrProtocol
	if errors.As(err, &pe) {
		code, _, _ := strings.Cut(pe.Reason, " ")
		switch code {
		case "E_BAD_TOPIC", "E_BAD_MESSAGE", "E_BAD_BODY", "E_INVALID":
			return false, false
		}
		return true, true
	}
	if errors.Is(err, ErrRejected) {
		return false, false
	}
	if errors.Is(err, gonsq.ErrNotConnected) || errors.Is(err, gonsq.ErrStopped) ||
		errors.Is(err, errNodeGone) || errors.Is(err, errNodeDown) {
		return true, false
	}
	return true, true
}
