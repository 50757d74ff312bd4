package nsq

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// expiryRecorder is an Observer that passes on its Expired calls.
type expiryRecorder struct {
	nopObserver
	got chan string // "topic/channel dead=…"
}

func newExpiryRecorder() *expiryRecorder { return &expiryRecorder{got: make(chan string, 100)} }

func (r *expiryRecorder) Expired(topic, channel string, dead bool) {
	r.got <- fmt.Sprintf("%s/%s dead=%v", topic, channel, dead)
}

// wait waits for n Expired calls, each want, and then reports any more
// that came meanwhile.
func (r *expiryRecorder) wait(t *testing.T, n int, want string) {
	t.Helper()
	for i := range n {
		select {
		case got := <-r.got:
			if got != want {
				t.Errorf("Expired(%s), want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d Expired calls", i, n)
		}
	}
	select {
	case got := <-r.got:
		t.Errorf("one more Expired(%s) than the %d messages", got, n)
	default:
	}
}

// sendExpiring sends one message per id, expiring at exp (zero: never),
// with replicas copies.
func sendExpiring(t *testing.T, p *Pool, topic string, replicas int, exp time.Time, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids { // one send each: spread over the nodes
		m := &backends.Message{ID: id, Body: []byte(id), PublishTime: time.Now(), ExpireAt: exp}
		if err := p.Send(ctx, topic, []*backends.Message{m}, backends.SendOptions{Replicas: replicas}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestExpiredNotDelivered: a replicated message that expires while it
// waits in nsqd is finished without delivery when it reaches the
// subscription, with its standby copy (counted once); a message without
// expiry sent beside it is delivered.
func TestExpiredNotDelivered(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	rec := newExpiryRecorder()
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) {
		c.StandbyDelay = 400 * time.Millisecond
		c.Observer = rec
	})
	const topic = "exp"
	createChannels(t, p, localHTTP(nodes), topic, "c")
	exp := time.Now().Add(300 * time.Millisecond)
	sendExpiring(t, p, topic, 2, exp, "old")
	sendExpiring(t, p, topic, 2, time.Time{}, "fresh")
	time.Sleep(time.Until(exp)) // the condition is the clock itself

	sub := subscribe(t, p, topic, "c", 10)
	var got []string
	for {
		d := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 20*time.Second)
		if d == nil {
			break
		}
		got = append(got, d.ID)
		if err := d.Acker.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0] != "fresh" {
		t.Errorf("delivered %v, want [fresh]", got)
	}
	rec.wait(t, 1, topic+"/c dead=false")
}

// TestExpiredWhileQueued: a message that reached the subscription in time
// but waited there for a free slot (max in flight 1, taken by an earlier
// delivery; a message of the other node arrives meanwhile) is not handed
// out once it has expired, nor are the messages still in nsqd; the
// delivery made before the expiry stands.
func TestExpiredWhileQueued(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	rec := newExpiryRecorder()
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.Observer = rec })
	const topic = "expq"
	createChannels(t, p, localHTTP(nodes), topic, "c")
	sub := subscribe(t, p, topic, "c", 1)
	sendExpiring(t, p, topic, 1, time.Time{}, "first")
	first := receive(t, sub, 10*time.Second) // holds the one slot
	// Generous: a message must reach the subscription before it, on a
	// loaded machine.
	exp := time.Now().Add(5 * time.Second)
	sendExpiring(t, p, topic, 1, exp, "m1", "m2", "m3", "m4")
	s := sub.(*subscription)
	for ; ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		queued := len(s.queue)
		s.mu.Unlock()
		if queued > 0 {
			break
		}
		if !time.Now().Before(exp) {
			t.Fatal("no message queued at the subscription before the expiry")
		}
	}
	time.Sleep(time.Until(exp)) // the condition is the clock itself
	if err := first.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	if d := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 20*time.Second); d != nil {
		t.Errorf("delivered %s after its expiry %v", d.ID, exp)
	}
	rec.wait(t, 4, topic+"/c dead=false")
}

// TestDeliveryExpireAt: a delivery carries its message's expiry.
func TestDeliveryExpireAt(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	exp := time.Now().Add(time.Hour).Round(0)
	sub := subscribe(t, p, "expa", "c", 1)
	sendExpiring(t, p, "expa", 1, exp, "m")
	if d := receive(t, sub, 10*time.Second); !d.ExpireAt.Equal(exp) {
		t.Errorf("ExpireAt %v, want %v", d.ExpireAt, exp)
	}
}

// TestExpiredDeadLettered: with DeadLetterExpired (and no max attempts) an
// expired message goes to the dead-letter topic with the reason and its
// expiry in attributes, and the dead letter does not expire.
func TestExpiredDeadLettered(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	rec := newExpiryRecorder()
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.Observer = rec })
	const topic, dlq = "expd", "expd.dead"
	createChannels(t, p, localHTTP(nodes), topic, "c")
	createChannels(t, p, localHTTP(nodes), dlq, "c")
	exp := time.Now().Add(-time.Millisecond) // expired when sent
	sendExpiring(t, p, topic, 1, exp, "old")
	sub := subscribeOpts(t, p, backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 10,
		AckDeadline: 10 * time.Second, DeadLetterTopic: dlq, DeadLetterExpired: true})
	dead := subscribe(t, p, dlq, "c", 10)
	d := receive(t, dead, 10*time.Second)
	if d.ID != "old" || d.Attributes[AttrDeadLetterReason] != "expired" ||
		d.Attributes[AttrDeadLetterExpireTime] != exp.UTC().Format(time.RFC3339Nano) || !d.ExpireAt.IsZero() {
		t.Errorf("dead letter %s, attributes %v, expire at %v; want old, reason expired, its expiry, none", d.ID, d.Attributes, d.ExpireAt)
	}
	if err := d.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	if got := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 10*time.Second); got != nil {
		t.Errorf("delivered %s after its expiry", got.ID)
	}
	rec.wait(t, 1, topic+"/c dead=true")
}
