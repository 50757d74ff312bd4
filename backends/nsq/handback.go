// Hand-back of a subscription's deliveries by its loop: release of a lost
// connection's or departed node's deliveries, and expiry past the ack deadline.

package nsq

import (
	"math/rand/v2"
	"time"

	"github.com/qgate/qgate/backends/nsq/envelope"
)

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
		// The message is matched by internal/chaos/logcount.go; keep it.
		s.log.Info("nsq released deliveries of a down node", "count", len(rel), "why", "connection lost or node left")
	}
	for _, r := range rel {
		r.d.msg.RequeueWithoutBackoff(min(r.delay, maxRequeueDelay))
	}
}

// expire settles handed-out deliveries whose ack deadline has passed (and
// hands them back at once, or after the retry policy's backoff for their
// attempt), and keeps queued ones alive: a message waiting in the queue for Receive has
// not been seen by the client, so its deadline has not started; a TOUCH
// stops nsqd from timing it out (and counting another attempt) meanwhile.
func (s *subscription) expire(now time.Time) {
	s.mu.Lock()
	type expiry struct {
		d     *delivery
		delay time.Duration
	}
	var exp []expiry
	var touch []*delivery
	var holds []envelope.Hold
	for d := range s.held {
		if d.settled {
			continue
		}
		switch {
		case d.handed && now.After(d.deadline), !d.handed && now.After(d.nsqDeadline):
			var delay time.Duration
			if d.handed {
				delay = d.backoff
			}
			if d.rid != "" && (d.holdSent || delay > 0) {
				// Ends its hold, or moves it to the redelivery: its other
				// copies must not come back before it.
				holds = append(holds, envelope.Hold{ID: d.rid, Until: now.Add(delay), Since: d.arrived})
			}
			exp = append(exp, expiry{d, delay})
			for _, x := range s.settleLocked(d) {
				exp = append(exp, expiry{x, delay})
			}
		case !d.handed && d.nsqDeadline.Sub(now) < s.msgTimeout/2:
			d.nsqDeadline = now.Add(s.msgTimeout)
			touch = append(touch, d)
		case d.handed && !d.holdSent && s.heldLong(d, now):
			d.holdSent = true
			holds = append(holds, envelope.Hold{ID: d.rid, Until: d.holdEnd(), Since: d.arrived})
		}
	}
	s.mu.Unlock()
	for _, h := range holds {
		s.p.noteHeld(s.opts.Topic, s.opts.Channel, h.ID, h.Until, h.Since, now)
	}
	for _, e := range exp {
		e.d.msg.RequeueWithoutBackoff(e.delay)
	}
	for _, d := range touch {
		d.msg.Touch()
	}
}

// retryDelay is how long a message whose delivery of attempt failed waits
// before it is redelivered: the subscription's retry policy's backoff, or
// 0 without one.
func (s *subscription) retryDelay(attempt int) time.Duration {
	if s.opts.Retry == nil {
		return 0
	}
	return min(s.opts.Retry.Backoff(attempt, rand.Float64()), maxRequeueDelay)
}
