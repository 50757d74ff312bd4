package nsq

import (
	"context"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestDeadLetterFinishesStandby: a replicated message dead-lettered after
// its last attempt is settled for good: its standby copy, due later, is
// finished without delivery, and the dead-letter topic has it, in as many
// copies as the message had.
func TestDeadLetterFinishesStandby(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const delay = 1500 * time.Millisecond
	p := newPool(t, ModeFailover, localNodes(nodes), func(c *Config) { c.StandbyDelay = delay })
	const topic, dlq = "dl", "dl.dead"
	createChannels(t, p, localHTTP(nodes), topic, "c")
	createChannels(t, p, localHTTP(nodes), dlq, "raw")
	sub := subscribeOpts(t, p, backends.SubscribeOptions{
		Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: 10 * time.Second,
		MaxAttempts: 1, DeadLetterTopic: dlq})
	if err := sendReplicas(context.Background(), p, topic, 2, "m1"); err != nil {
		t.Fatal(err)
	}
	d := receive(t, sub, 5*time.Second)
	if d.ID != "m1" || d.Attempt != 1 {
		t.Fatalf("delivery %s attempt %d, want m1 attempt 1", d.ID, d.Attempt)
	}
	if err := d.Acker.Nack(0); err != nil { // its last attempt: dead-lettered next
		t.Fatal(err)
	}
	if got := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 20*time.Second); got != nil {
		t.Errorf("delivered again after its last attempt: %s attempt %d (the standby was not finished)", got.ID, got.Attempt)
		_ = got.Acker.Ack()
	}
	n := 0
	for _, nd := range nodes {
		if tp := nsqdtest.Stats(t, nd.HTTPAddr).Topic(dlq); tp != nil {
			n += int(tp.MessageCount)
		}
	}
	if n != 2 {
		t.Errorf("dead-letter topic %s has %d copies, want 2 (as many as the message had)", dlq, n)
	}
}

// TestExtendHoldsStandby: a client that keeps extending a replicated
// delivery past the standby delay holds it: each Extend moves the hold of
// its id to the new deadline, at this instance and at every other (through
// the ack topic), so the standby waits for the outcome instead of being
// delivered beside it.
func TestExtendHoldsStandby(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const delay = 400 * time.Millisecond // holds start at delay/4
	const ackDeadline = 3 * time.Second
	tweak := func(c *Config) { c.StandbyDelay = delay; c.AckTopic = DefaultAckTopic }
	a := newPool(t, ModeFailover, localNodes(nodes), tweak)
	b := newPool(t, ModeFailover, localNodes(nodes), tweak)
	waitAckReaders(t, nodes, b.cfg.InstanceID)
	const topic = "ext"
	sub := subscribeOpts(t, a, backends.SubscribeOptions{
		Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: ackDeadline})
	if err := sendReplicas(context.Background(), a, topic, 2, "m1"); err != nil {
		t.Fatal(err)
	}
	d := receive(t, sub, 5*time.Second)
	// Extend twice, each well after the last, past the standby's due time;
	// after each, both instances must know the hold up to the new deadline.
	for i := range 2 {
		time.Sleep(delay) // pacing: the extensions must be apart in time
		extended := time.Now()
		if err := d.Acker.Extend(); err != nil {
			t.Fatalf("extend %d: %v", i, err)
		}
		want := extended.Add(ackDeadline - 100*time.Millisecond)
		for name, p := range map[string]*Pool{"a": a, "b": b} {
			deadline := extended.Add(ackDeadline / 2) // well before the delivery's deadline
			for {
				acked, until := p.acked.state(topic, "c", "m1", time.Now())
				if acked {
					t.Fatalf("extend %d: instance %s has m1 acked", i, name)
				}
				if !until.Before(want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("extend %d at %v: instance %s holds m1 until %v, want at least %v",
						i, extended.Format(time.StampMilli), name, until.Format(time.StampMilli), want.Format(time.StampMilli))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	if err := d.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	// The standby, held so far, is finished now rather than delivered.
	if got := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 15*time.Second); got != nil {
		t.Errorf("standby delivered after the Ack: %s attempt %d", got.ID, got.Attempt)
		_ = got.Acker.Ack()
	}
}

// TestDelayedMessageDeferredAgainAfterRestart: nsqd writes a deferred
// message to disk without its timer when it stops, and delivers it at once
// after a restart; the subscription defers it again until its due time
// (the envelope's not_before), so it is not delivered early.
func TestDelayedMessageDeferredAgainAfterRestart(t *testing.T) {
	o := nsqd.Options{DataDir: t.TempDir()}
	nd := nsqdtest.StartNode(t, o)
	o.TCPAddr, o.HTTPAddr = nd.TCPAddr, nd.HTTPAddr
	p := newPool(t, ModeCluster, localNodes([]*nsqd.Node{nd}), nil)
	const topic = "later"
	createChannels(t, p, []string{nd.HTTPAddr}, topic, "c")
	const delay = 5 * time.Second
	sent := time.Now()
	if err := p.Send(context.Background(), topic, []*backends.Message{msg("m1")}, backends.SendOptions{Delay: delay}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ch := nsqdtest.Stats(t, nd.HTTPAddr).Topic(topic).Channel("c"); ch != nil && ch.DeferredCount == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delayed message was never deferred on the node")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := nd.Stop(); err != nil {
		t.Fatal(err)
	}
	nd = nsqdtest.StartNode(t, o)
	t.Cleanup(func() { p.Close() }) // before the restarted node stops
	// nsqd has the message ready at once now (the control: it is in the
	// channel's depth, not deferred), well before its due time.
	if ch := nsqdtest.Stats(t, nd.HTTPAddr).Topic(topic).Channel("c"); ch == nil || ch.Depth != 1 {
		t.Fatalf("after the restart the channel is %+v, want the message ready (depth 1)", ch)
	}
	if time.Since(sent) > delay-time.Second {
		t.Fatalf("the restart took %v of the %v delay: too slow to tell early from due", time.Since(sent), delay)
	}
	sub := subscribe(t, p, topic, "c", 10)
	d := receive(t, sub, delay+10*time.Second)
	if got := time.Since(sent); got < delay-notBeforePrecision {
		t.Errorf("delivered %v after the send, want not before the %v delay", got, delay)
	}
	if d.ID != "m1" {
		t.Errorf("delivery %s, want m1", d.ID)
	}
	// nsqd counted the early arrival as an attempt; qgate cannot tell it
	// from a delivery (the envelope says nothing of restarts), so the
	// attempt may read 2 here.
	t.Logf("attempt %d", d.Attempt)
	_ = d.Acker.Ack()
}
