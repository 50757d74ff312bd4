package envelope

import (
	"errors"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// AckRecord is the content of qgate.v1.AckRecord: the replicated messages
// an instance saw acknowledged on a topic and channel. Written as plain
// protobuf (no Magic prefix) to the pool's ack topic.
type AckRecord struct {
	Instance string
	Topic    string
	Channel  string
	IDs      []string // acknowledged
	Held     []Hold   // held until a time
	// Sent is when the record was written (zero: not said).
	Sent time.Time
}

// Hold is qgate.v1.HeldMessage: a message held on a channel until a time.
type Hold struct {
	ID    string
	Until time.Time
	// Since is when the holder took the message (zero: not said, which
	// ranks first).
	Since time.Time
}

// Field numbers of qgate.v1.AckRecord.
const (
	fieldRecInstance = 1
	fieldRecTopic    = 2
	fieldRecChannel  = 3
	fieldRecIDs      = 4
	fieldRecHeld     = 5
	fieldRecSent     = 6

	fieldHoldID    = 1
	fieldHoldUntil = 2
	fieldHoldSince = 3
)

// AppendAckRecord appends the protobuf encoding of r to dst.
func AppendAckRecord(dst []byte, r *AckRecord) []byte {
	for _, f := range []struct {
		num protowire.Number
		v   string
	}{{fieldRecInstance, r.Instance}, {fieldRecTopic, r.Topic}, {fieldRecChannel, r.Channel}} {
		if f.v != "" {
			dst = protowire.AppendTag(dst, f.num, protowire.BytesType)
			dst = protowire.AppendString(dst, f.v)
		}
	}
	for _, id := range r.IDs {
		dst = protowire.AppendTag(dst, fieldRecIDs, protowire.BytesType)
		dst = protowire.AppendString(dst, id)
	}
	for _, h := range r.Held {
		size := protowire.SizeTag(fieldHoldID) + protowire.SizeBytes(len(h.ID)) +
			protowire.SizeTag(fieldHoldUntil) + protowire.SizeBytes(timestampSize(h.Until))
		if !h.Since.IsZero() {
			size += protowire.SizeTag(fieldHoldSince) + protowire.SizeBytes(timestampSize(h.Since))
		}
		dst = protowire.AppendTag(dst, fieldRecHeld, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		dst = protowire.AppendTag(dst, fieldHoldID, protowire.BytesType)
		dst = protowire.AppendString(dst, h.ID)
		dst = appendTimestamp(dst, fieldHoldUntil, h.Until)
		if !h.Since.IsZero() {
			dst = appendTimestamp(dst, fieldHoldSince, h.Since)
		}
	}
	if !r.Sent.IsZero() {
		dst = appendTimestamp(dst, fieldRecSent, r.Sent)
	}
	return dst
}

// decodeHold decodes a HeldMessage.
func decodeHold(b []byte) (Hold, bool) {
	var h Hold
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return Hold{}, false
		}
		b = b[n:]
		if num >= fieldHoldID && num <= fieldHoldSince && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Hold{}, false
			}
			b = b[n:]
			if num == fieldHoldID {
				if !utf8.Valid(v) {
					return Hold{}, false
				}
				h.ID = string(v)
				continue
			}
			t, ok := decodeTimestamp(v)
			if !ok {
				return Hold{}, false
			}
			if num == fieldHoldUntil {
				h.Until = t
			} else {
				h.Since = t
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return Hold{}, false
		}
		b = b[n:]
	}
	return h, true
}

var errBadRecord = errors.New("envelope: not an AckRecord")

// DecodeAckRecord decodes an AckRecord (unknown fields skipped).
func DecodeAckRecord(b []byte) (AckRecord, error) {
	var r AckRecord
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return AckRecord{}, errBadRecord
		}
		b = b[n:]
		if num == fieldRecSent && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return AckRecord{}, errBadRecord
			}
			t, ok := decodeTimestamp(v)
			if !ok {
				return AckRecord{}, errBadRecord
			}
			r.Sent = t
			b = b[n:]
			continue
		}
		if num == fieldRecHeld && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return AckRecord{}, errBadRecord
			}
			h, ok := decodeHold(v)
			if !ok {
				return AckRecord{}, errBadRecord
			}
			r.Held = append(r.Held, h)
			b = b[n:]
			continue
		}
		if num >= fieldRecInstance && num <= fieldRecIDs && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) {
				return AckRecord{}, errBadRecord
			}
			b = b[n:]
			switch num {
			case fieldRecInstance:
				r.Instance = string(v)
			case fieldRecTopic:
				r.Topic = string(v)
			case fieldRecChannel:
				r.Channel = string(v)
			default:
				r.IDs = append(r.IDs, string(v))
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return AckRecord{}, errBadRecord
		}
		b = b[n:]
	}
	return r, nil
}
