package backendtest

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
)

// testRawBody: a body written by a plain producer of the store is delivered
// as-is, with nil Attributes and attempt 1.
func testRawBody(t *testing.T, h Harness, f Features) {
	if !f.RawMessages {
		t.Skip("backend does not deliver raw store messages")
	}
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	bodies := map[string]bool{
		"plain text from an NSQ producer": true,
		`{"json":true,"n":1}`:             true,
		"\x00\x01\x02 binary":             true,
	}
	for body := range bodies {
		h.RawPublish(t, topic, []byte(body))
	}
	for range bodies {
		d := receive(t, sub, waitFor, "a raw message")
		if !bodies[string(d.Body)] {
			t.Errorf("raw delivery Body = %q, not one of the bodies published (or a duplicate)", d.Body)
		}
		delete(bodies, string(d.Body))
		if d.Attributes != nil {
			t.Errorf("raw delivery Attributes = %q, want nil", d.Attributes)
		}
		if d.Attempt != 1 {
			t.Errorf("raw delivery Attempt = %d, want 1", d.Attempt)
		}
		if d.ID == "" {
			t.Error("raw delivery has an empty ID, want the store's id")
		}
		mustAck(t, d)
	}
}

// testSettleTwice: once a delivery is acked or nacked, every further Ack,
// Nack or Extend returns ErrUnknownDelivery; of concurrent Acks exactly one
// succeeds.
func testSettleTwice(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	send(t, b, topic, backends.SendOptions{}, newMsgs(3, "m")...)
	dels := receiveN(t, sub, 3, false, "messages to settle")

	mustAck(t, dels[0])
	wantUnknown(t, dels[0].Acker.Ack(), "second Ack")
	wantUnknown(t, dels[0].Acker.Nack(0), "Nack after Ack")
	wantUnknown(t, dels[0].Acker.Extend(), "Extend after Ack")

	if err := dels[1].Acker.Nack(time.Minute); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	wantUnknown(t, dels[1].Acker.Ack(), "Ack after Nack")
	wantUnknown(t, dels[1].Acker.Nack(0), "second Nack")
	wantUnknown(t, dels[1].Acker.Extend(), "Extend after Nack")

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = dels[2].Acker.Ack() })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, backends.ErrUnknownDelivery):
			t.Errorf("concurrent Ack = %v, want nil or ErrUnknownDelivery", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent Acks succeeded, want exactly 1", ok, len(errs))
	}
}

// testReceiveContext: Receive returns the context's own error, unwrapped,
// for a cancelled context and for a deadline, and a ready delivery even to
// a done context.
func testReceiveContext(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sub.Receive(ctx); err != context.Canceled {
		t.Errorf("Receive(cancelled ctx) = %v, want context.Canceled unwrapped", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := sub.Receive(ctx)
	if err != context.DeadlineExceeded {
		t.Errorf("Receive(ctx with deadline) = %v, want context.DeadlineExceeded unwrapped", err)
	}
	if since := time.Since(start); since > time.Second {
		t.Errorf("Receive returned %v after a 100ms deadline", since)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	err = b.Send(ctx, topic, []*backends.Message{newMsg("x", nil)}, backends.SendOptions{})
	if err != context.Canceled {
		t.Errorf("Send(cancelled ctx) = %v, want context.Canceled unwrapped", err)
	}

	// A delivery that is ready is returned even to a done context: callers
	// take what is ready without blocking that way (the service batches
	// deliveries so).
	sendCtx, sendCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer sendCancel()
	ready := newMsg("ready", nil)
	if err := b.Send(sendCtx, topic, []*backends.Message{ready}, backends.SendOptions{}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	done, doneCancel := context.WithCancel(context.Background())
	doneCancel()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d, err := sub.Receive(done)
		if err == nil {
			if d.ID != ready.ID || string(d.Body) != "ready" {
				t.Errorf("Receive(done ctx) = %s %q, want the ready message %s", d.ID, d.Body, ready.ID)
			}
			if err := d.Acker.Ack(); err != nil {
				t.Errorf("Ack: %v", err)
			}
			break
		}
		if err != context.Canceled {
			t.Fatalf("Receive(done ctx) = %v, want a delivery or context.Canceled", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a ready delivery was never returned to a done context")
		}
	}
}

// testSubscriptionClose: Close ends a Receive blocked in another goroutine
// with ErrClosed, later Receives return ErrClosed, Close is safe twice, and
// the backend keeps working.
func testSubscriptionClose(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})

	blocked := make(chan error, 1)
	go func() {
		_, err := sub.Receive(context.Background())
		blocked <- err
	}()
	time.Sleep(100 * time.Millisecond) // let Receive block
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, backends.ErrClosed) {
			t.Errorf("blocked Receive after Close = %v, want ErrClosed", err)
		}
	case <-time.After(waitFor):
		t.Fatal("blocked Receive did not return after Close")
	}
	if _, err := sub.Receive(context.Background()); !errors.Is(err, backends.ErrClosed) {
		t.Errorf("Receive after Close = %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}

	sub2 := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	m := newMsg("after close", nil)
	send(t, b, topic, backends.SendOptions{}, m)
	d := receive(t, sub2, waitFor, "on a new subscription")
	checkSame(t, d, m)
	mustAck(t, d)
}

// testBackendClose: Close of the backend closes its subscriptions (a
// blocked Receive returns ErrClosed), then Send and Subscribe return
// ErrClosed; Close is safe twice.
func testBackendClose(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	send(t, b, topic, backends.SendOptions{}, newMsg("before close", nil))
	held := receive(t, sub, waitFor, "before Close")

	blocked := make(chan error, 1)
	go func() {
		_, err := sub.Receive(context.Background())
		blocked <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, backends.ErrClosed) {
			t.Errorf("blocked Receive after backend Close = %v, want ErrClosed", err)
		}
	case <-time.After(waitFor):
		t.Fatal("blocked Receive did not return after backend Close")
	}
	wantUnknown(t, held.Acker.Ack(), "Ack after backend Close")

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err := b.Send(ctx, topic, []*backends.Message{newMsg("after close", nil)}, backends.SendOptions{})
	if !errors.Is(err, backends.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
	if s, err := b.Subscribe(ctx, backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 1, AckDeadline: time.Minute}); !errors.Is(err, backends.ErrClosed) {
		if s != nil {
			s.Close()
		}
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if _, err := sub.Receive(ctx); !errors.Is(err, backends.ErrClosed) {
		t.Errorf("Receive after backend Close = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// testDeadLetter: a message nacked until its next delivery would exceed
// MaxAttempts is not delivered again but written to DeadLetterTopic, with
// its body and attributes plus the dead-letter attributes.
func testDeadLetter(t *testing.T, h Harness, f Features) {
	if !f.DeadLetter {
		t.Skip("backend does not support dead-letter topics")
	}
	const maxAttempts = 2
	b := h.Backend()
	topic := newTopic(t, "")
	dlTopic := topic + ".dead"
	dl := subscribe(t, b, backends.SubscribeOptions{Topic: dlTopic, Channel: "dl"})
	sub := subscribe(t, b, backends.SubscribeOptions{
		Topic: topic, Channel: "c", MaxAttempts: maxAttempts, DeadLetterTopic: dlTopic,
	})
	m := newMsg("poison", map[string]string{"k": "v"})
	ok := newMsg("fine", nil)
	send(t, b, topic, backends.SendOptions{}, m)

	for attempt := 1; attempt <= maxAttempts; attempt++ {
		d := receive(t, sub, waitFor, "attempt "+strconv.Itoa(attempt))
		checkSame(t, d, m)
		if d.Attempt != attempt {
			t.Errorf("Attempt = %d, want %d", d.Attempt, attempt)
		}
		if err := d.Acker.Nack(0); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}
	dead := receive(t, dl, waitFor, "the dead letter")
	if string(dead.Body) != string(m.Body) {
		t.Errorf("dead letter Body = %q, want %q", dead.Body, m.Body)
	}
	if dead.Attributes["k"] != "v" {
		t.Errorf("dead letter lost attribute k: %q", dead.Attributes)
	}
	if got, want := dead.Attributes[AttrDeadLetterAttempts], strconv.Itoa(maxAttempts); got != want {
		t.Errorf("dead letter %s = %q, want %q", AttrDeadLetterAttempts, got, want)
	}
	if dead.Attributes[AttrDeadLetterReason] == "" {
		t.Errorf("dead letter has no %s: %q", AttrDeadLetterReason, dead.Attributes)
	}
	if dead.Attempt != 1 {
		t.Errorf("dead letter Attempt = %d, want 1", dead.Attempt)
	}
	mustAck(t, dead)

	// The subscription goes on: the poison message does not come back, the
	// next message is delivered.
	send(t, b, topic, backends.SendOptions{}, ok)
	d := receive(t, sub, waitFor, "a message after the dead letter")
	checkSame(t, d, ok)
	mustAck(t, d)
	expectNone(t, sub, 500*time.Millisecond, "dead-lettered message")
	expectNone(t, dl, 100*time.Millisecond, "a second dead letter")
}
