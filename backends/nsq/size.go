package nsq

import (
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
)

// sizingTime stands for the publish time and due time when a message is
// sized. The encoded size of a time varies by a few bytes with its
// nanoseconds; sizing with the largest (for the next thousand years) makes
// the size the same at every moment, at most 6 bytes more than needed.
var sizingTime = time.Unix(1<<35-1, 999_999_999)

// sizingReplicas stands for the replica count a copy carries: any count
// below 128 encodes in one byte.
const sizingReplicas = 127

// Sizer sizes messages as a Pool stores them in nsqd (backends.Sizer); a
// Pool's MessageSize and BatchSize are Sizer's.
type Sizer struct{}

// MessageSize returns the size of m in nsqd: its body in qgate's envelope
// as large as any copy of it can be (largest publish time, a replica count,
// a due time, the standby mark, the client-id mark if it has a
// client-chosen id, the largest expiry if it expires, and the longest
// timer topic of a long delay), so a message that fits nsqd's
// --max-msg-size fits it with any replicas and any delay.
func (Sizer) MessageSize(m *backends.Message) int {
	e := envelope.Message{ID: m.ID, Attributes: m.Attributes, PublishTime: sizingTime, Body: m.Body,
		Replicas: sizingReplicas, NotBefore: sizingTime, Standby: true, ClientID: m.ClientID}
	if !m.ExpireAt.IsZero() {
		e.ExpireAt = sizingTime
	}
	// Room for a timer topic: the same limit for every delay.
	return envelope.Size(&e) + envelope.MaxTimerTopicSize
}

// BatchSize returns the size of the body of nsqd's MPUB command for n
// messages of total size: 4 bytes of count, then 4 bytes of size before
// each message; nsqd's --max-body-size bounds it.
func (Sizer) BatchSize(n, total int) int { return 4 + 4*n + total }

// MessageSize is Sizer's (backends.Sizer).
func (p *Pool) MessageSize(m *backends.Message) int { return Sizer{}.MessageSize(m) }

// BatchSize is Sizer's (backends.Sizer).
func (p *Pool) BatchSize(n, total int) int { return Sizer{}.BatchSize(n, total) }

var (
	_ backends.Sizer = Sizer{}
	_ backends.Sizer = (*Pool)(nil)
)
