package nsq

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestCloseUnderLoad closes a subscription while nsqd keeps pushing
// messages to it: Close returns quickly, and every message it held (handed
// out or queued) reaches a second subscriber of the same channel at once,
// not after nsqd's message timeout (the ack deadline).
func TestCloseUnderLoad(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	const topic, total = "closeload", 3000
	for i := 0; i < total; i += 100 {
		var bodies []string
		for j := i; j < i+100; j++ {
			bodies = append(bodies, fmt.Sprint(j))
		}
		send(t, p, topic, bodies...)
	}
	for round := range 3 {
		a, err := p.Subscribe(context.Background(), backends.SubscribeOptions{
			Topic: topic, Channel: "c", MaxInFlight: 50, AckDeadline: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		held := map[string]bool{}
		for range 20 { // handed out, never settled
			held[receive(t, a, 5*time.Second).ID] = true
		}
		time.Sleep(50 * time.Millisecond) // the rest of max in flight arrives and waits in a's queue
		start := time.Now()
		a.Close()
		took := time.Since(start)
		t.Logf("round %d: Close took %v", round, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("round %d: Close took %v, want < 1s", round, took)
		}
		// b reads everything: a's held messages must come back within
		// seconds, not after the 20s ack deadline.
		b, err := p.Subscribe(context.Background(), backends.SubscribeOptions{
			Topic: topic, Channel: "c", MaxInFlight: 200, AckDeadline: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		for len(held) > 0 {
			d, err := b.Receive(ctx)
			if err != nil {
				t.Fatalf("round %d: %d messages a held not redelivered within 4s: %v", round, len(held), err)
			}
			delete(held, d.ID)
			d.Acker.Nack(0)
		}
		cancel()
		b.Close()
	}
}

// TestLostConnectionNoRedial kills a node under a subscription: the
// consumer of the lost connection is stopped at once, so go-nsq starts no
// re-dial goroutine of its own (one that could connect while Close stops
// the consumer, leaving a connection that never gets CLS: Close then waited
// 5s and leaked it); the pool's connect rounds reconnect the node when it
// returns.
func TestLostConnectionNoRedial(t *testing.T) {
	procs := startProcs(t, 2)
	p := newPool(t, ModeCluster, processNodes(procs), nil)
	sub := subscribe(t, p, "redial", "c", 10)
	procs[1].Kill()
	time.Sleep(500 * time.Millisecond) // lost, detected down; a go-nsq re-dial would retry every 100ms
	if n := goroutinesIn("(*Consumer).onConnClose.func"); n > 0 {
		t.Errorf("%d go-nsq re-dial goroutines while the node is down, want 0", n)
	}
	procs[1].Restart()
	deadline := time.Now().Add(5 * time.Second)
	for channelClients(procs[1].HTTPAddr(), "redial", "c") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("subscription did not reconnect to the restarted node")
		}
		time.Sleep(20 * time.Millisecond)
	}
	send(t, p, "redial", "a", "b", "c", "d")
	for range 4 {
		receive(t, sub, 5*time.Second).Acker.Ack()
	}
	start := time.Now()
	sub.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v", took)
	}
}
