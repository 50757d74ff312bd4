package service

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// rawCodec sends and receives pre-encoded bytes, to put on the wire what a
// protobuf library would refuse to encode.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// sendRequestBytes encodes SendRequest{topic, messages: [{body, attributes: {k: v}}]}
// by hand, without UTF-8 checks.
func sendRequestBytes(topic, body, k, v string) []byte {
	var entry, msg, req []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, k)
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendString(entry, v)
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, body)
	msg = protowire.AppendTag(msg, 2, protowire.BytesType)
	msg = protowire.AppendBytes(msg, entry)
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, topic)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, msg)
	return req
}

// TestInvalidUTF8OnTheWire: a request whose strings are not valid UTF-8
// (which a non-Go client could send) is refused by the gRPC runtime with
// INTERNAL before the service sees it; nothing reaches the backend and the
// connection keeps working.
func TestInvalidUTF8OnTheWire(t *testing.T) {
	b := newFaultBackend()
	conn := serve(t, New(b), nil)
	for _, tc := range []struct{ topic, k, v string }{
		{"t", "\xff", "v"},
		{"t", "k", "a\xc3"},
		{"t\xff", "k", "v"},
	} {
		in, out := sendRequestBytes(tc.topic, "x", tc.k, tc.v), []byte(nil)
		err := conn.Invoke(t.Context(), qgatev1.QueueService_Send_FullMethodName, &in, &out, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.Internal {
			t.Errorf("%q: got %v, want Internal from the gRPC runtime", tc, err)
		}
	}
	// The same bytes with valid strings go through: the encoding is right.
	in, out := sendRequestBytes("t", "x", "k", "v"), []byte(nil)
	if err := conn.Invoke(t.Context(), qgatev1.QueueService_Send_FullMethodName, &in, &out, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	if n := b.sends.Load(); n != 1 {
		t.Errorf("the backend saw %d sends, want 1", n)
	}
}
