package nsq

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestCoalescedSends: 64 concurrent one-message Sends to one node ride
// fewer MPUBs than Sends, each caller gets its result, and every message
// is written once.
func TestCoalescedSends(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	send(t, p, "co", "warm")
	n := p.nodes["n0"]
	before := n.mpubs.Load()
	const callers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				errs <- p.Send(ctx, "co", []*backends.Message{msg(fmt.Sprint(c, "-", i))}, backends.SendOptions{})
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mpubs := n.mpubs.Load() - before
	got := nsqdtest.Stats(t, nodes[0].HTTPAddr).Topic("co").MessageCount
	t.Logf("%d sends in %d commands (%.1f messages per MPUB)", callers*each, mpubs, float64(callers*each)/float64(mpubs))
	if got != callers*each+1 {
		t.Errorf("topic has %d messages, want %d", got, callers*each+1)
	}
	if mpubs >= callers*each {
		t.Errorf("%d commands for %d concurrent sends: not coalesced", mpubs, callers*each)
	}
}

// TestCoalescedCancelWritesNothing: while one PUB is stuck on a frozen
// node, later Sends of the same topic queue behind it; when their deadline
// passes first they are removed from the queue, so after the thaw only the
// stuck PUB lands.
func TestCoalescedCancelWritesNothing(t *testing.T) {
	procs := startProcs(t, 1)
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		c.AttemptTimeout = 300 * time.Millisecond
		c.Check.Interval = 5 * time.Second // the send path, not the checker, meets the frozen node
	})
	send(t, p, "cancel", "warm")
	n := p.nodes["p0"]
	written := n.mpubs.Load()
	freeze(t, procs[0])
	sendFails := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := p.Send(ctx, "cancel", []*backends.Message{msg(fmt.Sprint("m", i))}, backends.SendOptions{}); err == nil {
			t.Errorf("send %d to a frozen node succeeded", i)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sendFails(0) }()
	// The others go behind the first once its PUB is on the wire: the
	// topic has an outstanding command until the node answers it.
	for deadline := time.Now().Add(10 * time.Second); n.mpubs.Load() == written; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first send was not written within 10s")
		}
	}
	for i := 1; i < 5; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); sendFails(i) }()
	}
	wg.Wait()
	procs[0].Cont()
	// A marker sent after the thaw is written after the stuck PUB and
	// after anything still queued for the topic: once it is acknowledged,
	// everything that would land has landed.
	send(t, p, "cancel", "marker")
	if got := nsqdtest.Stats(t, procs[0].HTTPAddr()).Topic("cancel").MessageCount; got != 3 {
		t.Errorf("topic has %d messages, want 3 (warm-up, the stuck PUB and the marker)", got)
	}
}
