package envelope

import (
	"errors"
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
	IDs      []string
}

// Field numbers of qgate.v1.AckRecord.
const (
	fieldRecInstance = 1
	fieldRecTopic    = 2
	fieldRecChannel  = 3
	fieldRecIDs      = 4
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
	return dst
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
