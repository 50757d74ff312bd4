// Package backendtest is the conformance suite of backends.Backend: every
// backend proves it keeps the contract written in package backends by
// running RunConformanceTests from its own tests, with a few lines:
//
//	func TestConformance(t *testing.T) {
//		backendtest.RunConformanceTests(t, func(t *testing.T) backendtest.Harness {
//			return newHarness(t) // a fresh backend over real stores
//		})
//	}
//
// Each test builds its own harness, uses its own topics and runs in parallel
// with the others. What differs between backends is data (Features), not a
// fork of the suite. Timings are tight enough that a broken promise fails
// (ack deadlines of 1s, delays of 1.5s) and loose enough for a loaded
// machine running -race (events that must happen get several seconds).
package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
)

// Harness gives the suite a backend under test and a way to reach its store
// directly. newHarness is called once per test; the harness registers its
// own cleanup with t.Cleanup (the suite closes the Backend too; Close is safe
// twice).
type Harness interface {
	// Backend returns the backend under test, the same on every call.
	Backend() backends.Backend
	// RawPublish writes body to topic the way a plain producer of the store
	// does (for NSQ: a go-nsq Producer, no qgate envelope), failing t on
	// error. Only called when Features().RawMessages.
	RawPublish(t testing.TB, topic string, body []byte)
	// Features tells which optional tests apply.
	Features() Features
}

// Features describe what a backend supports; tests of a missing feature are
// skipped, with the reason.
type Features struct {
	// RawMessages: messages written by plain producers of the store are
	// delivered as-is, and RawPublish works.
	RawMessages bool
	// Delay: SendOptions.Delay defers delivery.
	Delay bool
	// DeadLetter: SubscribeOptions.MaxAttempts and DeadLetterTopic work.
	DeadLetter bool
	// Slack is how late an event may happen after it is due (a delay or an
	// ack deadline passing, a nack's requeue). Default 2s, enough for
	// in-process nodes (internal/nsqd), which rescan their channels every
	// second. nsqd processes rescan every 5s (not settable by flag), so a
	// new channel's deferred and timed-out messages can be 5s late: use 6s
	// or more.
	Slack time.Duration
}

// Dead-letter attributes, as documented in proto/qgate/v1/queue.proto.
const (
	AttrDeadLetterAttempts = "qgate-dead-letter-attempts"
	AttrDeadLetterReason   = "qgate-dead-letter-reason"
)

// Timings of the suite.
const (
	// waitFor bounds an event that must happen soon (a delivery of a
	// message that is ready).
	waitFor = 5 * time.Second
	// early is how much sooner than due a timed event may be observed:
	// clock granularity, not a real margin.
	early = 20 * time.Millisecond
	// ackDeadline is the short deadline of redelivery tests.
	ackDeadline = time.Second
	// longDeadline is a deadline that never passes in a test.
	longDeadline = time.Minute
	// delay is the requeue and send delay of the timing tests.
	delay = 1500 * time.Millisecond
)

// test is one conformance test.
type test struct {
	name string
	run  func(t *testing.T, h Harness, f Features)
}

// tests lists the suite. Every entry runs as t.Run(name) in parallel.
var tests = []test{
	{"SendReceive", testSendReceive},
	{"Batch", testBatch},
	{"Attributes", testAttributes},
	{"Delay", testDelay},
	{"AckStopsRedelivery", testAckStopsRedelivery},
	{"DeadlineRedelivers", testDeadlineRedelivers},
	{"NackRedelivers", testNackRedelivers},
	{"ExtendKeepsDelivery", testExtend},
	{"CloseHandsBack", testCloseHandsBack},
	{"MaxInFlight", testMaxInFlight},
	{"SubscribersSplitChannelsCopy", testSplitAndCopy},
	{"RawBody", testRawBody},
	{"SettleTwice", testSettleTwice},
	{"ReceiveContext", testReceiveContext},
	{"SubscriptionClose", testSubscriptionClose},
	{"BackendClose", testBackendClose},
	{"DeadLetter", testDeadLetter},
}

// RunConformanceTests runs the suite, each test with a harness of its own.
func RunConformanceTests(t *testing.T, newHarness func(t *testing.T) Harness) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			b := h.Backend()
			if b == nil {
				t.Fatal("Harness.Backend() = nil")
			}
			t.Cleanup(func() { b.Close() })
			f := h.Features()
			if f.Slack <= 0 {
				f.Slack = 2 * time.Second
			}
			tc.run(t, h, f)
		})
	}
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// newTopic returns a topic name unique to this test run, valid for NSQ
// (^[.a-zA-Z0-9_-]+$, at most 64 characters).
func newTopic(t testing.TB, suffix string) string {
	name := unsafeChars.ReplaceAllString(t.Name(), "_")
	if i := strings.LastIndex(name, "_"); i >= 0 && i+1 < len(name) {
		name = name[i+1:]
	}
	if len(name) > 24 {
		name = name[:24]
	}
	topic := "bt." + name + "." + randHex(6)
	if suffix != "" {
		topic += "." + suffix
	}
	return topic
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newMsg returns a message with a fresh id, the given body and attributes,
// published now.
func newMsg(body string, attrs map[string]string) *backends.Message {
	return &backends.Message{
		ID:          randHex(12),
		Body:        []byte(body),
		Attributes:  attrs,
		PublishTime: time.Now(),
	}
}

// newMsgs returns n messages with distinct bodies.
func newMsgs(n int, prefix string) []*backends.Message {
	msgs := make([]*backends.Message, n)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("%s-%d", prefix, i), nil)
	}
	return msgs
}

// send sends msgs and checks that Send left them as they were.
func send(t testing.TB, b backends.Backend, topic string, opts backends.SendOptions, msgs ...*backends.Message) {
	t.Helper()
	before := make([]*backends.Message, len(msgs))
	for i, m := range msgs {
		before[i] = clone(m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Send(ctx, topic, msgs, opts); err != nil {
		t.Fatalf("Send(%s, %d messages): %v", topic, len(msgs), err)
	}
	for i, m := range msgs {
		if !sameMessage(m, before[i]) {
			b := before[i]
			t.Errorf("Send modified message %s: body %q attributes %q publish time %v; sent with body %q attributes %q publish time %v",
				b.ID, m.Body, m.Attributes, m.PublishTime, b.Body, b.Attributes, b.PublishTime)
		}
	}
}

func clone(m *backends.Message) *backends.Message {
	c := *m
	c.Body = append([]byte(nil), m.Body...)
	if m.Attributes != nil {
		c.Attributes = maps.Clone(m.Attributes)
	}
	return &c
}

func sameMessage(a, b *backends.Message) bool {
	return a.ID == b.ID && string(a.Body) == string(b.Body) &&
		sameAttrs(a.Attributes, b.Attributes) && a.PublishTime.Equal(b.PublishTime)
}

// subscribe opens a subscription closed at cleanup. Zero MaxInFlight and
// AckDeadline become 100 and longDeadline.
func subscribe(t testing.TB, b backends.Backend, opts backends.SubscribeOptions) backends.Subscription {
	t.Helper()
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = 100
	}
	if opts.AckDeadline == 0 {
		opts.AckDeadline = longDeadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sub, err := b.Subscribe(ctx, opts)
	if err != nil {
		t.Fatalf("Subscribe(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		start := time.Now()
		sub.Close()
		if d := time.Since(start); d > time.Second {
			t.Logf("Subscription.Close(%s/%s) took %v", opts.Topic, opts.Channel, d)
		}
	})
	return sub
}

// receive returns the next delivery, failing t if none comes within d.
func receive(t testing.TB, sub backends.Subscription, d time.Duration, what string) *backends.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	del, err := sub.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive (%s): %v after waiting %v", what, err, d)
	}
	if del == nil || del.Acker == nil {
		t.Fatalf("Receive (%s) = %+v, nil error: want a delivery with an Acker", what, del)
	}
	return del
}

// receiveN receives n deliveries, acking each if ack. Each may take up to
// waitFor.
func receiveN(t testing.TB, sub backends.Subscription, n int, ack bool, what string) []*backends.Delivery {
	t.Helper()
	dels := make([]*backends.Delivery, 0, n)
	start := time.Now()
	for len(dels) < n {
		d := receive(t, sub, waitFor, fmt.Sprintf("%s: %d of %d, %v since the first", what, len(dels)+1, n, time.Since(start).Round(time.Millisecond)))
		if ack {
			mustAck(t, d)
		}
		dels = append(dels, d)
	}
	return dels
}

// expectNone fails t if sub delivers anything within d.
func expectNone(t testing.TB, sub backends.Subscription, d time.Duration, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	del, err := sub.Receive(ctx)
	switch {
	case err == nil:
		t.Fatalf("%s: got delivery id=%s body=%q attempt=%d, want none within %v",
			why, del.ID, del.Body, del.Attempt, d)
	case !errors.Is(err, context.DeadlineExceeded):
		t.Fatalf("%s: Receive = %v, want context.DeadlineExceeded after %v", why, err, d)
	}
}

func mustAck(t testing.TB, d *backends.Delivery) {
	t.Helper()
	if err := d.Acker.Ack(); err != nil {
		t.Fatalf("Ack(id=%s attempt=%d): %v", d.ID, d.Attempt, err)
	}
}

// wantUnknown fails t unless err is backends.ErrUnknownDelivery.
func wantUnknown(t testing.TB, err error, what string) {
	t.Helper()
	if !errors.Is(err, backends.ErrUnknownDelivery) {
		t.Errorf("%s = %v, want backends.ErrUnknownDelivery", what, err)
	}
}

// checkSame fails t unless d carries m (id, body, attributes, publish time).
func checkSame(t testing.TB, d *backends.Delivery, m *backends.Message) {
	t.Helper()
	if d.ID != m.ID {
		t.Errorf("delivery ID = %q, want %q", d.ID, m.ID)
	}
	if string(d.Body) != string(m.Body) {
		t.Errorf("delivery %s Body = %q, want %q", m.ID, d.Body, m.Body)
	}
	if !sameAttrs(d.Attributes, m.Attributes) {
		t.Errorf("delivery %s Attributes = %q, want %q", m.ID, d.Attributes, m.Attributes)
	}
	if diff := d.PublishTime.Sub(m.PublishTime); diff < -time.Millisecond || diff > time.Millisecond {
		t.Errorf("delivery %s PublishTime = %v, want %v", m.ID, d.PublishTime, m.PublishTime)
	}
}

// sameAttrs compares attribute maps, nil equal to empty.
func sameAttrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// byID indexes messages by id.
func byID(msgs []*backends.Message) map[string]*backends.Message {
	m := make(map[string]*backends.Message, len(msgs))
	for _, msg := range msgs {
		m[msg.ID] = msg
	}
	return m
}
