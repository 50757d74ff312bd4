package envelope

import (
	"bytes"
	"maps"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		id       string
		attrs    map[string]string
		publish  time.Time
		body     []byte
		replicas uint32
	}{
		{"minimal", "", nil, time.Time{}, []byte("x"), 0},
		{"full", "0123456789abcdef0123456789abcdef", map[string]string{"a": "1", "b": "", "ü": "ß"}, time.Unix(1700000000, 123456789), []byte("hello"), 2},
		{"empty attr key", "id", map[string]string{"": "v"}, time.Unix(0, 5), []byte{0}, 0},
		{"before epoch", "id", nil, time.Unix(-5, 0), bytes.Repeat([]byte("z"), 70000), 3},
		{"body looks like envelope", "id", nil, time.Unix(1, 0), []byte(Magic + "junk"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &Message{ID: tt.id, Attributes: tt.attrs, PublishTime: tt.publish, Body: tt.body, Replicas: tt.replicas}
			b := Append(nil, in)
			if got, want := len(b), Size(in); got != want {
				t.Errorf("len(Append) = %d, Size = %d", got, want)
			}
			m, ok := Decode(b)
			if !ok {
				t.Fatalf("Decode(Append(...)) not ok")
			}
			if m.ID != tt.id || !bytes.Equal(m.Body, tt.body) || !m.PublishTime.Equal(tt.publish) || m.Replicas != tt.replicas {
				t.Errorf("got id=%q body=%q time=%v, want id=%q body=%q time=%v", m.ID, m.Body, m.PublishTime, tt.id, tt.body, tt.publish)
			}
			if len(m.Attributes) != len(tt.attrs) || !maps.Equal(m.Attributes, tt.attrs) {
				t.Errorf("attributes = %v, want %v", m.Attributes, tt.attrs)
			}

			// The hand-written encoding is the protobuf encoding of qgate.v1.Envelope.
			var pb qgatev1.Envelope
			if err := proto.Unmarshal(b[len(Magic):], &pb); err != nil {
				t.Fatalf("proto.Unmarshal: %v", err)
			}
			if pb.GetMessageId() != tt.id || !bytes.Equal(pb.GetBody(), tt.body) || pb.GetReplicas() != tt.replicas || !maps.Equal(pb.GetAttributes(), tt.attrs) && len(tt.attrs) > 0 {
				t.Errorf("protobuf view = %v", &pb)
			}
			if !tt.publish.IsZero() && !pb.GetPublishTime().AsTime().Equal(tt.publish) {
				t.Errorf("protobuf publish_time = %v, want %v", pb.GetPublishTime().AsTime(), tt.publish)
			}
		})
	}
}

func TestDecodeProtoEncoded(t *testing.T) {
	// A producer in another language encodes with its protobuf library.
	pb := &qgatev1.Envelope{
		MessageId:   "m1",
		Attributes:  map[string]string{"k": "v"},
		PublishTime: timestamppb.New(time.Unix(42, 7)),
		Body:        []byte("payload"),
	}
	raw, err := proto.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := Decode(append([]byte(Magic), raw...))
	if !ok || m.ID != "m1" || m.Attributes["k"] != "v" || string(m.Body) != "payload" || !m.PublishTime.Equal(time.Unix(42, 7)) {
		t.Fatalf("Decode = %+v, %v", m, ok)
	}
}

func TestDecodeRaw(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		[]byte("plain text"),
		[]byte(`{"json":true}`),
		[]byte("QG\x01"),                              // short prefix
		[]byte(Magic + "\xff\xff"),                    // prefix, then garbage
		append([]byte(Magic), 0x0a, 0x05, 'a'),        // truncated id
		append([]byte(Magic), 0x0a, 0x01, 0xff),       // id not UTF-8
		append([]byte(Magic), 0x1a, 0x02, 0x10, 0xff), // truncated nanos
	} {
		if m, ok := Decode(b); ok {
			t.Errorf("Decode(%q) = %+v, ok; want not ok", b, m)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add(Append(nil, &Message{ID: "id", Attributes: map[string]string{"a": "b"}, PublishTime: time.Unix(1, 2), Body: []byte("body"), Replicas: 2}))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := Decode(b)
		if !ok {
			return
		}
		// Whatever decodes must re-encode to something that decodes the same.
		again, ok := Decode(Append(nil, &m))
		if !ok || again.Replicas != m.Replicas || again.ID != m.ID || !bytes.Equal(again.Body, m.Body) || !maps.Equal(again.Attributes, m.Attributes) || !again.PublishTime.Equal(m.PublishTime) {
			t.Fatalf("re-encode mismatch: %+v vs %+v", m, again)
		}
		// And the protobuf runtime must accept it too.
		if err := proto.Unmarshal(b[len(Magic):], &qgatev1.Envelope{}); err != nil {
			t.Fatalf("Decode accepted what protobuf rejects: %v", err)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	attrs := map[string]string{"trace": "abc123", "type": "order"}
	body := bytes.Repeat([]byte("x"), 100)
	now := time.Now()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], &Message{ID: "0123456789abcdef0123456789abcdef", Attributes: attrs, PublishTime: now, Body: body})
	}
}

func BenchmarkDecode(b *testing.B) {
	enc := Append(nil, &Message{ID: "0123456789abcdef0123456789abcdef", Attributes: map[string]string{"trace": "abc123"}, PublishTime: time.Now(), Body: bytes.Repeat([]byte("x"), 100)})
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Decode(enc); !ok {
			b.Fatal("decode")
		}
	}
}

func TestRoundTripStandby(t *testing.T) {
	notBefore := time.Unix(1700000030, 5)
	in := &Message{ID: "id", PublishTime: time.Unix(1700000000, 0), Body: []byte("b"), Replicas: 2, NotBefore: notBefore, Standby: true}
	b := Append(nil, in)
	if got, want := len(b), Size(in); got != want {
		t.Errorf("len(Append) = %d, Size = %d", got, want)
	}
	m, ok := Decode(b)
	if !ok || !m.NotBefore.Equal(notBefore) || !m.Standby || m.Replicas != 2 {
		t.Fatalf("Decode = %+v, %v; want not_before %v, standby", m, ok, notBefore)
	}
	// The generated code, not this package, is the reference.
	var pb qgatev1.Envelope
	if err := proto.Unmarshal(b[len(Magic):], &pb); err != nil {
		t.Fatalf("proto.Unmarshal: %v", err)
	}
	if !pb.GetStandby() || !pb.GetNotBefore().AsTime().Equal(notBefore) {
		t.Errorf("protobuf view = %v", &pb)
	}
	pb.Standby, pb.NotBefore = false, timestamppb.New(notBefore.Add(time.Second))
	enc, err := proto.Marshal(&pb)
	if err != nil {
		t.Fatal(err)
	}
	m, ok = Decode(append([]byte(Magic), enc...))
	if !ok || m.Standby || !m.NotBefore.Equal(notBefore.Add(time.Second)) {
		t.Errorf("Decode(proto.Marshal) = %+v, %v", m, ok)
	}
}

func TestRoundTripClientID(t *testing.T) {
	in := &Message{ID: "order:1234", PublishTime: time.Unix(1700000000, 0), Body: []byte("b"), ClientID: true}
	b := Append(nil, in)
	if got, want := len(b), Size(in); got != want {
		t.Errorf("len(Append) = %d, Size = %d", got, want)
	}
	m, ok := Decode(b)
	if !ok || !m.ClientID || m.ID != "order:1234" || m.Replicas != 0 {
		t.Fatalf("Decode = %+v, %v; want client id order:1234", m, ok)
	}
	var pb qgatev1.Envelope
	if err := proto.Unmarshal(b[len(Magic):], &pb); err != nil {
		t.Fatalf("proto.Unmarshal: %v", err)
	}
	if !pb.GetClientId() || pb.GetMessageId() != "order:1234" {
		t.Errorf("protobuf view = %v", &pb)
	}
	pb.ClientId = false
	enc, err := proto.Marshal(&pb)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := Decode(append([]byte(Magic), enc...)); !ok || m.ClientID {
		t.Errorf("Decode(proto.Marshal) without client_id = %+v, %v", m, ok)
	}
}

func TestRoundTripExpireAt(t *testing.T) {
	expire := time.Unix(1700000060, 123)
	in := &Message{ID: "id", PublishTime: time.Unix(1700000000, 0), Body: []byte("b"), ExpireAt: expire}
	b := Append(nil, in)
	if got, want := len(b), Size(in); got != want {
		t.Errorf("len(Append) = %d, Size = %d", got, want)
	}
	m, ok := Decode(b)
	if !ok || !m.ExpireAt.Equal(expire) || !m.NotBefore.IsZero() || !m.PublishTime.Equal(in.PublishTime) {
		t.Fatalf("Decode = %+v, %v; want expire_at %v", m, ok, expire)
	}
	var pb qgatev1.Envelope
	if err := proto.Unmarshal(b[len(Magic):], &pb); err != nil {
		t.Fatalf("proto.Unmarshal: %v", err)
	}
	if !pb.GetExpireAt().AsTime().Equal(expire) {
		t.Errorf("protobuf view = %v", &pb)
	}
	pb.ExpireAt = nil
	enc, err := proto.Marshal(&pb)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := Decode(append([]byte(Magic), enc...)); !ok || !m.ExpireAt.IsZero() {
		t.Errorf("Decode(proto.Marshal) without expire_at = %+v, %v", m, ok)
	}
}

func TestAckRecordIsProto(t *testing.T) {
	until, since, sent := time.Unix(1700000000, 42), time.Unix(1699999990, 7), time.Unix(1700000001, 3)
	in := &AckRecord{Instance: "i1", Topic: "t", Channel: "c#ephemeral", IDs: []string{"a", "b", ""},
		Held: []Hold{{ID: "h", Until: until, Since: since}, {ID: "", Until: time.Unix(0, 0)}}, Sent: sent}
	b := AppendAckRecord(nil, in)
	var pb qgatev1.AckRecord
	if err := proto.Unmarshal(b, &pb); err != nil {
		t.Fatal(err)
	}
	if pb.GetInstance() != "i1" || pb.GetTopic() != "t" || pb.GetChannel() != "c#ephemeral" || !slices.Equal(pb.GetMessageIds(), in.IDs) {
		t.Errorf("protobuf view = %v", &pb)
	}
	if h := pb.GetHeld(); len(h) != 2 || h[0].GetMessageId() != "h" || !h[0].GetUntil().AsTime().Equal(until) ||
		!h[0].GetSince().AsTime().Equal(since) || h[1].GetSince() != nil {
		t.Errorf("protobuf view of held = %v", h)
	}
	if !pb.GetSent().AsTime().Equal(sent) {
		t.Errorf("protobuf view of sent = %v", pb.GetSent())
	}
	enc, err := proto.Marshal(&pb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAckRecord(enc)
	if err != nil || got.Instance != "i1" || got.Topic != "t" || got.Channel != "c#ephemeral" || !slices.Equal(got.IDs, in.IDs) ||
		len(got.Held) != 2 || got.Held[0].ID != "h" || !got.Held[0].Until.Equal(until) || !got.Held[1].Until.Equal(time.Unix(0, 0)) ||
		!got.Held[0].Since.Equal(since) || !got.Held[1].Since.IsZero() || !got.Sent.Equal(sent) {
		t.Errorf("DecodeAckRecord(proto.Marshal) = %+v, %v", got, err)
	}
	if _, err := DecodeAckRecord([]byte{0x0a, 0x05, 'x'}); err == nil {
		t.Error("truncated record decoded")
	}
}

// FuzzEnvelopeRoundTrip checks that what Send would store decodes to what
// was sent, and that Size is the encoded size.
func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add("id", "k", "v", int64(1_700_000_000), int64(5), []byte("body"))
	f.Add("", "", "", int64(0), int64(0), []byte{})
	f.Fuzz(func(t *testing.T, id, k, v string, secs, nanos int64, body []byte) {
		if !utf8.ValidString(id) || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return // qgate's service rejects these before encoding
		}
		attrs := map[string]string{k: v}
		publish := time.Unix(secs, nanos%1e9)
		in := &Message{ID: id, Attributes: attrs, PublishTime: publish, Body: body}
		enc := Append(nil, in)
		if size := Size(in); size != len(enc) {
			t.Fatalf("Size = %d, encoded %d bytes", size, len(enc))
		}
		m, ok := Decode(enc)
		if !ok || m.ID != id || !maps.Equal(m.Attributes, attrs) || !bytes.Equal(m.Body, body) {
			t.Fatalf("decoded %+v, ok=%v, from id %q attrs %q body %q", m, ok, id, attrs, body)
		}
		if !publish.IsZero() && !m.PublishTime.Equal(publish) {
			t.Fatalf("publish time %v came back as %v", publish, m.PublishTime)
		}
	})
}
