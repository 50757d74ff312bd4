// The acked-id and hold bookkeeping of subscriptions: when a replicated
// delivery records a hold, and how acks and holds reach Pool.acked and the
// ack bus.

package nsq

import (
	"time"

	"github.com/qgate/qgate/backends/nsq/envelope"
)

// heldLong reports whether d, a handed-out delivery, is a replicated
// message held so long that another copy may surface meanwhile (see
// holdAfter), or a message with a client-chosen id (another send's copy
// may surface at any time): then a hold is recorded, so the other copy
// waits for d's outcome wherever it surfaces. A client that acks a
// replicated message at once never causes one. Callers hold s.mu.
func (s *subscription) heldLong(d *delivery, now time.Time) bool {
	pub := d.d.Message.PublishTime
	return d.rid != "" && (d.anyTwin || !pub.IsZero() && now.Sub(pub) >= s.p.holdAfter())
}

// holdAfter is how long after its send a replicated delivery, unsettled,
// records a hold, and a copy arriving claims one: a quarter of the standby
// delay, before the earliest other copy can surface (a moved first copy,
// due at half of it).
func (p *Pool) holdAfter() time.Duration { return p.cfg.StandbyDelay / 4 }

// noteAcked remembers that the replicated message id was acked on
// topic/channel (or dead-lettered: settled for good), and tells the other
// instances.
func (p *Pool) noteAcked(topic, channel, id string, now time.Time) {
	p.acked.add(topic, channel, []string{id}, now)
	if p.bus != nil {
		p.bus.note(topic, channel, id, time.Time{})
	}
}

// noteHeld records that the replicated message id is held on
// topic/channel until until (until not after now ends a hold), and tells
// the other instances: its other copies are deferred until then.
func (p *Pool) noteHeld(topic, channel, id string, until, now time.Time) {
	p.acked.hold(topic, channel, []envelope.Hold{{ID: id, Until: until}}, now)
	if p.bus != nil {
		if !until.After(now) {
			until = now // a time in the past ends the hold everywhere
		}
		p.bus.note(topic, channel, id, until)
	}
}
