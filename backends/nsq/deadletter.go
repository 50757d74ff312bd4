// Dead letters: messages past MaxAttempts, and expired ones when the
// subscription asks, are written to the dead-letter topic by the
// subscription's dead-letter goroutine.

package nsq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
)

// Attributes added to a message written to a dead-letter topic.
const (
	AttrDeadLetterAttempts = "qgate-dead-letter-attempts"
	AttrDeadLetterReason   = "qgate-dead-letter-reason"
	// AttrDeadLetterExpireTime: the expiry (RFC 3339) of a dead letter whose
	// message had one; the dead letter itself does not expire.
	AttrDeadLetterExpireTime = "qgate-dead-letter-expire-time"
	// AttrDeadLetterTopic and AttrDeadLetterChannel: where the message was
	// dead-lettered from (AdminService.Redrive sends it back there).
	AttrDeadLetterTopic   = "qgate-dead-letter-topic"
	AttrDeadLetterChannel = "qgate-dead-letter-channel"
)

// Timings of dead-letter writes.
const (
	// deadLetterTimeout bounds one dead-letter write.
	deadLetterTimeout = 5 * time.Second
	// deadLetterRetryDelay is the requeue delay of a message whose
	// dead-letter write failed: it comes back and is tried again.
	deadLetterRetryDelay = 5 * time.Second
)

// deadLetterLoop writes messages past MaxAttempts to the dead-letter topic
// through the pool's Send, then finishes them; a failed write requeues the
// message with a delay, so it is tried again and never dropped.
func (s *subscription) deadLetterLoop() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		var m *gonsq.Message
		if len(s.dead) > 0 && !s.closed {
			m = s.dead[0]
			s.dead[0] = nil
			s.dead = s.dead[1:]
		}
		s.mu.Unlock()
		if m == nil {
			select {
			case <-s.deadKick:
				continue
			case <-s.closing:
				return
			}
		}
		// Close cancels s.ctx: a write in progress ends and its message is
		// handed back.
		s.deadLetter(s.ctx, m)
	}
}

func (s *subscription) deadLetter(ctx context.Context, m *gonsq.Message) {
	msg, info := decode(m)
	attrs := make(map[string]string, len(msg.Attributes)+5)
	maps.Copy(attrs, msg.Attributes)
	attrs[AttrDeadLetterTopic], attrs[AttrDeadLetterChannel] = s.opts.Topic, s.opts.Channel
	attrs[AttrDeadLetterAttempts] = strconv.Itoa(int(m.Attempts) - 1)
	attrs[AttrDeadLetterReason] = fmt.Sprintf("delivered %d times, max attempts %d", int(m.Attempts)-1, s.opts.MaxAttempts)
	if !msg.ExpireAt.IsZero() {
		attrs[AttrDeadLetterExpireTime] = msg.ExpireAt.UTC().Format(time.RFC3339Nano)
		if s.opts.DeadLetterExpired && expired(msg, time.Now()) {
			attrs[AttrDeadLetterReason] = "expired"
		}
	}
	msg.Attributes = attrs
	msg.ExpireAt = time.Time{}
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	// As many copies as the message had: a dead letter is as durable as
	// the message it replaces.
	err := s.p.Send(ctx, s.opts.DeadLetterTopic, []*backends.Message{&msg}, backends.SendOptions{Replicas: info.replicas})
	if err != nil {
		s.log.Warn("nsq dead-letter write failed; requeued", "id", msg.ID,
			"dead_letter_topic", s.opts.DeadLetterTopic, "err", err)
		delay := deadLetterRetryDelay
		if s.ctx.Err() != nil || errors.Is(err, backends.ErrClosed) {
			// Closing (this subscription or the pool): hand it back at
			// once, so another subscriber gets it without the retry delay.
			delay = 0
		}
		m.RequeueWithoutBackoff(delay)
		return
	}
	s.log.Info("nsq message dead-lettered", "id", msg.ID, "dead_letter_topic", s.opts.DeadLetterTopic,
		"attempts", int(m.Attempts)-1)
	if info.dedup {
		// Settled for good: its other copies must not be delivered again.
		s.p.noteAcked(s.opts.Topic, s.opts.Channel, msg.ID, time.Now())
	}
	m.Finish()
	s.p.cfg.Observer.DeadLettered(s.opts.Topic, s.opts.Channel)
}
