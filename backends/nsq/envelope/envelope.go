// Package envelope encodes qgate messages into NSQ message bodies and back.
//
// NSQ bodies are opaque bytes, so qgate stores a message's id, attributes and
// publish time with its body: the 4-byte Magic prefix followed by the binary
// protobuf encoding of qgate.v1.Envelope (proto/qgate/v1/envelope.proto). The
// encoder writes the protobuf wire format directly, with no intermediate
// message, so a Send costs one allocation per body; the decoder accepts any
// valid encoding of Envelope (fields in any order, unknown fields skipped).
//
// A body that does not start with Magic, or whose remainder is not a valid
// Envelope, was written by something other than qgate and is delivered as-is.
package envelope

import (
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Magic starts every body qgate writes. The bytes are unlikely at the start
// of text or JSON bodies; the version byte allows a future format.
const Magic = "QG\x01\x00"

// Field numbers of qgate.v1.Envelope.
const (
	fieldMessageID   = 1
	fieldAttributes  = 2
	fieldPublishTime = 3
	fieldBody        = 4
	fieldReplicas    = 5
	fieldNotBefore   = 6
	fieldStandby     = 7
	fieldClientID    = 8
	fieldExpireAt    = 9

	fieldMapKey   = 1
	fieldMapValue = 2

	fieldSeconds = 1
	fieldNanos   = 2
)

// Message is the content of an envelope.
type Message struct {
	ID          string
	Attributes  map[string]string
	PublishTime time.Time
	Body        []byte
	// Replicas is the number of copies of a replicated send (each copy
	// carries it, so subscriptions know to deduplicate); 0 for a message
	// written once.
	Replicas uint32
	// NotBefore is the earliest time the message may be delivered; zero
	// for at once.
	NotBefore time.Time
	// Standby marks every copy of a replicated send but the first: it is
	// delivered only if no other copy was acknowledged by NotBefore.
	Standby bool
	// ClientID marks an ID the client chose: another send may have written
	// the same message (a retry), so subscriptions deduplicate it by ID
	// whatever its Replicas.
	ClientID bool
	// ExpireAt is when the message expires (not delivered after it);
	// zero for never.
	ExpireAt time.Time
}

// Size returns the encoded size of m, Magic included.
func Size(m *Message) int {
	n := len(Magic)
	if m.ID != "" {
		n += protowire.SizeTag(fieldMessageID) + protowire.SizeBytes(len(m.ID))
	}
	for k, v := range m.Attributes {
		n += protowire.SizeTag(fieldAttributes) + protowire.SizeBytes(mapEntrySize(k, v))
	}
	if !m.PublishTime.IsZero() {
		n += protowire.SizeTag(fieldPublishTime) + protowire.SizeBytes(timestampSize(m.PublishTime))
	}
	n += protowire.SizeTag(fieldBody) + protowire.SizeBytes(len(m.Body))
	if m.Replicas != 0 {
		n += protowire.SizeTag(fieldReplicas) + protowire.SizeVarint(uint64(m.Replicas))
	}
	if !m.NotBefore.IsZero() {
		n += protowire.SizeTag(fieldNotBefore) + protowire.SizeBytes(timestampSize(m.NotBefore))
	}
	if m.Standby {
		n += protowire.SizeTag(fieldStandby) + protowire.SizeVarint(1)
	}
	if m.ClientID {
		n += protowire.SizeTag(fieldClientID) + protowire.SizeVarint(1)
	}
	if !m.ExpireAt.IsZero() {
		n += protowire.SizeTag(fieldExpireAt) + protowire.SizeBytes(timestampSize(m.ExpireAt))
	}
	return n
}

// Append appends the envelope of m to dst and returns the result.
// Attributes are written in map order: the encoding is valid but not
// deterministic.
func Append(dst []byte, m *Message) []byte {
	dst = append(dst, Magic...)
	if m.ID != "" {
		dst = protowire.AppendTag(dst, fieldMessageID, protowire.BytesType)
		dst = protowire.AppendString(dst, m.ID)
	}
	publish := m.PublishTime
	for k, v := range m.Attributes {
		dst = protowire.AppendTag(dst, fieldAttributes, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(mapEntrySize(k, v)))
		dst = protowire.AppendTag(dst, fieldMapKey, protowire.BytesType)
		dst = protowire.AppendString(dst, k)
		dst = protowire.AppendTag(dst, fieldMapValue, protowire.BytesType)
		dst = protowire.AppendString(dst, v)
	}
	if !publish.IsZero() {
		dst = appendTimestamp(dst, fieldPublishTime, publish)
	}
	dst = protowire.AppendTag(dst, fieldBody, protowire.BytesType)
	dst = protowire.AppendBytes(dst, m.Body)
	if m.Replicas != 0 {
		dst = protowire.AppendTag(dst, fieldReplicas, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(m.Replicas))
	}
	if !m.NotBefore.IsZero() {
		dst = appendTimestamp(dst, fieldNotBefore, m.NotBefore)
	}
	if m.Standby {
		dst = protowire.AppendTag(dst, fieldStandby, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	if m.ClientID {
		dst = protowire.AppendTag(dst, fieldClientID, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	if !m.ExpireAt.IsZero() {
		dst = appendTimestamp(dst, fieldExpireAt, m.ExpireAt)
	}
	return dst
}

// appendTimestamp appends t as a google.protobuf.Timestamp field num.
func appendTimestamp(dst []byte, num protowire.Number, t time.Time) []byte {
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(timestampSize(t)))
	if s := t.Unix(); s != 0 {
		dst = protowire.AppendTag(dst, fieldSeconds, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(s))
	}
	if ns := t.Nanosecond(); ns != 0 {
		dst = protowire.AppendTag(dst, fieldNanos, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(ns))
	}
	return dst
}

// Decode decodes an NSQ body. ok is false when b is not a qgate envelope; the
// caller then delivers b as-is. The returned Body aliases b.
func Decode(b []byte) (m Message, ok bool) {
	if len(b) < len(Magic) || string(b[:len(Magic)]) != Magic {
		return Message{}, false
	}
	b = b[len(Magic):]
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return Message{}, false
		}
		b = b[n:]
		switch {
		case num == fieldMessageID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return Message{}, false
			}
			m.ID, b = string(v), b[n:]
		case num == fieldAttributes && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Message{}, false
			}
			k, val, ok := decodeMapEntry(v)
			if !ok {
				return Message{}, false
			}
			if m.Attributes == nil {
				m.Attributes = make(map[string]string)
			}
			m.Attributes[k], b = val, b[n:]
		case (num == fieldPublishTime || num == fieldNotBefore || num == fieldExpireAt) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Message{}, false
			}
			t, ok := decodeTimestamp(v)
			if !ok {
				return Message{}, false
			}
			switch num {
			case fieldPublishTime:
				m.PublishTime = t
			case fieldNotBefore:
				m.NotBefore = t
			default:
				m.ExpireAt = t
			}
			b = b[n:]
		case num == fieldBody && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Message{}, false
			}
			m.Body, b = v, b[n:]
		case num == fieldReplicas && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Message{}, false
			}
			m.Replicas, b = uint32(v), b[n:]
		case (num == fieldStandby || num == fieldClientID) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Message{}, false
			}
			if num == fieldStandby {
				m.Standby = v != 0
			} else {
				m.ClientID = v != 0
			}
			b = b[n:]
		case num == fieldTimerTopic && typ == protowire.BytesType:
			// Not part of Message (see SplitTimer), but a string: valid
			// UTF-8, as protobuf requires.
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return Message{}, false
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Message{}, false
			}
			b = b[n:]
		}
	}
	if m.Body == nil {
		m.Body = []byte{}
	}
	return m, true
}

func mapEntrySize(k, v string) int {
	return protowire.SizeTag(fieldMapKey) + protowire.SizeBytes(len(k)) +
		protowire.SizeTag(fieldMapValue) + protowire.SizeBytes(len(v))
}

// timestampSize is the size of t as a google.protobuf.Timestamp message.
func timestampSize(t time.Time) int {
	n := 0
	if s := t.Unix(); s != 0 {
		n += protowire.SizeTag(fieldSeconds) + protowire.SizeVarint(uint64(s))
	}
	if ns := t.Nanosecond(); ns != 0 {
		n += protowire.SizeTag(fieldNanos) + protowire.SizeVarint(uint64(ns))
	}
	return n
}

func decodeMapEntry(b []byte) (k, v string, ok bool) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return "", "", false
		}
		b = b[n:]
		if (num == fieldMapKey || num == fieldMapValue) && typ == protowire.BytesType {
			s, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(s) {
				return "", "", false
			}
			if num == fieldMapKey {
				k = string(s)
			} else {
				v = string(s)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", "", false
		}
		b = b[n:]
	}
	return k, v, true
}

func decodeTimestamp(b []byte) (time.Time, bool) {
	var secs, nanos int64
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
		if (num == fieldSeconds || num == fieldNanos) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return time.Time{}, false
			}
			if num == fieldSeconds {
				secs = int64(v)
			} else {
				nanos = int64(int32(v))
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
	}
	if nanos < 0 || nanos > 999_999_999 {
		return time.Time{}, false
	}
	return time.Unix(secs, nanos), true
}

// consumeTag is protowire.ConsumeTag that also rejects field numbers the
// protobuf runtime rejects, so Decode accepts exactly what proto.Unmarshal
// accepts.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && !num.IsValid() {
		return 0, 0, -1
	}
	return num, typ, n
}
