package service

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// violationFields returns the code of err and the fields its BadRequest
// detail names, sorted.
func violationFields(err error) (codes.Code, []string) {
	st := status.Convert(err)
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	slices.Sort(fields)
	return st.Code(), fields
}

func msgs(bodies ...string) []*qgatev1.Message {
	out := make([]*qgatev1.Message, len(bodies))
	for i, b := range bodies {
		out[i] = &qgatev1.Message{Body: []byte(b)}
	}
	return out
}

// idMsgs returns one message per id, with the id as its body.
func idMsgs(ids ...string) []*qgatev1.Message {
	out := make([]*qgatev1.Message, len(ids))
	for i, id := range ids {
		out[i] = &qgatev1.Message{Id: id, Body: []byte("body " + id)}
	}
	return out
}

// ttlMsgs returns one message per ttl (0: unset).
func ttlMsgs(ttls ...time.Duration) []*qgatev1.Message {
	out := make([]*qgatev1.Message, len(ttls))
	for i, ttl := range ttls {
		out[i] = &qgatev1.Message{Body: []byte("x")}
		if ttl != 0 {
			out[i].Ttl = durationpb.New(ttl)
		}
	}
	return out
}

// maxBody is the largest body that fits the default limit with no
// attributes.
func maxBody() int {
	over := nsq.Sizer{}.MessageSize(&backends.Message{ID: idPlaceholder, Body: make([]byte, DefaultMaxBodyBytes)}) - DefaultMaxBodyBytes
	return DefaultMaxBodyBytes - over
}

func manyAttrs(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[strings.Repeat("k", i+1)] = "v"
	}
	return m
}

// badSendRequests is the table of bad (and borderline good) Send requests,
// shared by the validation test and the gRPC test over real nsqd.
func badSendRequests() []struct {
	name   string
	req    *qgatev1.SendRequest
	fields []string // nil: valid
} {
	big := maxBody()
	type tc = struct {
		name   string
		req    *qgatev1.SendRequest
		fields []string
	}
	return []tc{
		{"ok", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x")}, nil},
		{"ok 64-char topic", &qgatev1.SendRequest{Topic: strings.Repeat("a", 64), Messages: msgs("x")}, nil},
		{"ok ephemeral", &qgatev1.SendRequest{Topic: "a#ephemeral", Messages: msgs("x")}, nil},
		{"ok 64-char ephemeral", &qgatev1.SendRequest{Topic: strings.Repeat("a", 54) + "#ephemeral", Messages: msgs("x")}, nil},
		{"ok all name bytes", &qgatev1.SendRequest{Topic: "azAZ09._-", Messages: msgs("x")}, nil},
		{"ok max body", &qgatev1.SendRequest{Topic: "t", Messages: msgs(strings.Repeat("b", big))}, nil},
		{"ok delay 1h", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(time.Hour)}, nil},
		{"ok 64 attributes", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: manyAttrs(64)}}}, nil},
		{"ok 1000 messages", &qgatev1.SendRequest{Topic: "t", Messages: msgs(slices.Repeat([]string{"x"}, 1000)...)}, nil},

		{"empty topic", &qgatev1.SendRequest{Messages: msgs("x")}, []string{"topic"}},
		{"65-char topic", &qgatev1.SendRequest{Topic: strings.Repeat("a", 65), Messages: msgs("x")}, []string{"topic"}},
		{"65-char ephemeral topic", &qgatev1.SendRequest{Topic: strings.Repeat("a", 55) + "#ephemeral", Messages: msgs("x")}, []string{"topic"}},
		{"space in topic", &qgatev1.SendRequest{Topic: "a b", Messages: msgs("x")}, []string{"topic"}},
		{"slash in topic", &qgatev1.SendRequest{Topic: "a/b", Messages: msgs("x")}, []string{"topic"}},
		{"colon in topic", &qgatev1.SendRequest{Topic: "a:b", Messages: msgs("x")}, []string{"topic"}},
		{"non-ASCII topic", &qgatev1.SendRequest{Topic: "tópico", Messages: msgs("x")}, []string{"topic"}},
		{"bare #ephemeral", &qgatev1.SendRequest{Topic: "#ephemeral", Messages: msgs("x")}, []string{"topic"}},
		{"double #ephemeral", &qgatev1.SendRequest{Topic: "a#ephemeral#ephemeral", Messages: msgs("x")}, []string{"topic"}},
		{"partial #ephem", &qgatev1.SendRequest{Topic: "a#ephem", Messages: msgs("x")}, []string{"topic"}},
		{"#ephemeral in the middle", &qgatev1.SendRequest{Topic: "a#ephemeralb", Messages: msgs("x")}, []string{"topic"}},
		{"upper-case #EPHEMERAL", &qgatev1.SendRequest{Topic: "a#EPHEMERAL", Messages: msgs("x")}, []string{"topic"}},
		{"no messages", &qgatev1.SendRequest{Topic: "t"}, []string{"messages"}},
		{"empty body", &qgatev1.SendRequest{Topic: "t", Messages: msgs("")}, []string{"messages[0].body"}},
		{"one empty body in a batch", &qgatev1.SendRequest{Topic: "t", Messages: msgs("a", "b", "c", "", "e")}, []string{"messages[3].body"}},
		{"nil message", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{nil}}, []string{"messages[0].body"}},
		{"body of 1 MiB (too big with the envelope)", &qgatev1.SendRequest{Topic: "t", Messages: msgs(strings.Repeat("b", DefaultMaxBodyBytes))}, []string{"messages[0].body"}},
		{"body one byte over", &qgatev1.SendRequest{Topic: "t", Messages: msgs(strings.Repeat("b", big+1))}, []string{"messages[0].body"}},
		{"1001 messages", &qgatev1.SendRequest{Topic: "t", Messages: msgs(slices.Repeat([]string{"x"}, 1001)...)}, []string{"messages"}},
		{"batch over 5 MiB", &qgatev1.SendRequest{Topic: "t", Messages: msgs(slices.Repeat([]string{strings.Repeat("b", big)}, 5)...)}, []string{"messages"}},
		{"65 attributes", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: manyAttrs(65)}}}, []string{"messages[0].attributes"}},
		{"empty attribute key", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: map[string]string{"": "v"}}}}, []string{`messages[0].attributes[""]`}},
		{"257-byte attribute key", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: map[string]string{strings.Repeat("k", 257): "v"}}}}, []string{`messages[0].attributes["` + strings.Repeat("k", 64) + `..."]`}},
		{"4097-byte attribute value", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: map[string]string{"k": strings.Repeat("v", 4097)}}}}, []string{`messages[0].attributes["k"]`}},
		{"delay past 1h", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(time.Hour + time.Nanosecond)}, []string{"delay"}},
		{"negative delay", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(-time.Second)}, []string{"delay"}},
		{"malformed delay", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: &durationpb.Duration{Seconds: 1, Nanos: -1}}, []string{"delay"}},
		{"several bad fields", &qgatev1.SendRequest{Topic: "a b", Messages: msgs("a", ""), Delay: durationpb.New(2 * time.Hour)}, []string{"delay", "messages[1].body", "topic"}},
		{"ok deliver_at in the past", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), DeliverAt: timestamppb.New(time.Now().Add(-time.Hour))}, nil},
		{"ok deliver_at within the limit", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), DeliverAt: timestamppb.New(time.Now().Add(50 * time.Minute))}, nil},
		{"deliver_at past the limit", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), DeliverAt: timestamppb.New(time.Now().Add(2 * time.Hour))}, []string{"deliver_at"}},
		{"deliver_at with delay", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(time.Second), DeliverAt: timestamppb.New(time.Now())}, []string{"deliver_at"}},
		{"malformed deliver_at", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), DeliverAt: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}}, []string{"deliver_at"}},
		{"ttl not outlasting deliver_at", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(10 * time.Minute), DeliverAt: timestamppb.New(time.Now().Add(30 * time.Minute))}, []string{"messages[0].ttl"}},

		{"ok client ids", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("a", strings.Repeat("x", 64), "AZaz09._:-", "")}, nil},
		{"ok empty ids repeat", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("", "")}, nil},
		{"65-byte id", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("a", strings.Repeat("x", 65))}, []string{"messages[1].id"}},
		{"space in id", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("a b")}, []string{"messages[0].id"}},
		{"slash in id", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("a/b")}, []string{"messages[0].id"}},
		{"non-ASCII id", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("idé")}, []string{"messages[0].id"}},
		{"duplicate id in a request", &qgatev1.SendRequest{Topic: "t", Messages: idMsgs("a", "b", "a")}, []string{"messages[2].id"}},
		{"ok ttl", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(time.Millisecond, MaxTTL, 0)}, nil},
		{"ok ttl just past the delay", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(time.Hour + time.Nanosecond*1e6), Delay: durationpb.New(time.Hour)}, nil},
		{"ttl under 1ms", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(time.Second, time.Millisecond-1)}, []string{"messages[1].ttl"}},
		{"ttl past 366 days", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(MaxTTL + 1)}, []string{"messages[0].ttl"}},
		{"negative ttl", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(-time.Second)}, []string{"messages[0].ttl"}},
		{"malformed ttl", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}}}}, []string{"messages[0].ttl"}},
		{"ttl not longer than the delay", &qgatev1.SendRequest{Topic: "t", Messages: ttlMsgs(time.Minute, 2*time.Minute), Delay: durationpb.New(time.Minute)}, []string{"messages[0].ttl"}},
		{"max body with a ttl (the expiry counts)", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte(strings.Repeat("b", big)), Ttl: durationpb.New(time.Minute)}}}, []string{"messages[0].body"}},
		{"max body with a 64-byte id (the id counts)", &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Id: strings.Repeat("x", 64), Body: []byte(strings.Repeat("b", big))}}}, []string{"messages[0].body"}},
	}
}

// TestCheckSendLongDelay: with MaxSendDelay (a backend with a timer),
// delay and deliver_at take up to it, and not past it.
func TestCheckSendLongDelay(t *testing.T) {
	l := DefaultLimits()
	l.MaxSendDelay = nsq.MaxLongDelay
	for _, tc := range []struct {
		name   string
		req    *qgatev1.SendRequest
		fields []string
	}{
		{"7 days", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(7 * 24 * time.Hour)}, nil},
		{"366 days", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(nsq.MaxLongDelay)}, nil},
		{"366 days and 1ns", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), Delay: durationpb.New(nsq.MaxLongDelay + 1)}, []string{"delay"}},
		{"at in 30 days", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), DeliverAt: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))}, nil},
		{"at in 367 days", &qgatev1.SendRequest{Topic: "t", Messages: msgs("x"), DeliverAt: timestamppb.New(time.Now().Add(nsq.MaxLongDelay + 24*time.Hour))}, []string{"deliver_at"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkSend(&l, nsq.Sizer{}, tc.req)
			if code, fields := violationFields(err); !slices.Equal(fields, tc.fields) || (tc.fields != nil && code != codes.InvalidArgument) {
				t.Errorf("got %v %q, want %q (%v)", code, fields, tc.fields, err)
			}
		})
	}
}

func TestCheckSend(t *testing.T) {
	l := DefaultLimits()
	for _, tc := range badSendRequests() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkSend(&l, nsq.Sizer{}, tc.req)
			code, fields := violationFields(err)
			if tc.fields == nil {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if code != codes.InvalidArgument || !slices.Equal(fields, tc.fields) {
				t.Errorf("got %v %q, want InvalidArgument %q (%v)", code, fields, tc.fields, err)
			}
		})
	}
}

// TestTooBigNamesLargestBody: the error for a body too big with the
// envelope gives the largest body that fits with the same attributes, and
// that body fits exactly (one byte more does not), whatever the attributes
// and however far over the limit the body was.
func TestTooBigNamesLargestBody(t *testing.T) {
	l := DefaultLimits()
	for _, tc := range []struct {
		name  string
		attrs map[string]string
		size  int
	}{
		{"1 MiB, no attributes", nil, DefaultMaxBodyBytes},
		{"1 MiB, attributes", manyAttrs(40), DefaultMaxBodyBytes},
		{"2 MiB", map[string]string{"k": strings.Repeat("v", 4000)}, 2 << 20},
		{"a byte over", nil, maxBody() + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: make([]byte, tc.size), Attributes: tc.attrs}}}
			_, err := checkSend(&l, nsq.Sizer{}, req)
			var desc string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
					desc = br.GetFieldViolations()[0].GetDescription()
				}
			}
			_, rest, ok := strings.Cut(desc, "a body may have at most ")
			if !ok {
				t.Fatalf("description %q names no largest body", desc)
			}
			var largest int
			if _, err := fmt.Sscanf(rest, "%d bytes", &largest); err != nil {
				t.Fatalf("description %q: %v", desc, err)
			}
			size := func(n int) int {
				return nsq.Sizer{}.MessageSize(&backends.Message{ID: idPlaceholder, Attributes: tc.attrs, Body: make([]byte, n)})
			}
			if size(largest) > l.MaxBodyBytes || size(largest+1) <= l.MaxBodyBytes {
				t.Errorf("largest body %d: sized %d, and %d one byte more; limit %d", largest, size(largest), size(largest+1), l.MaxBodyBytes)
			}
		})
	}
}

// TestCheckSendInvalidUTF8 covers what the gRPC codec already rejects, for
// callers that build requests in process.
func TestCheckSendInvalidUTF8(t *testing.T) {
	l := DefaultLimits()
	for _, attrs := range []map[string]string{{"\xff": "v"}, {"k": "a\xc3"}} {
		req := &qgatev1.SendRequest{Topic: "t", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: attrs}}}
		_, err := checkSend(&l, nsq.Sizer{}, req)
		code, fields := violationFields(err)
		if code != codes.InvalidArgument || len(fields) != 1 || !strings.HasPrefix(fields[0], "messages[0].attributes[") {
			t.Errorf("%q: got %v %q, want InvalidArgument on the attribute", attrs, code, fields)
		}
	}
}

func TestViolationsCapped(t *testing.T) {
	l := DefaultLimits()
	req := &qgatev1.SendRequest{Topic: "t", Messages: msgs(slices.Repeat([]string{""}, 1000)...)}
	_, err := checkSend(&l, nsq.Sizer{}, req)
	code, fields := violationFields(err)
	if code != codes.InvalidArgument || len(fields) != maxViolations+1 {
		t.Fatalf("got %v with %d violations, want %d", code, len(fields), maxViolations+1)
	}
	if !strings.Contains(status.Convert(err).Message(), "and 999 more") {
		t.Errorf("message %q does not count the rest", status.Convert(err).Message())
	}
}

func TestCheckOpen(t *testing.T) {
	l := DefaultLimits()
	long := strings.Repeat("a", 60)
	tests := []struct {
		name   string
		open   *qgatev1.SubscribeRequest_Open
		fields []string
		want   backendsOpts
	}{
		{"defaults", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c"}, nil,
			backendsOpts{100, 60 * time.Second, 0, "t.dead"}},
		{"ephemeral topic drops the suffix in the dead-letter default", &qgatev1.SubscribeRequest_Open{Topic: "t#ephemeral", Channel: "c#ephemeral", MaxAttempts: 3}, nil,
			backendsOpts{100, 60 * time.Second, 3, "t.dead"}},
		{"explicit", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", MaxInFlight: 2500, AckDeadline: durationpb.New(15 * time.Minute), MaxAttempts: 65535, DeadLetterTopic: "dl"}, nil,
			backendsOpts{2500, 15 * time.Minute, 65535, "dl"}},
		{"min ack deadline", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", AckDeadline: durationpb.New(time.Second)}, nil,
			backendsOpts{100, time.Second, 0, "t.dead"}},
		{"long topic, unused default dead-letter topic", &qgatev1.SubscribeRequest_Open{Topic: long, Channel: "c"}, nil,
			backendsOpts{100, 60 * time.Second, 0, ""}},

		{"no topic", &qgatev1.SubscribeRequest_Open{Channel: "c"}, []string{"open.topic"}, backendsOpts{}},
		{"no channel", &qgatev1.SubscribeRequest_Open{Topic: "t"}, []string{"open.channel"}, backendsOpts{}},
		{"65-char channel", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: strings.Repeat("c", 65)}, []string{"open.channel"}, backendsOpts{}},
		{"bare #ephemeral channel", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "#ephemeral"}, []string{"open.channel"}, backendsOpts{}},
		{"max in flight 2501", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", MaxInFlight: 2501}, []string{"open.max_in_flight"}, backendsOpts{}},
		{"ack deadline 999ms", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", AckDeadline: durationpb.New(999 * time.Millisecond)}, []string{"open.ack_deadline"}, backendsOpts{}},
		{"ack deadline 0", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", AckDeadline: durationpb.New(0)}, []string{"open.ack_deadline"}, backendsOpts{}},
		{"ack deadline past 15m", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", AckDeadline: durationpb.New(15*time.Minute + time.Second)}, []string{"open.ack_deadline"}, backendsOpts{}},
		{"max attempts 65536", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", MaxAttempts: 65536}, []string{"open.max_attempts"}, backendsOpts{}},
		{"bad dead-letter topic", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", DeadLetterTopic: "d/l"}, []string{"open.dead_letter_topic"}, backendsOpts{}},
		{"default dead-letter topic too long", &qgatev1.SubscribeRequest_Open{Topic: long, Channel: "c", MaxAttempts: 5}, []string{"open.dead_letter_topic"}, backendsOpts{}},
		{"retry minimum under 10ms", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", RetryPolicy: &qgatev1.RetryPolicy{MinimumBackoff: durationpb.New(9 * time.Millisecond)}}, []string{"open.retry_policy.minimum_backoff"}, backendsOpts{}},
		{"retry minimum past 1h", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", RetryPolicy: &qgatev1.RetryPolicy{MinimumBackoff: durationpb.New(time.Hour + 1)}}, []string{"open.retry_policy.minimum_backoff"}, backendsOpts{}},
		{"retry maximum under the minimum", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", RetryPolicy: &qgatev1.RetryPolicy{MinimumBackoff: durationpb.New(time.Minute), MaximumBackoff: durationpb.New(time.Second)}}, []string{"open.retry_policy.maximum_backoff"}, backendsOpts{}},
		{"retry maximum past 1h", &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", RetryPolicy: &qgatev1.RetryPolicy{MaximumBackoff: durationpb.New(2 * time.Hour)}}, []string{"open.retry_policy.maximum_backoff"}, backendsOpts{}},
		{"default dead-letter topic too long for expired messages", &qgatev1.SubscribeRequest_Open{Topic: long, Channel: "c", DeadLetterExpired: true}, []string{"open.dead_letter_topic"}, backendsOpts{}},
		{"nil open", nil, []string{"open.channel", "open.topic"}, backendsOpts{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, _, err := checkOpen(&l, tc.open)
			code, fields := violationFields(err)
			if tc.fields != nil {
				if code != codes.InvalidArgument || !slices.Equal(fields, tc.fields) {
					t.Errorf("got %v %q, want InvalidArgument %q (%v)", code, fields, tc.fields, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			got := backendsOpts{opts.MaxInFlight, opts.AckDeadline, opts.MaxAttempts, opts.DeadLetterTopic}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestCheckOpenRetryDefaults: an empty retry policy is 1 s to 10 min; a
// minimum above 10 min raises the default maximum to it; none is nil.
func TestCheckOpenRetryDefaults(t *testing.T) {
	l := DefaultLimits()
	for _, tc := range []struct {
		policy *qgatev1.RetryPolicy
		want   *backends.RetryPolicy
	}{
		{nil, nil},
		{&qgatev1.RetryPolicy{}, &backends.RetryPolicy{Min: time.Second, Max: 10 * time.Minute}},
		{&qgatev1.RetryPolicy{MinimumBackoff: durationpb.New(20 * time.Minute)}, &backends.RetryPolicy{Min: 20 * time.Minute, Max: 20 * time.Minute}},
		{&qgatev1.RetryPolicy{MaximumBackoff: durationpb.New(time.Hour)}, &backends.RetryPolicy{Min: time.Second, Max: time.Hour}},
	} {
		opts, _, err := checkOpen(&l, &qgatev1.SubscribeRequest_Open{Topic: "t", Channel: "c", RetryPolicy: tc.policy})
		if err != nil {
			t.Fatal(err)
		}
		if (opts.Retry == nil) != (tc.want == nil) || opts.Retry != nil && *opts.Retry != *tc.want {
			t.Errorf("policy %v: got %+v, want %+v", tc.policy, opts.Retry, tc.want)
		}
	}
}

type backendsOpts struct {
	inFlight int
	deadline time.Duration
	attempts int
	dead     string
}

func TestIDs(t *testing.T) {
	a, b := newIDSource(), newIDSource()
	seen := make(map[string]bool)
	for _, src := range []*idSource{a, b} {
		for range 10 {
			for _, id := range src.assign(100) {
				if len(id) != idLen || strings.Trim(id, "0123456789abcdef") != "" {
					t.Fatalf("id %q is not 32 lowercase hex characters", id)
				}
				if seen[id] {
					t.Fatalf("id %q assigned twice", id)
				}
				seen[id] = true
			}
		}
	}
}

func TestAckTable(t *testing.T) {
	tab := newAckTable(2, time.Hour)
	d1, d2 := &deliveryStub, &deliveryStub
	id1, id2 := tab.add(d1), tab.add(d2)
	if id1 == id2 {
		t.Fatalf("two deliveries got ack id %q", id1)
	}
	if _, ok := tab.touch(id1); !ok {
		t.Errorf("touch %s: unknown", id1)
	}
	if _, ok := tab.take(id1); !ok {
		t.Errorf("take %s: unknown", id1)
	}
	if _, ok := tab.take(id1); ok {
		t.Errorf("take %s twice: known", id1)
	}
	for _, bad := range []string{"", "0", "01", "x", "-1", "18446744073709551616", id1 + "0"} {
		if _, ok := tab.take(bad); ok {
			t.Errorf("take %q: known", bad)
		}
	}
	// Deliveries the client never settles are bounded even when the backend
	// keeps handing out more (their deadlines passed).
	tab = newAckTable(2, -time.Second) // every entry expired at once
	for range 100 {
		tab.add(&deliveryStub)
	}
	if n := tab.len(); n > 4 {
		t.Errorf("table holds %d entries, want at most 4", n)
	}
	tab = newAckTable(2, time.Hour) // nothing expires: the oldest go
	for range 100 {
		tab.add(&deliveryStub)
	}
	if n := tab.len(); n > 4 {
		t.Errorf("table holds %d entries, want at most 4", n)
	}
}

var deliveryStub = backends.Delivery{}
