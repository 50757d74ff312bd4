// The acked-id and hold bookkeeping of subscriptions: when a replicated
// delivery records a hold, and how acks and holds reach Pool.acked and the
// ack bus.

package nsq

import (
	"sync"
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
		p.bus.note(topic, channel, id, time.Time{}, time.Time{})
	}
}

// noteHeld records that the replicated message id is held on
// topic/channel until until (until not after now ends a hold) by a copy
// that arrived at since, and tells the other instances: its other copies
// are deferred until then.
func (p *Pool) noteHeld(topic, channel, id string, until, since, now time.Time) {
	p.acked.hold(topic, channel, p.cfg.InstanceID, []envelope.Hold{{ID: id, Until: until, Since: since}}, now)
	if p.bus != nil {
		if !until.After(now) {
			until = now // a time in the past ends the hold everywhere
		}
		p.bus.note(topic, channel, id, until, since)
	}
}

// busPeers is what the ack bus tells of the other instances: when one was
// last heard of, and how far their records trail the events they carry
// (the larger of the last two 15-second windows' largest lag). Safe for
// concurrent use.
type busPeers struct {
	mu        sync.Mutex
	last      time.Time
	cur, prev time.Duration
	window    time.Time
}

// peerTTL: an instance not heard of for this long (heartbeats come every
// ackHeartbeat) is taken to be gone. Long, because records trail their
// events by seconds when the nodes are starved of disk or CPU, which is
// when backlogs, and claims, happen.
const peerTTL = AckChannelExpiry

// seen records a record of another instance read at now, written at sent
// (zero: an older version's record, no lag known).
func (b *busPeers) seen(now, sent time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = now
	if now.Sub(b.window) >= 15*time.Second {
		b.prev, b.cur, b.window = b.cur, 0, now
	}
	if !sent.IsZero() {
		b.cur = max(b.cur, now.Sub(sent))
	}
}

// lag returns how far other instances' records trail their events, and
// false when no other instance was heard of within peerTTL.
func (b *busPeers) lag(now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() || now.Sub(b.last) > peerTTL {
		return 0, false
	}
	return max(b.cur, b.prev), true
}

// settleFor is how long a copy that claimed its message at arrival (a
// backlog: its twin may be live elsewhere) waits before it is delivered:
// long enough for a claim another gateway made at the same moment to
// arrive (twice the bus lag), so that the two agree which one delivers
// (see ackedIDs.owns). Zero when no other instance is there or
// Config.ClaimSettle is negative. At least Config.ClaimSettle, at most
// half of holdAfter.
func (p *Pool) settleFor(now time.Time) time.Duration {
	lag, ok := p.peers.lag(now)
	if !ok || p.bus == nil || p.cfg.ClaimSettle < 0 {
		return 0
	}
	return min(max(2*lag, p.cfg.ClaimSettle), p.holdAfter()/2)
}
