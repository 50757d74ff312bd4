// Long delays: the timer topic and its mover.

package nsq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
)

// Timings of the timer's mover.
const (
	// timerInFlight bounds the due messages the mover holds per node.
	timerInFlight = 256
	// timerWorkers bounds the writes the mover has outstanding.
	timerWorkers = 64
	// timerAckDeadline: a mover that dies holding a due message leaves it
	// to nsqd, which gives it to another instance's mover after this.
	timerAckDeadline = 10 * time.Second
	// timerRetry spaces out retries of a due message whose write failed.
	timerRetry = 2 * time.Second
)

// MaxDelay returns the longest SendOptions.Delay the pool takes:
// MaxLongDelay with a TimerTopic, else TimerHop.
func (p *Pool) MaxDelay() time.Duration {
	if p.cfg.TimerTopic != "" {
		return MaxLongDelay
	}
	return p.cfg.TimerHop
}

// long reports whether a send with delay waits on the timer topic.
func (p *Pool) long(delay time.Duration) bool { return delay > p.cfg.TimerHop }

// checkDelay refuses a delay the pool cannot keep.
func (p *Pool) checkDelay(topic string, delay time.Duration) error {
	if delay > p.MaxDelay() {
		return fmt.Errorf("nsq: send to %s: delay %v: longer than %v: %w", topic, delay, p.MaxDelay(), ErrRejected)
	}
	return nil
}

// toTimer turns the envelopes of a long-delayed send to topic into timer
// messages (see timerMover).
func (p *Pool) toTimer(topic string, bodies [][]byte) [][]byte {
	for i, b := range bodies {
		bodies[i] = envelope.AppendTimerTopic(b, topic)
	}
	return bodies
}

// timerMover reads the timer topic on TimerChannel, shared by every qgate
// instance. A timer message is written without deferral (on disk, with
// nsqd's --mem-queue-size=0); the subscription defers it (REQ) in steps of
// at most TimerHop until its not_before, as it does any early message, so
// the mover sees it only when it is due. The mover then writes its
// envelope to its topic, on the node that held it (so the copies of a
// replicated send stay on distinct nodes), and only then finishes it: a
// crash between the two writes the message twice (delivered twice, unless
// it is deduplicated: replicated or with a client-chosen id), never not
// at all. While deferred, a timer message is in nsqd's memory, as any
// deferred message: a graceful exit of nsqd writes it to disk (it comes
// back at once and is deferred again), a SIGKILL loses that node's copy.
type timerMover struct {
	p      *Pool
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *Pool) startTimer() {
	ctx, cancel := context.WithCancel(p.ctx)
	t := &timerMover{p: p, cancel: cancel, done: make(chan struct{})}
	p.timer = t
	go t.run(ctx)
}

// close stops the mover: writes in progress end, unfinished messages are
// handed back. It runs before the pool closes its subscriptions.
func (t *timerMover) close() {
	t.cancel()
	<-t.done
}

func (t *timerMover) run(ctx context.Context) {
	defer close(t.done)
	p := t.p
	s, err := p.subscribe(ctx, backends.SubscribeOptions{
		Topic: p.cfg.TimerTopic, Channel: TimerChannel, MaxInFlight: timerInFlight, AckDeadline: timerAckDeadline,
	}, true)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Error("nsq timer topic not read: messages with long delays are not delivered by this instance",
				"topic", p.cfg.TimerTopic, "err", err)
		}
		return
	}
	defer s.Close()
	sem := make(chan struct{}, timerWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		d, err := s.Receive(ctx)
		if err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			_ = d.Acker.Nack(0)
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// Not ctx: a write begun is finished (its attempt budget
			// bounds it), so that closing does not leave an unknown
			// outcome behind, written again as a duplicate.
			t.move(p.ctx, d.Acker.(*delivery))
		}()
	}
}

// move writes a due timer message to its topic on the node that held it,
// then finishes it; on failure it hands it back for a retry.
func (t *timerMover) move(ctx context.Context, d *delivery) {
	p := t.p
	env, topic, ok := envelope.SplitTimer(d.msg.Body)
	if !ok {
		p.log.Warn("nsq timer message not understood; dropped", "topic", p.cfg.TimerTopic, "node", d.msg.NSQDAddress)
		_ = d.Ack()
		return
	}
	n := p.nodeByTCP(d.msg.NSQDAddress)
	if n == nil {
		_ = d.Nack(timerRetry) // the node left; its subscription hands this back anyway
		return
	}
	err := p.attemptWatch(ctx, n, topic, [][]byte{env}, 0, p.attemptTimeout(n), nil)
	p.cfg.Observer.SendAttempt(n.cfg.Name, topic, 1, err)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, errClosed) {
			p.log.Warn("nsq timer message not written to its topic; retrying", "topic", topic, "node", n.cfg.Name,
				"in", timerRetry, "err", err)
		}
		_ = d.Nack(timerRetry)
		return
	}
	if err := d.Ack(); err != nil {
		// Handed back meanwhile (its node's connection was lost): the
		// message will be written again, a duplicate.
		p.log.Debug("nsq timer message written but not finished", "topic", topic, "node", n.cfg.Name, "err", err)
	}
}

// nodeByTCP returns the pool's node at TCP address addr, or nil.
func (p *Pool) nodeByTCP(addr string) *node {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, n := range p.nodes {
		if n.cfg.TCPAddr == addr && !n.removed {
			return n
		}
	}
	return nil
}
