package nsq

import (
	"context"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// ackTopicCounts returns, per node, how many records were published to the
// ack topic there (0 where it does not exist).
func ackTopicCounts(t *testing.T, nodes []*nsqd.Node) []int {
	t.Helper()
	out := make([]int, len(nodes))
	for i, nd := range nodes {
		if tp := nsqdtest.Stats(t, nd.HTTPAddr).Topic(DefaultAckTopic); tp != nil {
			out[i] = int(tp.MessageCount)
		}
	}
	return out
}

// waitAckRecords waits until the ack topic holds want records in all over
// nodes, and returns the per-node counts.
func waitAckRecords(t *testing.T, nodes []*nsqd.Node, want int, timeout time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		counts := ackTopicCounts(t, nodes)
		total := 0
		for _, c := range counts {
			total += c
		}
		if total >= want {
			return counts
		}
		if time.Now().After(deadline) {
			t.Fatalf("ack topic: %v records per node after %v, want %d in all", counts, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAckRecordsWrittenToTwoNodes: one acked id is published as one record
// on two distinct nodes (of three), so that the loss of one node does not
// lose the ack; the record decodes to what was acked.
func TestAckRecordsWrittenToTwoNodes(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.AckTopic = DefaultAckTopic })
	waitAckReaders(t, nodes, p.cfg.InstanceID)
	for _, nd := range nodes { // a raw reader's channel, to read the records back
		nsqdtest.Create(t, nd.HTTPAddr, DefaultAckTopic, "raw")
	}
	p.noteAcked("orders", "billing", "m-1", time.Now())
	counts := waitAckRecords(t, nodes, 2, 10*time.Second)
	var on []int
	for i, c := range counts {
		if c > 1 {
			t.Errorf("node %d holds %d records of one ack", i, c)
		}
		if c == 1 {
			on = append(on, i)
		}
	}
	if len(on) != 2 {
		t.Fatalf("records per node %v: want one record on each of two nodes", counts)
	}
	for _, i := range on {
		body := rawBodies(t, nodes[i].TCPAddr, DefaultAckTopic, "raw", 1)[0]
		rec, err := envelope.DecodeAckRecord(body)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Instance != p.cfg.InstanceID || rec.Topic != "orders" || rec.Channel != "billing" ||
			len(rec.IDs) != 1 || rec.IDs[0] != "m-1" || len(rec.Held) != 0 {
			t.Errorf("node %d: record %+v, want instance %s, orders/billing, ids [m-1]", i, rec, p.cfg.InstanceID)
		}
	}
}

// TestAckRecordsRetriedThroughOutage: an ack noted while no node can take
// its record is not dropped: the record is retried with backoff and written
// once nodes are back, and another instance then finishes the message's
// copy instead of delivering it. Without the retry no record would ever
// reach the restarted nodes.
func TestAckRecordsRetriedThroughOutage(t *testing.T) {
	var nodes []*nsqd.Node
	var opts []nsqd.Options
	for range 2 {
		o := nsqd.Options{DataDir: t.TempDir()}
		nd := nsqdtest.StartNode(t, o)
		o.TCPAddr, o.HTTPAddr = nd.TCPAddr, nd.HTTPAddr
		nodes, opts = append(nodes, nd), append(opts, o)
	}
	tweak := func(c *Config) { c.AckTopic = DefaultAckTopic }
	a := newPool(t, ModeCluster, localNodes(nodes), tweak)
	waitAckReaders(t, nodes, a.cfg.InstanceID)
	ev := watchEvents(t, a)
	stopped := time.Now()
	for _, nd := range nodes {
		if err := nd.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"n0", "n1"} {
		ev.wait(t, stopped, 10*time.Second, name+" down", isState(name, backends.NodeDown))
	}
	a.noteAcked("orders", "billing", "m-1", time.Now())
	// The first write fails at once (no usable node); wait past a few
	// retries before the nodes come back.
	time.Sleep(300 * time.Millisecond) // the outage's length, not a wait for an event
	for i := range nodes {
		nodes[i] = nsqdtest.StartNode(t, opts[i])
	}
	t.Cleanup(func() { a.Close() }) // before the restarted nodes stop
	counts := waitAckRecords(t, nodes, 1, 15*time.Second)
	t.Logf("records per restarted node: %v", counts)

	// A second instance that reads the ack topic from the start learns it:
	// its channel, created now, gets every record published from now on,
	// so publish the ack again through a (and wait until b knows it).
	b := newPool(t, ModeCluster, localNodes(nodes), tweak)
	waitAckReaders(t, nodes, b.cfg.InstanceID)
	a.noteAcked("orders", "billing", "m-2", time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for !b.acked.has("orders", "billing", "m-2", time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("instance b never learned the ack of m-2 from a's records")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAckChannelSweep: an instance deletes another instance's channel on
// the ack topic once it has had no consumer for AckChannelExpiry, and
// never its own, a channel with a consumer, or a channel that is not an
// ack channel.
func TestAckChannelSweep(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.AckTopic = DefaultAckTopic })
	waitAckReaders(t, nodes, p.cfg.InstanceID)
	addr := nodes[0].HTTPAddr
	gone, live, other := ackChannel("gone"), ackChannel("live"), "audit"
	for _, ch := range []string{gone, live, other} {
		nsqdtest.Create(t, addr, DefaultAckTopic, ch)
	}
	stop := consumeRaw(t, nodes[0].TCPAddr, DefaultAckTopic, live, func([]byte) {})
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ch := nsqdtest.Stats(t, addr).Topic(DefaultAckTopic).Channel(live); ch != nil && ch.ClientCount > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the raw consumer never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	channels := func() map[string]bool {
		out := map[string]bool{}
		for _, ch := range nsqdtest.Stats(t, addr).Topic(DefaultAckTopic).Channels {
			out[ch.Name] = true
		}
		return out
	}
	// A bus of its own with the pool's identity and a clock of the test's:
	// the pool's own sweep (every ackSweepEvery) could not delete anything
	// within this test, which takes far less than AckChannelExpiry.
	b := &ackBus{p: p, topic: DefaultAckTopic, channel: ackChannel(p.cfg.InstanceID), idle: map[string]map[string]time.Time{}}
	nc := localNodes(nodes)[0]
	t0 := time.Now()
	b.sweep(context.Background(), nc, t0)
	b.sweep(context.Background(), nc, t0.Add(AckChannelExpiry-time.Second))
	if got := channels(); !got[gone] || !got[live] || !got[other] || !got[b.channel] {
		t.Fatalf("before the expiry: channels %v, want all four", got)
	}
	b.sweep(context.Background(), nc, t0.Add(AckChannelExpiry))
	got := channels()
	if got[gone] {
		t.Errorf("%s, idle for AckChannelExpiry, not deleted: %v", gone, got)
	}
	if !got[live] || !got[other] || !got[b.channel] {
		t.Errorf("channels %v: want %s (has a consumer), %s (not an ack channel) and the instance's own %s kept", got, live, other, b.channel)
	}
}

// TestLateAckAfterConnectionLoss: the node that delivered the first copy
// of a replicated message goes away while the client holds it; the client's
// Ack, arriving after the connection broke but within its deadline, still
// counts: the standby copy is finished when it is due instead of being
// delivered. The control (no Ack) gets the standby delivered once the
// first copy's deadline has passed.
func TestLateAckAfterConnectionLoss(t *testing.T) {
	for _, ack := range []bool{true, false} {
		name := map[bool]string{true: "acked", false: "not acked"}[ack]
		t.Run(name, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			const delay = 1500 * time.Millisecond
			p := newPool(t, ModeFailover, localNodes(nodes), func(c *Config) { c.StandbyDelay = delay })
			ev := watchEvents(t, p)
			const topic = "late"
			createChannels(t, p, localHTTP(nodes), topic, "c")
			sub := subscribeOpts(t, p, backends.SubscribeOptions{
				Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: 4 * time.Second})
			if err := sendReplicas(context.Background(), p, topic, 2, "m1"); err != nil {
				t.Fatal(err)
			}
			d := receive(t, sub, 5*time.Second)
			if d.ID != "m1" || d.Attempt != 1 {
				t.Fatalf("delivery %s attempt %d, want m1 attempt 1", d.ID, d.Attempt)
			}
			// The first copy came from n0, the active node of the failover
			// group; its connection breaks with it.
			stopped := time.Now()
			if err := nodes[0].Stop(); err != nil {
				t.Fatal(err)
			}
			ev.wait(t, stopped, 10*time.Second, "n0 down", isState("n0", backends.NodeDown))
			if ack {
				if err := d.Acker.Ack(); err != nil {
					t.Fatalf("Ack after the connection broke: %v, want nil (it counts)", err)
				}
			}
			got := receiveOrEmpty(t, sub, localHTTP(nodes[1:]), topic, "c", 20*time.Second)
			switch {
			case ack && got != nil:
				t.Errorf("standby delivered after the Ack: %s attempt %d", got.ID, got.Attempt)
			case !ack && (got == nil || got.ID != "m1"):
				t.Errorf("without an Ack the standby was not delivered (got %v): the test cannot tell", got)
			}
			if got != nil {
				_ = got.Acker.Ack()
			}
		})
	}
}
