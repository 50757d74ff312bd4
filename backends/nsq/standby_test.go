package nsq

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestFailoverReplicas: in failover mode (one group) replicas 2 writes the
// first copy to the active member and a standby to the next backup.
func TestFailoverReplicas(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	p := newPool(t, ModeFailover, localNodes(nodes), nil)
	const topic = "fo"
	createChannels(t, p, localHTTP(nodes), topic, "raw")
	if err := sendReplicas(context.Background(), p, topic, 2, "a"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		copies  int
		standby bool
	}{{1, false}, {1, true}, {0, false}} {
		tp := nsqdtest.Stats(t, nodes[i].HTTPAddr).Topic(topic)
		if got := int(tp.MessageCount); got != want.copies {
			t.Errorf("node n%d: %d copies, want %d", i, got, want.copies)
			continue
		}
		if want.copies == 0 {
			continue
		}
		body := rawBodies(t, nodes[i].TCPAddr, topic, "raw", 1)[0]
		e, ok := envelope.Decode(body)
		if !ok || e.Standby != want.standby || e.Replicas != 2 {
			t.Errorf("node n%d: envelope %+v (ok %v), want standby %v, replicas 2", i, e, ok, want.standby)
		}
		if want.standby && e.NotBefore.Sub(e.PublishTime) < DefaultStandbyDelay-time.Second {
			t.Errorf("node n%d: standby not_before %v, publish %v: want about %v later", i, e.NotBefore, e.PublishTime, DefaultStandbyDelay)
		}
	}
}

// TestStandbyDeliveredWhenFirstCopyLost: the first copy of a replicated
// message vanishes from its node (its channel emptied, as a SIGKILL loses
// what nsqd held in memory): the standby copy is delivered, once, not
// before the standby delay.
func TestStandbyDeliveredWhenFirstCopyLost(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const delay = 800 * time.Millisecond
	p := newPool(t, ModeFailover, localNodes(nodes), func(c *Config) { c.StandbyDelay = delay })
	const topic = "lost"
	createChannels(t, p, localHTTP(nodes), topic, "c")
	sent := time.Now()
	if err := sendReplicas(context.Background(), p, topic, 2, "m1"); err != nil {
		t.Fatal(err)
	}
	nsqdtest.Post(t, nodes[0].HTTPAddr, "/channel/empty", topic, "c")
	sub := subscribe(t, p, topic, "c", 10)
	d := receive(t, sub, 10*time.Second)
	if got := time.Since(sent); d.ID != "m1" || got < delay {
		t.Errorf("delivery %q %v after the send, want m1 after at least %v", d.ID, got, delay)
	}
	if d.Attempt != 1 {
		t.Errorf("attempt %d, want 1 (the standby's early arrival is not a delivery)", d.Attempt)
	}
	if err := d.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	waitChannelEmpty(t, localHTTP(nodes), topic, "c", 1, 10*time.Second)
}

// TestStandbyFinishedWhenAckedOnAnotherInstance: two pools (two qgate
// instances) share two nodes. The first copy is delivered and acked
// through pool A; the standby copy surfaces only at pool B's subscriber,
// which must finish it without delivery because A shared the ack through
// the ack topic. Without ack sharing the same flow delivers it to B: the
// test can fail.
func TestStandbyFinishedWhenAckedOnAnotherInstance(t *testing.T) {
	for _, share := range []bool{true, false} {
		name := map[bool]string{true: "shared", false: "not shared"}[share]
		t.Run(name, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			const delay = 2 * time.Second
			tweak := func(c *Config) {
				c.StandbyDelay = delay
				if share {
					c.AckTopic = DefaultAckTopic
				}
			}
			a := newPool(t, ModeFailover, localNodes(nodes), tweak)
			b := newPool(t, ModeFailover, localNodes(nodes), tweak)
			if share {
				waitAckReaders(t, nodes, b.cfg.InstanceID)
			}
			const topic = "twice"
			subA := subscribe(t, a, topic, "c", 10)
			if err := sendReplicas(context.Background(), a, topic, 2, "m1"); err != nil {
				t.Fatal(err)
			}
			d := receive(t, subA, 5*time.Second)
			if err := d.Acker.Ack(); err != nil {
				t.Fatal(err)
			}
			// The standby arrived at A early and was deferred; A leaves.
			waitRequeued(t, nodes[1].HTTPAddr, topic, "c", 5*time.Second)
			subA.Close()
			subB := subscribe(t, b, topic, "c", 10)
			// Until the standby is due B has nothing; then it either gets
			// it or finishes it: wait for a delivery or an empty channel.
			got := receiveOrEmpty(t, subB, localHTTP(nodes), topic, "c", 15*time.Second)
			switch {
			case share && got != nil:
				t.Errorf("standby delivered at B after the ack at A: %s attempt %d", got.ID, got.Attempt)
			case !share && got == nil:
				t.Errorf("without shared acks B did not get the standby: the test cannot tell sharing from luck")
			}
			if got != nil {
				_ = got.Acker.Ack()
			}
		})
	}
}

// receiveOrEmpty returns the next delivery of sub, or nil once
// topic/channel is empty on every node (nothing queued, in flight or
// deferred); it fails the test at timeout.
func receiveOrEmpty(t *testing.T, sub backends.Subscription, httpAddrs []string, topic, channel string, timeout time.Duration) *backends.Delivery {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		d, err := sub.Receive(ctx)
		cancel()
		if err == nil {
			return d
		}
		busy := 0
		for _, addr := range httpAddrs {
			if tp := nsqdtest.Stats(t, addr).Topic(topic); tp != nil {
				if ch := tp.Channel(channel); ch != nil {
					busy += int(ch.Depth) + ch.InFlightCount + ch.DeferredCount
				}
			}
		}
		if busy == 0 {
			return nil
		}
	}
	t.Fatalf("%s/%s: neither delivered nor empty after %v", topic, channel, timeout)
	return nil
}

// createChannels creates topic and topic/channel on every node.
func createChannels(t *testing.T, _ *Pool, httpAddrs []string, topic, channel string) {
	t.Helper()
	for _, addr := range httpAddrs {
		nsqdtest.Create(t, addr, topic, channel)
	}
}

// waitAckReaders waits until instance id reads the ack topic on every node.
func waitAckReaders(t *testing.T, nodes []*nsqd.Node, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for {
			tp := nsqdtest.Stats(t, nd.HTTPAddr).Topic(DefaultAckTopic)
			if tp != nil {
				if ch := tp.Channel(ackChannel(id)); ch != nil && ch.ClientCount > 0 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %s does not read %s on %s", id, DefaultAckTopic, nd.HTTPAddr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// waitRequeued waits until topic/channel on the node has requeued a message.
func waitRequeued(t *testing.T, httpAddr, topic, channel string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if tp := nsqdtest.Stats(t, httpAddr).Topic(topic); tp != nil {
			if ch := tp.Channel(channel); ch != nil && ch.RequeueCount > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s on %s: nothing requeued in %v", topic, channel, httpAddr, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawBodies reads want messages of topic/channel at tcpAddr with a plain
// go-nsq consumer (finishing them) and returns their bodies.
func rawBodies(t *testing.T, tcpAddr, topic, channel string, want int) [][]byte {
	t.Helper()
	var out [][]byte
	got := make(chan []byte, want)
	stop := consumeRaw(t, tcpAddr, topic, channel, func(b []byte) { got <- append([]byte(nil), b...) })
	defer stop()
	for range want {
		select {
		case b := <-got:
			out = append(out, b)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s/%s at %s: %d of %d messages", topic, channel, tcpAddr, len(out), want)
		}
	}
	return out
}

// consumeRaw consumes topic/channel at tcpAddr with a plain go-nsq
// consumer, calling f with each body (then finishing it); stop stops it.
func consumeRaw(t *testing.T, tcpAddr, topic, channel string, f func([]byte)) (stop func()) {
	t.Helper()
	c, err := gonsq.NewConsumer(topic, channel, gonsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	c.SetLoggerLevel(gonsq.LogLevelError)
	c.AddHandler(gonsq.HandlerFunc(func(m *gonsq.Message) error {
		f(m.Body)
		return nil
	}))
	if err := c.ConnectToNSQD(tcpAddr); err != nil {
		t.Fatal(err)
	}
	return func() { c.Stop(); <-c.StopChan }
}

// TestNackDelayHoldsStandby: a replicated message nacked with a delay
// longer than the standby delay comes back after the nack's delay, once:
// its standby copy, due earlier, waits for the hold instead of bringing it
// back early. Without holds the standby would be delivered at the standby
// delay.
func TestNackDelayHoldsStandby(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const standby, nack = 300 * time.Millisecond, 1500 * time.Millisecond
	p := newPool(t, ModeFailover, localNodes(nodes), func(c *Config) { c.StandbyDelay = standby })
	const topic = "nacked"
	sub := subscribe(t, p, topic, "c", 10)
	if err := sendReplicas(context.Background(), p, topic, 2, "m1"); err != nil {
		t.Fatal(err)
	}
	d := receive(t, sub, 5*time.Second)
	nacked := time.Now()
	if err := d.Acker.Nack(nack); err != nil {
		t.Fatal(err)
	}
	again := receive(t, sub, 10*time.Second)
	if got := time.Since(nacked); got < nack-50*time.Millisecond {
		t.Errorf("redelivered %v after a nack with delay %v (attempt %d): the standby came back early", got, nack, again.Attempt)
	}
	if again.Attempt != 2 {
		t.Errorf("attempt %d, want 2", again.Attempt)
	}
	if err := again.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	if extra := receiveOrEmpty(t, sub, localHTTP(nodes), topic, "c", 10*time.Second); extra != nil {
		t.Errorf("delivered a third time: %s attempt %d", extra.ID, extra.Attempt)
	}
}

// TestBacklogDrainedByTwoSubscriptions: a backlog of replicated messages
// whose standbys are already due (both copies live), drained by two
// subscriptions of one pool at once: each message is delivered once (a
// copy that arrives late holds its id, so its twin waits for its outcome).
func TestBacklogDrainedByTwoSubscriptions(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const standby = 200 * time.Millisecond
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.StandbyDelay = standby })
	const topic, n = "backlog", 200
	createChannels(t, p, localHTTP(nodes), topic, "c")
	for i := range n {
		if err := sendReplicas(context.Background(), p, topic, 2, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(standby) // every standby is due: both copies of each message are live
	subs := []backends.Subscription{subscribe(t, p, topic, "c", 20), subscribe(t, p, topic, "c", 20)}
	dups := drainAcking(t, localHTTP(nodes), topic, n, 30*time.Second, subs...)
	if dups > 0 {
		t.Errorf("%d of %d messages delivered more than once", dups, n)
	}
}

// drainAcking acks whatever subs deliver until topic/"c" is empty on every
// node (both copies of n messages m0… arrived), fails the test for each
// message never delivered, and returns how many were delivered more than
// once.
func drainAcking(t *testing.T, httpAddrs []string, topic string, n int, timeout time.Duration, subs ...backends.Subscription) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				d, err := sub.Receive(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				got[d.ID]++
				mu.Unlock()
				_ = d.Acker.Ack()
			}
		}()
	}
	waitChannelEmpty(t, httpAddrs, topic, "c", 2*n, timeout)
	cancel()
	wg.Wait()
	dups := 0
	for i := range n {
		switch c := got[fmt.Sprint("m", i)]; {
		case c == 0:
			t.Errorf("m%d never delivered", i)
		case c > 1:
			dups++
		}
	}
	return dups
}
