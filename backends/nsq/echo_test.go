package nsq

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// ackedAtA starts instance A, sends n replicated messages to topic and
// acks each through A; it returns A, its subscription, the options to
// subscribe with elsewhere, and when the sends began.
func ackedAtA(t *testing.T, nodes []*nsqd.Node, topic string, n int, tweak func(*Config)) (*Pool, backends.Subscription, backends.SubscribeOptions, time.Time) {
	t.Helper()
	a := newPool(t, ModeCluster, localNodes(nodes), tweak)
	waitAckReaders(t, nodes, a.cfg.InstanceID)
	createChannels(t, a, localHTTP(nodes), topic, "c")
	opts := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: n, AckDeadline: 10 * time.Second}
	subA, err := a.Subscribe(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	for i := range n {
		if err := sendReplicas(context.Background(), a, topic, 2, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if err := receive(t, subA, 10*time.Second).Acker.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	return a, subA, opts, sent
}

// deliveredAgain receives (and acks) at sub until deadline and returns
// how many deliveries came.
func deliveredAgain(t *testing.T, sub backends.Subscription, deadline time.Time) int {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	twice := 0
	for {
		d, err := sub.Receive(ctx)
		if err != nil {
			return twice
		}
		twice++
		t.Logf("%s delivered again (attempt %d)", d.ID, d.Attempt)
		_ = d.Acker.Ack()
	}
}

// TestAckEchoForNewInstance: messages acked through instance A before
// instance B started (a restarted qgate: a new instance with an empty
// table of acked ids, whose ack channel did not exist when A shared
// those acks) have their standbys surface at B only. B's claim of each
// reaches A, which knows the id acked and says so again; B learns it
// within its settle time and finishes the standby instead of delivering
// it a second time.
func TestAckEchoForNewInstance(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const standby = 8 * time.Second // B hears of A within a heartbeat (2s)
	tweak := func(c *Config) { c.StandbyDelay, c.AckTopic = standby, DefaultAckTopic }
	const topic, n = "echo", 20
	_, subA, opts, sent := ackedAtA(t, nodes, topic, n, tweak)
	subA.Close() // the standbys can reach B only

	b := newPool(t, ModeCluster, localNodes(nodes), tweak)
	waitAckReaders(t, nodes, b.cfg.InstanceID)
	waitFor(t, 10*time.Second, "B hears of A", func() bool {
		_, ok := b.peers.lag(time.Now())
		return ok
	})
	if time.Since(sent) >= standby {
		t.Fatalf("B heard of A %v after the sends, after the standbys surfaced: nothing tested", time.Since(sent))
	}
	if twice := deliveredAgain(t, subscribeOpts(t, b, opts), sent.Add(standby+3*time.Second)); twice > 0 {
		t.Errorf("%d of %d messages acked at A were delivered again at B", twice, n)
	}
	// Every standby was met and finished: nothing left on the nodes.
	waitFor(t, 10*time.Second, "the standbys finished", func() bool {
		for _, h := range localHTTP(nodes) {
			for _, tp := range nsqdtest.Stats(t, h).Topics {
				for _, c := range tp.Channels {
					if tp.Name == topic && c.Depth+int64(c.InFlightCount)+int64(c.DeferredCount) > 0 {
						return false
					}
				}
			}
		}
		return true
	})
}

// TestAckHandoverOnClose: a rolling restart. Instance B starts after A
// acked messages (B's ack channel did not exist when A shared them), then
// A stops gracefully: it hands what it knows over, so the standbys of
// those messages, which can only reach B, are finished there, not
// delivered a second time. (No instance is left to echo the acks.)
func TestAckHandoverOnClose(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	const standby = 6 * time.Second
	tweak := func(c *Config) { c.StandbyDelay, c.AckTopic = standby, DefaultAckTopic }
	const topic, n = "handover", 20
	a, _, opts, sent := ackedAtA(t, nodes, topic, n, tweak)
	b := newPool(t, ModeCluster, localNodes(nodes), tweak)
	waitAckReaders(t, nodes, b.cfg.InstanceID)
	a.Close() // hands over, then its channel and subscription go
	if time.Since(sent) >= standby {
		t.Fatalf("A closed %v after the sends, after the standbys surfaced: nothing tested", time.Since(sent))
	}
	if twice := deliveredAgain(t, subscribeOpts(t, b, opts), sent.Add(standby+3*time.Second)); twice > 0 {
		t.Errorf("%d of %d messages acked at A were delivered again at B after A stopped", twice, n)
	}
}
