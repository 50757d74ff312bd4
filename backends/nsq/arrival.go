// Arrival of a message at a subscription (HandleMessage): not_before and
// standby deferral, expiry, acked and held copies, dead-letter hand-off,
// queueing.

package nsq

import (
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
)

// HandleMessage is the go-nsq handler: it queues the message for Receive
// (or for the dead-letter goroutine) and returns at once; responses are
// sent when the delivery is settled.
func (s *subscription) HandleMessage(m *gonsq.Message) error {
	m.DisableAutoResponse()
	s.lastArrival.Store(time.Now().UnixNano())
	msg, info := decode(m)
	if s.opts.Filter != nil && !s.opts.Filter(msg.Attributes) {
		// Not for this channel: every copy fails the filter alike.
		m.Finish()
		if o, ok := s.p.cfg.Observer.(FilterObserver); ok && !info.standby {
			o.Filtered(s.opts.Topic, s.opts.Channel)
		}
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		m.RequeueWithoutBackoff(0)
		return nil
	}
	now := time.Now()
	if wait := info.notBefore.Sub(now); wait > notBeforePrecision {
		// Not due yet: a standby copy, or a deferred message whose timer
		// nsqd dropped. Defer it (again) until it is.
		s.mu.Unlock()
		m.RequeueWithoutBackoff(min(wait, s.p.cfg.TimerHop))
		return nil
	}
	if s.timer {
		// A timer message that is due: to the mover as it is (no filter,
		// expiry or deduplication here; its own topic's subscriptions
		// apply them).
		msg.ExpireAt = time.Time{} // nor in Receive
		d := &delivery{s: s, msg: m, arrived: now, nsqDeadline: now.Add(s.msgTimeout - deliverySkew)}
		d.d = backends.Delivery{Message: msg, Attempt: int(m.Attempts), Acker: d}
		s.held[d] = struct{}{}
		s.queue = append(s.queue, d)
		s.mu.Unlock()
		wake(s.avail)
		return nil
	}
	if expired(msg, now) {
		// Before deduplication: every copy of the message expires at the
		// same moment, so none is delivered and none is waited for.
		dead := s.expireLocked(m)
		s.mu.Unlock()
		s.expired(m, dead, !info.standby)
		return nil
	}
	var claimed time.Time // a hold this copy took at arrival (see below)
	// backlog: old enough that a replicated twin may be live too.
	// A deferred first copy is as fresh at its due time as an immediate one
	// at its send: its twins (standbys) are due StandbyDelay/2 or more later.
	pub := msg.PublishTime
	if !info.standby && info.notBefore.After(pub) {
		pub = info.notBefore
	}
	backlog := !pub.IsZero() && now.Sub(pub) >= s.p.holdAfter()
	if info.dedup {
		var acked bool
		var heldUntil time.Time
		if info.anyTwin || backlog {
			// Its twin may be live too (a backlog, or another send of a
			// client-chosen id): hold the id at once, so that the twin,
			// arriving at another subscription or gateway meanwhile, waits
			// for this copy's outcome instead of being delivered too.
			until := now.Add(s.opts.AckDeadline + s.msgTimeout/4)
			var ok bool
			acked, heldUntil, ok = s.p.acked.claim(s.opts.Topic, s.opts.Channel, msg.ID, s.p.cfg.InstanceID, until, now, holdPrecision)
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
			s.p.acked.hold(s.opts.Topic, s.opts.Channel, s.p.cfg.InstanceID, []envelope.Hold{{ID: msg.ID, Until: now}}, now)
		}
		m.RequeueWithoutBackoff(overflowDelay)
		return nil
	}
	// nsqd started the message's timeout when it wrote it to its output
	// buffer, up to outputBufferTimeout before we read it: count from then,
	// so an Ack that we accept reaches nsqd before its deadline.
	d := &delivery{s: s, msg: m, arrived: now, nsqDeadline: now.Add(s.msgTimeout - deliverySkew)}
	d.d = backends.Delivery{Message: msg, Attempt: attempts, Acker: d}
	s.held[d] = struct{}{}
	if info.dedup {
		d.rid, d.anyTwin = msg.ID, info.anyTwin
		if p := s.byID[msg.ID]; p != nil {
			d.primary = p // park: wait for the held copy's outcome
			p.dups = append(p.dups, d)
			p.holdSent = p.holdSent || !claimed.IsZero() // the held copy ends the hold
			s.mu.Unlock()
			return nil
		}
		s.byID[msg.ID] = d
	}
	held := !claimed.IsZero() // d is shared once s.mu is released
	d.holdSent, d.heldTo = held, claimed
	var settle time.Duration
	if held && backlog {
		// A fresh client-id copy does not settle: that would delay every
		// such message by the settle time while other instances are
		// heard; two sends of one id racing through two gateways remain
		// a documented duplicate.
		settle = s.p.settleFor(now)
	}
	if settle > 0 {
		d.settling = true // see settleClaim
	} else {
		s.queue = append(s.queue, d)
	}
	s.mu.Unlock()
	if held {
		s.p.noteHeld(s.opts.Topic, s.opts.Channel, msg.ID, claimed, now, now) // share it
	}
	if settle > 0 {
		time.AfterFunc(settle, func() { s.settleClaim(d) })
		return nil
	}
	wake(s.avail)
	return nil
}

// ClaimObserver is an optional Observer method: an Observer that has it
// is told of every copy that claimed its message at arrival and then gave
// way to another gateway's earlier claim (acked: the message was acked
// meanwhile, the copy finished; else it was deferred): each is a duplicate
// delivery avoided.
type ClaimObserver interface {
	ClaimLost(topic, channel string, acked bool)
}

// settleClaim decides whether d, a copy that claimed its message at
// arrival while other instances share the ack topic, is delivered. Its
// claim was shared at once; another gateway may have claimed a twin at
// the same moment, before either claim reached the other. After the
// settle time both claims are known to both, and both agree: the claim
// that ranks first (the earlier arrival) delivers. Otherwise d is
// finished when the message was acked meanwhile, or deferred with its
// parked twins until the winner's hold ends (then acked: finished; else
// delivered: nothing is lost). A claim that arrives later than the settle
// time can still let both deliver: a duplicate, as before.
func (s *subscription) settleClaim(d *delivery) {
	s.mu.Lock()
	if d.settled || !d.settling {
		s.mu.Unlock()
		return
	}
	d.settling = false
	now := time.Now()
	acked, won, until := s.p.acked.owns(s.opts.Topic, s.opts.Channel, d.rid, s.p.cfg.InstanceID, now)
	if won {
		s.queue = append(s.queue, d)
		s.mu.Unlock()
		wake(s.avail)
		return
	}
	dups := s.settleLocked(d)
	s.mu.Unlock()
	if o, ok := s.p.cfg.Observer.(ClaimObserver); ok {
		o.ClaimLost(s.opts.Topic, s.opts.Channel, acked)
	}
	if acked {
		d.msg.Finish()
		for _, x := range dups {
			x.msg.Finish()
		}
		return
	}
	wait := min(max(until.Sub(now), 0)+notBeforePrecision, maxRequeueDelay)
	d.msg.RequeueWithoutBackoff(wait)
	requeue(dups, wait)
	// End this claim wherever it was kept (an instance that heard it
	// before the winner's): only this instance's own hold ends.
	s.p.noteHeld(s.opts.Topic, s.opts.Channel, d.rid, now, d.arrived, now)
}

// notBeforePrecision: a message that arrives at most this much before its
// not_before is delivered rather than deferred again.
const notBeforePrecision = 10 * time.Millisecond

// holdPrecision: a copy whose twin's hold ends within this is not deferred
// for it (the hold is most likely this copy's own, about to end).
const holdPrecision = 100 * time.Millisecond

// copyInfo is what the envelope says about a copy beyond the message.
type copyInfo struct {
	// dedup: deduplicated by id, as a copy of a replicated send or a
	// message with a client-chosen id.
	dedup bool
	// anyTwin: a message with a client-chosen id, whose twin (another
	// send's copy) may be live at any moment, not only in a backlog.
	anyTwin   bool
	replicas  int       // copies written by its send (1 when not replicated)
	standby   bool      // a standby copy (deferred once on arrival)
	notBefore time.Time // not deliverable before; zero: at once
}

// decode turns an NSQ message into the message qgate sent, and tells
// what kind of copy it is; a body without the envelope is delivered as-is
// with nsqd's id and timestamp, and is never deduplicated.
func decode(m *gonsq.Message) (backends.Message, copyInfo) {
	if e, ok := envelope.Decode(m.Body); ok {
		// ClientID is kept, so that a dead letter written twice (a write
		// retried after a timeout) is deduplicated in its topic too.
		return backends.Message{ID: e.ID, Body: e.Body, Attributes: e.Attributes, PublishTime: e.PublishTime, ClientID: e.ClientID, ExpireAt: e.ExpireAt},
			copyInfo{dedup: e.Replicas > 1 || e.ClientID, anyTwin: e.ClientID, replicas: max(int(e.Replicas), 1), standby: e.Standby, notBefore: e.NotBefore}
	}
	return backends.Message{ID: string(m.ID[:]), Body: m.Body, PublishTime: time.Unix(0, m.Timestamp)}, copyInfo{replicas: 1}
}

// FilterObserver is an optional Observer method: an Observer that has it
// is told of every message of topic/channel finished because it failed
// the subscription's filter (once per message in the normal case: standby
// copies are not counted).
type FilterObserver interface {
	Filtered(topic, channel string)
}

// ExpiryObserver is an optional Observer method: an Observer that has it
// is told of every message of topic/channel met after its expiry and not
// delivered (finished, or queued for the dead-letter topic when deadLetter
// is set): once per message in the normal case, as its standby copies
// are not counted (a message whose first copy was lost with its node is
// counted when its standby is met).
type ExpiryObserver interface {
	Expired(topic, channel string, deadLetter bool)
}

// expired reports whether msg is past its expiry at now.
func expired(msg backends.Message, now time.Time) bool {
	return !msg.ExpireAt.IsZero() && !now.Before(msg.ExpireAt)
}

// expireLocked takes m, met after its expiry, out of delivery: queued for
// the dead-letter goroutine when the subscription asks for expired
// messages (it reports true), else left for the caller to finish. Callers
// hold s.mu and call s.expired(m, dead) once they released it.
func (s *subscription) expireLocked(m *gonsq.Message) (dead bool) {
	if !s.opts.DeadLetterExpired {
		return false
	}
	s.dead = append(s.dead, m)
	return true
}

// expired completes expireLocked without s.mu: m is finished, or the
// dead-letter goroutine woken; the observer is told when count is set.
func (s *subscription) expired(m *gonsq.Message, dead, count bool) {
	if dead {
		wake(s.deadKick)
	} else {
		m.Finish()
	}
	if o, ok := s.p.cfg.Observer.(ExpiryObserver); ok && count {
		o.Expired(s.opts.Topic, s.opts.Channel, dead)
	}
}
