package envelope

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// fieldTimerTopic, appended after the fields of a Message, makes the
// envelope a timer message: one waiting on qgate's timer topic to be
// written to this topic when it is due (its NotBefore).
const fieldTimerTopic = 10

// MaxTimerTopicSize is the most bytes AppendTimerTopic adds for a topic of
// up to 64 bytes (nsqd's longest topic name).
const MaxTimerTopicSize = 1 + 1 + 64

// AppendTimerTopic appends the destination topic of a timer message to the
// envelope env (as Append made it) and returns the result.
func AppendTimerTopic(env []byte, topic string) []byte {
	env = protowire.AppendTag(env, fieldTimerTopic, protowire.BytesType)
	return protowire.AppendString(env, topic)
}

// SplitTimer splits a timer message into the envelope to write when it is
// due (aliasing b) and its destination topic. ok is false when b is not an
// envelope that ends with a timer topic.
func SplitTimer(b []byte) (env []byte, topic string, ok bool) {
	if len(b) < len(Magic) || string(b[:len(Magic)]) != Magic {
		return nil, "", false
	}
	rest := b[len(Magic):]
	for len(rest) > 0 {
		num, typ, n := consumeTag(rest)
		if n < 0 {
			return nil, "", false
		}
		if num == fieldTimerTopic && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(rest[n:])
			if m < 0 || n+m != len(rest) || len(v) == 0 || !utf8.Valid(v) {
				return nil, "", false // not last, or not a topic
			}
			return b[:len(b)-len(rest)], string(v), true
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, "", false
		}
		rest = rest[n+m:]
	}
	return nil, "", false
}
