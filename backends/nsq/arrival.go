// Arrival of a message at a subscription (HandleMessage): not_before and
// standby deferral, acked and held copies, dead-letter hand-off, queueing.

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
	if info.dedup {
		var acked bool
		var heldUntil time.Time
		if pub := msg.PublishTime; info.anyTwin || !pub.IsZero() && now.Sub(pub) >= s.p.holdAfter() {
			// Its twin may be live too (a backlog, or another send of a
			// client-chosen id): hold the id at once, so that the twin,
			// arriving at another subscription or gateway meanwhile, waits
			// for this copy's outcome instead of being delivered too.
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
	d.holdSent, d.heldTo = !claimed.IsZero(), claimed
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
		return backends.Message{ID: e.ID, Body: e.Body, Attributes: e.Attributes, PublishTime: e.PublishTime, ClientID: e.ClientID},
			copyInfo{dedup: e.Replicas > 1 || e.ClientID, anyTwin: e.ClientID, replicas: max(int(e.Replicas), 1), standby: e.Standby, notBefore: e.NotBefore}
	}
	return backends.Message{ID: string(m.ID[:]), Body: m.Body, PublishTime: time.Unix(0, m.Timestamp)}, copyInfo{replicas: 1}
}
