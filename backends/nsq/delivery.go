// Deliveries and the Acker: Receive hands out what HandleMessage queued;
// Ack, Nack and Extend settle or extend a delivery and its parked copies.

package nsq

import (
	"context"
	"fmt"
	"slices"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
)

// delivery is one message held by a subscription; it is the Acker.
type delivery struct {
	s   *subscription
	msg *gonsq.Message
	d   backends.Delivery
	// Guarded by s.mu.
	arrived  time.Time // when the message reached the subscription
	deadline time.Time // the client's ack deadline, once handed out
	// backoff: how long after the deadline, should it pass, the message
	// is redelivered (the retry policy's, drawn at hand-out; 0: at once).
	// A hold of a handed-out delivery lasts until deadline + backoff, so
	// that its other copies do not come back before it.
	backoff     time.Duration
	nsqDeadline time.Time // when nsqd times the message out, absent a TOUCH
	settled     bool
	handed      bool
	// settling: claimed at arrival, not queued until settleClaim decides.
	settling bool
	// released: settled because its node's connection was lost (see
	// releaseDown). A client's Ack that comes later still counts for
	// deduplication: the message's other copies are finished, not
	// delivered again.
	released  bool
	lateAcked bool
	// holdSent: a hold of this delivery's id was recorded (and shared), so
	// that its standby copy waits for its outcome; see heldLong.
	holdSent bool
	// heldTo: the end of the hold shared when the copy arrived (zero if
	// none was): Receive shares a longer one only, see there.
	heldTo time.Time
	// Replicated messages: rid is the message id. A copy that arrives while
	// another copy is held waits, parked (primary set, not queued), for
	// that copy's outcome: finished with it when it is acked, handed back
	// with it otherwise.
	rid     string
	anyTwin bool        // rid is client-chosen: a twin may be live at any time
	dups    []*delivery // parked copies of this held delivery
	primary *delivery   // the held copy this parked copy waits for
}

// Receive returns the next delivery; see backends.Subscription. A delivery
// that is ready is returned before ctx is looked at, so with a ctx that is
// already done Receive takes what is ready without blocking (service
// batches deliveries this way).
func (s *subscription) Receive(ctx context.Context) (*backends.Delivery, error) {
	// Queued messages found expired with their parked copies, and
	// whether each went to the dead-letter goroutine (the copy that was
	// queued, counted) or is to be finished (its parked copies): done once
	// s.mu is released.
	type expiredCopy struct {
		m            *gonsq.Message
		dead, queued bool
	}
	var gone []expiredCopy
	expire := func() {
		for _, x := range gone {
			s.expired(x.m, x.dead, x.queued)
		}
		gone = gone[:0]
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			expire()
			return nil, fmt.Errorf("nsq: subscription: %w", backends.ErrClosed)
		}
		if s.handed < s.opts.MaxInFlight {
			for len(s.queue) > 0 {
				d := s.queue[0]
				s.queue[0] = nil
				s.queue = s.queue[1:]
				if d.settled {
					continue
				}
				now := time.Now()
				if expired(d.d.Message, now) {
					// It expired while it waited for a free slot: its
					// parked copies (same expiry) go with it.
					for _, x := range s.settleLocked(d) {
						gone = append(gone, expiredCopy{m: x.msg})
					}
					gone = append(gone, expiredCopy{m: d.msg, dead: s.expireLocked(d.msg), queued: true})
					continue
				}
				d.handed = true
				s.handed++
				touch := s.needsTouch(d, now)
				if touch {
					d.nsqDeadline = now.Add(s.msgTimeout)
				}
				d.deadline = minTime(now.Add(s.opts.AckDeadline), d.nsqDeadline)
				d.backoff = s.retryDelay(d.d.Attempt)
				// A hold claimed at arrival usually outlasts the deadline
				// (a client-id copy claims one every time): it is not
				// shortened, which would cost an ack record per message;
				// it ends when the delivery is settled or expires, and
				// that end is shared. One that waited in the queue past
				// its claim is extended to its deadline.
				hold, until := d.holdSent && d.holdEnd().After(d.heldTo), d.holdEnd()
				if hold {
					d.heldTo = until
				}
				s.mu.Unlock()
				if touch {
					d.msg.Touch()
				}
				if hold {
					s.p.noteHeld(s.opts.Topic, s.opts.Channel, d.rid, until, d.arrived, now)
				}
				expire()
				return &d.d, nil
			}
		}
		s.mu.Unlock()
		expire()
		select {
		case <-s.avail:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closing:
		}
	}
}

// needsTouch reports whether d, about to be handed out at now, needs a
// TOUCH so that the client gets its full ack deadline from now: whether
// nsqd's timer, started when nsqd wrote the message, would run out first.
//
// nsqd's timeout is the ack deadline plus ackMargin, so a message handed
// out within ackMargin-deliverySkew of its arrival (a drain hands out
// most within milliseconds) needs none; only one that waited in the queue
// longer is touched. A TOUCH per delivery would double the commands a
// drain sends to nsqd. When nsqd's timeout is capped below the ack
// deadline (15 minutes), a TOUCH can give the client at most
// msgTimeout-ackMargin, and the message is touched after the same wait.
// Callers hold s.mu.
func (s *subscription) needsTouch(d *delivery, now time.Time) bool {
	want := now.Add(min(s.opts.AckDeadline, s.msgTimeout-ackMargin))
	return d.nsqDeadline.Before(want)
}

// settleLocked marks d settled. It returns d's parked copies, settled too:
// callers answer them as they answer d (FIN after an Ack, else REQ). Callers
// hold s.mu and respond after unlocking.
func (s *subscription) settleLocked(d *delivery) []*delivery {
	d.settled = true
	delete(s.held, d)
	if d.handed {
		s.handed--
		wake(s.avail)
	}
	if p := d.primary; p != nil { // a parked copy, settled on its own
		p.dups = slices.DeleteFunc(p.dups, func(x *delivery) bool { return x == d })
		d.primary = nil
		return nil
	}
	if d.rid == "" {
		return nil
	}
	if s.byID[d.rid] == d {
		delete(s.byID, d.rid)
	}
	dups := d.dups
	d.dups = nil
	for _, x := range dups {
		x.settled, x.primary = true, nil
		delete(s.held, x)
	}
	return dups
}

// settle settles d for Ack (ack true) or Nack. It reports false when d was
// already settled; expired when its deadline had passed; late for the
// first Ack of a replicated delivery that was released with its lost
// connection (nothing to answer on the wire, but its id counts as acked).
// It returns d's parked copies. An acked replicated message's id is
// remembered, and shared with other instances.
func (d *delivery) settle(ack bool) (ok, expired, late bool, dups []*delivery) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if d.settled {
		if ack && d.released && !d.lateAcked && d.rid != "" && !now.After(d.deadline) {
			d.lateAcked = true
			s.p.noteAcked(s.opts.Topic, s.opts.Channel, d.rid, now)
			return false, false, true, nil
		}
		return false, false, false, nil
	}
	dups = s.settleLocked(d)
	expired = now.After(d.deadline)
	if ack && !expired && d.rid != "" {
		s.p.noteAcked(s.opts.Topic, s.opts.Channel, d.rid, now)
	}
	return true, expired, false, dups
}

var errUnknown = fmt.Errorf("nsq: %w", backends.ErrUnknownDelivery)

// requeue hands ds back after delay.
func requeue(ds []*delivery, delay time.Duration) {
	for _, d := range ds {
		d.msg.RequeueWithoutBackoff(delay)
	}
}

// Ack finishes the message (FIN), and its parked copies. The Ack of a
// replicated delivery released with its lost connection succeeds without
// a FIN (there is no connection to send it on): its other copies are
// finished wherever they arrive, and nsqd's redelivery of this one too.
func (d *delivery) Ack() error {
	ok, expired, late, dups := d.settle(true)
	switch {
	case late:
		return nil
	case !ok:
		return errUnknown
	case expired:
		d.handBack(dups)
		return errUnknown
	}
	d.msg.Finish()
	for _, x := range dups {
		x.msg.Finish()
	}
	return nil
}

// Nack hands the message back for redelivery after delay (REQ, no
// backoff), and its parked copies with it.
func (d *delivery) Nack(delay time.Duration) error {
	ok, expired, _, dups := d.settle(false)
	switch {
	case !ok:
		return errUnknown
	case expired:
		d.handBack(dups)
		return errUnknown
	}
	delay = clampDuration(delay, 0, maxRequeueDelay)
	d.msg.RequeueWithoutBackoff(delay)
	requeue(dups, delay)
	if d.rid != "" && (delay > 0 || d.holdSent) {
		// Its other copies wait for the nack's delay too (or no longer,
		// with none): a standby must not bring it back early.
		now := time.Now()
		d.s.p.noteHeld(d.s.opts.Topic, d.s.opts.Channel, d.rid, now.Add(delay), d.arrived, now)
	}
	return nil
}

// holdEnd is when a hold of d, handed out, ends should it not be settled:
// its deadline, and the retry policy's backoff after it. Callers hold s.mu.
func (d *delivery) holdEnd() time.Time { return d.deadline.Add(d.backoff) }

// handBack hands back d, a handed-out delivery settled because its ack
// deadline passed, with its parked copies: at once, or after the retry
// policy's backoff for its attempt; its other copies are held as long.
func (d *delivery) handBack(dups []*delivery) {
	delay := d.backoff // d is settled: no one writes it any more
	d.msg.RequeueWithoutBackoff(delay)
	requeue(dups, delay)
	if d.rid != "" && (delay > 0 || d.holdSent) {
		now := time.Now()
		d.s.p.noteHeld(d.s.opts.Topic, d.s.opts.Channel, d.rid, now.Add(delay), d.arrived, now)
	}
}

// Extend resets the ack deadline (TOUCH).
func (d *delivery) Extend() error {
	s := d.s
	s.mu.Lock()
	if d.settled {
		s.mu.Unlock()
		return errUnknown
	}
	now := time.Now()
	if now.After(d.deadline) {
		dups := s.settleLocked(d)
		s.mu.Unlock()
		d.handBack(dups)
		return errUnknown
	}
	d.nsqDeadline = now.Add(s.msgTimeout)
	d.deadline = minTime(now.Add(s.opts.AckDeadline), d.nsqDeadline)
	hold := d.holdSent || s.heldLong(d, now)
	d.holdSent = d.holdSent || hold
	until := d.holdEnd()
	s.mu.Unlock()
	d.msg.Touch()
	if hold {
		s.p.noteHeld(s.opts.Topic, s.opts.Channel, d.rid, until, d.arrived, now)
	}
	return nil
}
