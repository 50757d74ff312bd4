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
		// More of max in flight arrives and waits in a's queue: the nodes
		// have more in flight to it than it handed out.
		waitInFlight(t, localHTTP(nodes), topic, "c", len(held)+1)
		start := time.Now()
		a.Close()
		took := time.Since(start)
		t.Logf("round %d: Close took %v", round, took.Round(time.Millisecond))
		// Within milliseconds normally; the bound catches Close waiting
		// out a 5s timeout, with room for a loaded machine.
		if took > 3*time.Second {
			t.Errorf("round %d: Close took %v, want < 3s", round, took)
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
	ev := watchEvents(t, p)
	killed := time.Now()
	procs[1].Kill()
	// go-nsq would start its re-dial goroutine when the connection closes,
	// before the checks find the node down.
	ev.wait(t, killed, eventWait, "p1 down", isState("p1", backends.NodeDown))
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
	if took := time.Since(start); took > 3*time.Second { // the bug waited 5s
		t.Errorf("Close took %v, want < 3s", took)
	}
}

// waitInFlight waits until the nodes at httpAddrs have at least n messages
// of topic/channel in flight in all, and fails the test after eventWait.
func waitInFlight(t *testing.T, httpAddrs []string, topic, channel string, n int) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		got := 0
		for _, addr := range httpAddrs {
			if tp := nsqdtest.Stats(t, addr).Topic(topic); tp != nil {
				if ch := tp.Channel(channel); ch != nil {
					got += ch.InFlightCount
				}
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: %d in flight after %v, want %d", topic, channel, got, eventWait, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
