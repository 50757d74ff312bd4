package backendtest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
)

// testSendReceive: a message sent is delivered once, as sent, attempt 1.
func testSendReceive(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	m := newMsg("hello", nil)
	send(t, b, topic, backends.SendOptions{}, m)
	d := receive(t, sub, waitFor, "the message sent")
	checkSame(t, d, m)
	if d.Attempt != 1 {
		t.Errorf("Attempt = %d, want 1", d.Attempt)
	}
	mustAck(t, d)
}

// testBatch: every message of several batches arrives exactly once (order
// is not promised across nodes, so the set is compared).
func testBatch(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	var all []*backends.Message
	for i := range 3 {
		msgs := newMsgs(20, string(rune('a'+i)))
		send(t, b, topic, backends.SendOptions{}, msgs...)
		all = append(all, msgs...)
	}
	want := byID(all)
	for _, d := range receiveN(t, sub, len(all), true, "batch messages") {
		m, ok := want[d.ID]
		if !ok {
			t.Errorf("unexpected or duplicate delivery id=%s body=%q", d.ID, d.Body)
			continue
		}
		delete(want, d.ID)
		checkSame(t, d, m)
		if d.Attempt != 1 {
			t.Errorf("message %s Attempt = %d, want 1", d.ID, d.Attempt)
		}
	}
	expectNone(t, sub, 300*time.Millisecond, "after every batch message was received and acked")
}

// testAttributes: id, attributes (empty values, non-ASCII, long), publish
// time and a binary body survive the trip.
func testAttributes(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	body := make([]byte, 256)
	for i := range body {
		body[i] = byte(i)
	}
	m := newMsg(string(body), map[string]string{
		"a":                  "1",
		"empty":              "",
		"unicode":            "héllo ✓ 世界",
		"long":               string(make([]byte, 2000)),
		"k.with-punct_chars": "v=1;w=2",
	})
	m.PublishTime = time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.UTC)
	plain := newMsg("no attributes", nil)
	send(t, b, topic, backends.SendOptions{}, m, plain)
	got := map[string]*backends.Delivery{}
	for _, d := range receiveN(t, sub, 2, true, "attribute messages") {
		got[d.ID] = d
	}
	for _, want := range []*backends.Message{m, plain} {
		d, ok := got[want.ID]
		if !ok {
			t.Errorf("message %s not delivered; got ids %v", want.ID, slices.Collect(maps.Keys(got)))
			continue
		}
		checkSame(t, d, want)
	}
}

// testDelay: a delayed message (and a delayed batch) is not delivered
// before its delay, and is delivered soon after; an undelayed message sent
// after them is delivered at once.
func testDelay(t *testing.T, h Harness, f Features) {
	if !f.Delay {
		t.Skip("backend does not support delayed sends")
	}
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	start := time.Now()
	delayed := newMsgs(3, "delayed")
	send(t, b, topic, backends.SendOptions{Delay: delay}, delayed[0])
	send(t, b, topic, backends.SendOptions{Delay: delay}, delayed[1:]...)
	now := newMsg("now", nil)
	send(t, b, topic, backends.SendOptions{}, now)
	sent := time.Now()

	want := byID(append(delayed, now))
	for range want {
		// The delayed ones are due by sent+delay; the undelayed one at once.
		d := receive(t, sub, time.Until(sent.Add(delay+f.Slack)), "the delayed and undelayed messages")
		at := time.Now()
		m, ok := want[d.ID]
		if !ok {
			t.Fatalf("unexpected or duplicate delivery id=%s body=%q", d.ID, d.Body)
		}
		delete(want, d.ID)
		checkSame(t, d, m)
		if d.Attempt != 1 {
			t.Errorf("message %q Attempt = %d, want 1", d.Body, d.Attempt)
		}
		if m == now {
			if since := at.Sub(sent); since > f.Slack {
				t.Errorf("undelayed message delivered %v after its send, want at once", since)
			}
		} else if since := at.Sub(start); since < delay-early {
			t.Errorf("message %q with delay %v delivered after %v", d.Body, delay, since)
		}
		mustAck(t, d)
	}
}

// testAckStopsRedelivery: an acked message is not delivered again after
// its ack deadline, while an unacked one sent with it is (the control that
// proves deadlines are enforced in this very setup).
func testAckStopsRedelivery(t *testing.T, h Harness, f Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c", AckDeadline: ackDeadline})
	acked, control := newMsg("ack me", nil), newMsg("leave me", nil)
	send(t, b, topic, backends.SendOptions{}, acked, control)
	for _, d := range receiveN(t, sub, 2, false, "both messages") {
		if d.ID == acked.ID {
			mustAck(t, d)
		}
	}
	redelivered := watch(t, sub, ackDeadline+f.Slack, func(d *backends.Delivery) {
		mustAck(t, d)
	})
	if redelivered[acked.ID] > 0 {
		t.Errorf("acked message redelivered %d times after its ack deadline", redelivered[acked.ID])
	}
	if redelivered[control.ID] != 1 {
		t.Errorf("unacked control message redelivered %d times within %v, want 1 (ack deadline %v)",
			redelivered[control.ID], ackDeadline+f.Slack, ackDeadline)
	}
}

// watch receives for d, calls fn with each delivery, and returns how many
// times each message id was delivered.
func watch(t testing.TB, sub backends.Subscription, d time.Duration, fn func(*backends.Delivery)) map[string]int {
	t.Helper()
	seen := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		del, err := sub.Receive(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Receive: %v", err)
			}
			return seen
		}
		seen[del.ID]++
		fn(del)
	}
}

// testDeadlineRedelivers: a delivery left unsettled past its ack deadline
// is delivered again, attempt 2, and the first delivery can no longer be
// acked.
func testDeadlineRedelivers(t *testing.T, h Harness, f Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c", AckDeadline: ackDeadline})
	m := newMsg("forget me", map[string]string{"k": "v"})
	send(t, b, topic, backends.SendOptions{}, m)
	first := receive(t, sub, waitFor, "first delivery")
	got := time.Now()
	second := receive(t, sub, ackDeadline+f.Slack, "redelivery after the ack deadline")
	if since := time.Since(got); since < ackDeadline-early {
		t.Errorf("redelivered after %v, before the ack deadline %v", since, ackDeadline)
	}
	checkSame(t, second, m)
	if second.Attempt != 2 {
		t.Errorf("redelivery Attempt = %d, want 2", second.Attempt)
	}
	wantUnknown(t, first.Acker.Ack(), "Ack of a delivery past its deadline")
	mustAck(t, second)
}

// testNackRedelivers: a nacked message comes back after the nack's delay
// with Attempt+1; a nack without delay brings it back at once.
func testNackRedelivers(t *testing.T, h Harness, f Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c"})
	m := newMsg("nack me", map[string]string{"k": "v"})
	send(t, b, topic, backends.SendOptions{}, m)

	first := receive(t, sub, waitFor, "first delivery")
	nacked := time.Now()
	if err := first.Acker.Nack(delay); err != nil {
		t.Fatalf("Nack(%v): %v", delay, err)
	}
	second := receive(t, sub, delay+f.Slack, "redelivery after a nack")
	if since := time.Since(nacked); since < delay-early {
		t.Errorf("redelivered %v after Nack(%v), before the delay", since, delay)
	}
	checkSame(t, second, m)
	if second.Attempt != first.Attempt+1 {
		t.Errorf("Attempt after nack = %d, want %d", second.Attempt, first.Attempt+1)
	}
	wantUnknown(t, first.Acker.Ack(), "Ack of a nacked delivery")

	if err := second.Acker.Nack(0); err != nil {
		t.Fatalf("Nack(0): %v", err)
	}
	third := receive(t, sub, f.Slack, "redelivery after Nack(0)")
	checkSame(t, third, m)
	if third.Attempt != 3 {
		t.Errorf("Attempt after second nack = %d, want 3", third.Attempt)
	}
	mustAck(t, third)
	expectNone(t, sub, 300*time.Millisecond, "after the ack")
}

// testExtend: a delivery extended before each deadline stays held past
// twice its first deadline, is not redelivered meanwhile, and can then be
// acked; an unextended control message sent with it is redelivered.
func testExtend(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c", AckDeadline: ackDeadline})
	kept, control := newMsg("keep me", nil), newMsg("leave me", nil)
	send(t, b, topic, backends.SendOptions{}, kept, control)
	var d *backends.Delivery
	for _, del := range receiveN(t, sub, 2, false, "both messages") {
		if del.ID == kept.ID {
			d = del
		}
	}

	stop := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		tick := time.NewTicker(ackDeadline / 4)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := d.Acker.Extend(); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	window := 2*ackDeadline + 500*time.Millisecond
	redelivered := watch(t, sub, window, func(d *backends.Delivery) { mustAck(t, d) })
	close(stop)
	if err := <-errs; err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if n := redelivered[kept.ID]; n > 0 {
		t.Errorf("extended message redelivered %d times within %v (ack deadline %v)", n, window, ackDeadline)
	}
	if n := redelivered[control.ID]; n < 1 {
		t.Errorf("unextended control message not redelivered within %v (ack deadline %v)", window, ackDeadline)
	}
	mustAck(t, d)
	expectNone(t, sub, ackDeadline+500*time.Millisecond, "extended then acked delivery")
}

// testCloseHandsBack: closing a subscription hands its unsettled deliveries
// back at once: a new subscriber on the channel gets them long before the
// ack deadline, as attempt 2.
func testCloseHandsBack(t *testing.T, h Harness, f Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	opts := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: longDeadline}
	sub1 := subscribe(t, b, opts)
	msgs := newMsgs(5, "held")
	for _, m := range msgs { // one by one, so they spread over nodes
		send(t, b, topic, backends.SendOptions{}, m)
	}
	held := receiveN(t, sub1, len(msgs), false, "messages to hold")
	closed := time.Now()
	if err := sub1.Close(); err != nil {
		t.Fatalf("Subscription.Close: %v", err)
	}
	sub2 := subscribe(t, b, opts)
	want := byID(msgs)
	for range msgs {
		d := receive(t, sub2, f.Slack, "a message handed back by Close")
		m, ok := want[d.ID]
		if !ok {
			t.Fatalf("unexpected or duplicate delivery id=%s body=%q", d.ID, d.Body)
		}
		delete(want, d.ID)
		checkSame(t, d, m)
		if d.Attempt != 2 {
			t.Errorf("handed-back message Attempt = %d, want 2", d.Attempt)
		}
		mustAck(t, d)
	}
	t.Logf("handed back %d messages in %v (ack deadline %v)", len(msgs), time.Since(closed), longDeadline)
	wantUnknown(t, held[0].Acker.Ack(), "Ack of a delivery of a closed subscription")
}

// testMaxInFlight: Receive never hands out more than MaxInFlight unsettled
// deliveries; settling one (ack or nack) frees a slot.
func testMaxInFlight(t *testing.T, h Harness, _ Features) {
	const n = 3
	b := h.Backend()
	topic := newTopic(t, "")
	sub := subscribe(t, b, backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: n})
	msgs := newMsgs(10, "m")
	send(t, b, topic, backends.SendOptions{}, msgs...)
	seen := map[string]bool{}
	got := func(what string) *backends.Delivery {
		t.Helper()
		d := receive(t, sub, waitFor, what)
		if seen[d.ID] {
			t.Fatalf("message %s delivered again while held or acked", d.ID)
		}
		seen[d.ID] = true
		return d
	}
	var held []*backends.Delivery
	for range n {
		held = append(held, got("up to MaxInFlight"))
	}
	expectNone(t, sub, time.Second, "MaxInFlight deliveries unsettled")

	mustAck(t, held[0])
	held = append(held[1:], got("after an ack freed a slot"))
	expectNone(t, sub, 300*time.Millisecond, "MaxInFlight deliveries unsettled again")
	if err := held[0].Acker.Nack(time.Minute); err != nil { // not back during the test
		t.Fatalf("Nack: %v", err)
	}
	held = append(held[1:], got("after a nack freed a slot"))
	expectNone(t, sub, 300*time.Millisecond, "MaxInFlight deliveries unsettled again")

	// The rest arrive as slots free up; n stay held at most.
	for len(seen) < len(msgs) {
		mustAck(t, held[0])
		held = append(held[1:], got("remaining messages"))
	}
}

// testSplitAndCopy: subscribers of one channel share its messages (each
// message to one of them, both get some); every channel gets every message.
func testSplitAndCopy(t *testing.T, h Harness, _ Features) {
	b := h.Backend()
	topic := newTopic(t, "")
	opts := backends.SubscribeOptions{Topic: topic, Channel: "shared", MaxInFlight: 3}
	a1, a2 := subscribe(t, b, opts), subscribe(t, b, opts)
	opts.Channel = "other"
	other := subscribe(t, b, opts)

	msgs := newMsgs(30, "m")
	for _, m := range msgs { // one by one, so they spread over nodes
		send(t, b, topic, backends.SendOptions{}, m)
	}
	want := byID(msgs)

	// The two shared subscribers receive concurrently, slowly enough that
	// neither can take everything.
	results := make(chan consumed, 3)
	deadline := time.Now().Add(waitFor + 5*time.Second)
	go consume(a1, "a1", deadline, 20*time.Millisecond, results)
	go consume(a2, "a2", deadline, 20*time.Millisecond, results)
	go consume(other, "other", deadline, 0, results)

	got := map[string]consumed{}
	for range 3 {
		c := <-results
		got[c.name] = c
	}
	for _, c := range got {
		if c.err != nil {
			t.Errorf("%s: %v", c.name, c.err)
		}
		for _, id := range c.dups {
			t.Errorf("%s: message %s delivered twice", c.name, id)
		}
		for id := range c.ids {
			if want[id] == nil {
				t.Errorf("%s: unexpected message %s", c.name, id)
			}
		}
	}
	if n := len(got["other"].ids); n != len(msgs) {
		t.Errorf("channel other got %d of %d messages", n, len(msgs))
	}
	n1, n2 := len(got["a1"].ids), len(got["a2"].ids)
	for id := range got["a1"].ids {
		if got["a2"].ids[id] {
			t.Errorf("message %s delivered to both subscribers of channel shared", id)
		}
	}
	if n1+n2 != len(msgs) {
		t.Errorf("channel shared got %d+%d of %d messages", n1, n2, len(msgs))
	}
	if n1 == 0 || n2 == 0 {
		t.Errorf("channel shared: subscribers got %d and %d messages, want both some", n1, n2)
	}
	t.Logf("shared channel split %d/%d", n1, n2)
}

// consumed is what consume saw.
type consumed struct {
	name string
	ids  map[string]bool
	dups []string
	err  error
}

// consume receives and acks (each after pause) until nothing comes for a
// quiet period after the first message, or until deadline.
func consume(sub backends.Subscription, name string, deadline time.Time, pause time.Duration, out chan<- consumed) {
	c := consumed{name: name, ids: map[string]bool{}}
	defer func() { out <- c }()
	const quiet = 1500 * time.Millisecond
	for {
		wait := time.Until(deadline)
		if len(c.ids) > 0 {
			wait = min(wait, quiet)
		}
		if wait <= 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		d, err := sub.Receive(ctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				c.err = err
			}
			return
		}
		if c.ids[d.ID] {
			c.dups = append(c.dups, d.ID)
		}
		c.ids[d.ID] = true
		time.Sleep(pause)
		if err := d.Acker.Ack(); err != nil {
			c.err = err
			return
		}
	}
}
