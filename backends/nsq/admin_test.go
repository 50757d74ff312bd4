package nsq

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestDrain: a drained node takes no new sends while subscriptions keep
// reading it; undrained, it takes sends again. Unknown names are
// ErrNotFound.
func TestDrain(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	ev := watchEvents(t, p)
	const topic = "drain"
	for i := range 9 {
		send(t, p, topic, fmt.Sprint("before", i))
	}
	onN1 := topicCount(nodes[1].HTTPAddr, topic)
	if onN1 <= 0 {
		t.Fatalf("n1 took %d of the first sends", onN1)
	}
	drained := time.Now()
	st, err := p.SetDraining("n1", true)
	if err != nil || st.State != backends.NodeDraining || st.Active {
		t.Fatalf("SetDraining(n1, true) = %+v, %v", st, err)
	}
	ev.wait(t, drained, time.Second, "n1 draining", isState("n1", backends.NodeDraining))
	for i := range 30 {
		send(t, p, topic, fmt.Sprint("during", i))
	}
	if n := topicCount(nodes[1].HTTPAddr, topic); n != onN1 {
		t.Errorf("drained n1 took %d sends", n-onN1)
	}
	// Messages already on the drained node are still delivered.
	sub := subscribe(t, p, topic, "c", 100)
	got := map[string]bool{}
	for len(got) < 39 {
		d := receive(t, sub, 5*time.Second)
		got[d.ID] = true
		d.Acker.Ack()
	}
	if _, err := p.SetDraining("nope", true); !errors.Is(err, backends.ErrNotFound) {
		t.Errorf("SetDraining(nope) = %v, want ErrNotFound", err)
	}
	if st, err := p.SetDraining("n1", false); err != nil || st.State != backends.NodeUp || !st.Active {
		t.Errorf("SetDraining(n1, false) = %+v, %v", st, err)
	}
	for i := range 9 {
		send(t, p, topic, fmt.Sprint("after", i))
	}
	if n := topicCount(nodes[1].HTTPAddr, topic); n <= onN1 {
		t.Errorf("undrained n1 took no sends")
	}
	// Draining every node leaves nothing writable.
	for _, name := range []string{"n0", "n1", "n2"} {
		p.SetDraining(name, true)
	}
	if p.Writable() {
		t.Error("Writable with every node drained")
	}
	err = p.Send(context.Background(), topic, []*backends.Message{msg("x")}, backends.SendOptions{})
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Send with every node drained: %v, want ErrUnavailable", err)
	}
}

// TestNoNodeUnavailable: with every node down, Send fails at once with
// ErrUnavailable and Writable is false; a node that returns takes sends.
func TestNoNodeUnavailable(t *testing.T) {
	procs := startProcs(t, 2)
	p := newPool(t, ModeCluster, processNodes(procs), nil)
	ev := watchEvents(t, p)
	if !p.Writable() {
		t.Fatal("not Writable at start")
	}
	killed := time.Now()
	procs[0].Kill()
	procs[1].Kill()
	ev.wait(t, killed, detectBound+slack, "p0 down", isState("p0", backends.NodeDown))
	ev.wait(t, killed, detectBound+slack, "p1 down", isState("p1", backends.NodeDown))
	if p.Writable() {
		t.Error("Writable with every node down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := p.Send(ctx, "none", []*backends.Message{msg("x")}, backends.SendOptions{})
	took := time.Since(start)
	t.Logf("send with no node up: %v in %v", err, took)
	if !errors.Is(err, backends.ErrUnavailable) || took > 50*time.Millisecond {
		t.Errorf("send with no node up: %v in %v, want ErrUnavailable at once", err, took)
	}
	restarted := time.Now()
	procs[1].Restart()
	ev.wait(t, restarted, 5*time.Second, "p1 up", isState("p1", backends.NodeUp))
	if !p.Writable() {
		t.Error("not Writable after p1 came back")
	}
	send(t, p, "none", "y")
}

// TestWatch: the first events are the current state of every node; a
// reader that does not read never blocks the pool, and when it reads it
// gets the latest state per node.
func TestWatch(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := p.Watch(ctx)
	start := time.Now()
	for i := range 1000 { // nobody reads meanwhile
		p.SetDraining("n1", i%2 == 0)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 SetDraining with a stalled watcher took %v", d)
	}
	seen := map[string]backends.NodeEvent{}
	timeout := time.After(2 * time.Second)
	for len(seen) < 2 || seen["n1"].Node.State != backends.NodeUp {
		select {
		case ev := <-ch:
			seen[ev.Node.Name] = ev
		case <-timeout:
			t.Fatalf("watch: %+v", seen)
		}
	}
	if st := seen["n0"]; st.Node.State != backends.NodeUp || st.Previous != backends.NodeUp {
		t.Errorf("first event of n0: %+v", st)
	}
	cancel()
	for range ch { // closed after cancel
	}
}

// TestNodesLive: Nodes reports the monitor's latest check and depth, not
// the values of the last state change: with nodes that stay Up, LastCheck
// moves with every check and Depth follows what was sent.
func TestNodesLive(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	first := p.Nodes()[0]
	if first.LastCheck.IsZero() {
		t.Fatalf("no check recorded at start: %+v", first)
	}
	send(t, p, "live", "a", "b", "c")
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := p.Nodes()[0]
		if st.LastCheck.After(first.LastCheck) && st.Depth >= 3 && st.State == backends.NodeUp {
			t.Logf("LastCheck %v after the first, latency %v, depth %d",
				st.LastCheck.Sub(first.LastCheck).Round(time.Millisecond), st.CheckLatency, st.Depth)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Nodes did not move past the start: first %+v, now %+v", first, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
