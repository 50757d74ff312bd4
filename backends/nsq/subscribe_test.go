package nsq

import (
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestReceiveTouchesOnlyWhenNeeded: a delivery handed out soon after it
// arrived gets its full ack deadline without a TOUCH (nsqd's timer, started
// ackMargin longer, still covers it); one that waited in the queue longer
// is touched at hand-out, so its deadline is full too.
func TestReceiveTouchesOnlyWhenNeeded(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	const ackDeadline = 2 * time.Second
	bs, err := p.Subscribe(t.Context(), backends.SubscribeOptions{
		Topic: "touch", Channel: "c", MaxInFlight: 2, AckDeadline: ackDeadline})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	s := bs.(*subscription)

	// One message on each node: both arrive at once and wait in the queue.
	for _, n := range nodes {
		prod, err := gonsq.NewProducer(n.TCPAddr, gonsq.NewConfig())
		if err != nil {
			t.Fatal(err)
		}
		prod.SetLoggerLevel(gonsq.LogLevelError)
		if err := prod.Publish("touch", []byte(n.Name)); err != nil {
			t.Fatal(err)
		}
		prod.Stop()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		queued := len(s.queue)
		s.mu.Unlock()
		if queued == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages queued, want 2", queued)
		}
	}

	// deadlines returns d's client and nsqd deadlines.
	deadlines := func(d *backends.Delivery) (client, nsqd time.Time) {
		x := d.Acker.(*delivery)
		s.mu.Lock()
		defer s.mu.Unlock()
		return x.deadline, x.nsqDeadline
	}
	check := func(name string, before time.Time, wantTouch bool) {
		t.Helper()
		d := receive(t, bs, time.Second)
		client, nsqd := deadlines(d)
		if client.Before(before.Add(ackDeadline)) {
			t.Errorf("%s: ack deadline %v after Receive, want the full %v", name, client.Sub(before), ackDeadline)
		}
		if touched := !nsqd.Before(before.Add(s.msgTimeout)); touched != wantTouch {
			t.Errorf("%s: touched = %v, want %v (nsqd deadline %v after Receive, timeout %v)",
				name, touched, wantTouch, nsqd.Sub(before), s.msgTimeout)
		}
		mustAckDelivery(t, d)
	}
	check("handed out at once", time.Now(), false)
	// The stimulus, not a wait for an outcome: the other message waits in
	// the queue at least this long; longer, on a slow machine, only makes
	// the touch more needed.
	time.Sleep(3 * (ackMargin - deliverySkew))
	check("waited in the queue", time.Now(), true)
}

func mustAckDelivery(t *testing.T, d *backends.Delivery) {
	t.Helper()
	if err := d.Acker.Ack(); err != nil {
		t.Errorf("Ack: %v", err)
	}
}
