package service

import (
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/envelope"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// FuzzValidateSend checks that validation never panics, that it rejects only
// with INVALID_ARGUMENT and field violations, and that what it accepts is
// what nsqd accepts: a valid topic, bodies of 1 byte to the limit with the
// envelope, a delay within bounds.
func FuzzValidateSend(f *testing.F) {
	f.Add("t", []byte("body"), "k", "v", int64(0), int32(0), uint16(1))
	f.Add("a#ephemeral", []byte{}, "", "", int64(3600), int32(1), uint16(2))
	f.Add("#ephemeral", []byte("x"), "\xff", "v", int64(-1), int32(0), uint16(0))
	f.Add("bad name", []byte("x"), "k", "\xc3", int64(1), int32(-1), uint16(1001))
	l := DefaultLimits()
	l.MaxBodyBytes = 256 // small limits let the fuzzer reach them
	l.MaxBatchBytes = 1024
	l.MaxBatchMessages = 8
	f.Fuzz(func(t *testing.T, topic string, body []byte, k, v string, secs int64, nanos int32, n uint16) {
		req := &qgatev1.SendRequest{Topic: topic, Delay: &durationpb.Duration{Seconds: secs, Nanos: nanos}}
		if n > 16 {
			n %= 16
		}
		for range n {
			req.Messages = append(req.Messages, &qgatev1.Message{Body: body, Attributes: map[string]string{k: v}})
		}
		delay, err := checkSend(&l, nsq.Sizer{}, req)
		if err != nil {
			if code, fields := violationFields(err); code != codes.InvalidArgument || len(fields) == 0 {
				t.Fatalf("got %v %q, want InvalidArgument with violations", code, fields)
			}
			return
		}
		if !ValidName(topic) || delay < 0 || delay > l.MaxDelay || n == 0 || int(n) > l.MaxBatchMessages {
			t.Fatalf("accepted topic %q, delay %v, %d messages", topic, delay, n)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) || k == "" {
			t.Fatalf("accepted attribute %q=%q", k, v)
		}
		// Any real publish time and replica count fits: sized by the
		// envelope's own encoder, not by the Sizer under test.
		size := len(envelope.Append(nil, &envelope.Message{ID: idPlaceholder, Attributes: map[string]string{k: v}, PublishTime: time.Now(), Body: body,
			Replicas: MaxReplicas, NotBefore: time.Now().Add(time.Hour), Standby: true}))
		if len(body) == 0 || size > l.MaxBodyBytes || 4+int(n)*(4+size) > l.MaxBatchBytes {
			t.Fatalf("accepted %d messages of %d bytes (%d enveloped)", n, len(body), size)
		}
	})
}
