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

// Idempotent sends (issue 13 item 1): a message whose id the client chose
// may be sent twice (a retried Send), and is delivered once per channel, by
// the mechanism that deduplicates replicated copies. These tests fail when
// client-id messages do not take part in it (each send's copy is then
// delivered).

// sendClientIDs sends one message per id, marked client-chosen, with body
// "<id> <tag>", so a test can tell the sends apart.
func sendClientIDs(t *testing.T, p *Pool, topic string, replicas int, tag string, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs := make([]*backends.Message, len(ids))
	for i, id := range ids {
		msgs[i] = &backends.Message{ID: id, Body: []byte(id + " " + tag), PublishTime: time.Now(), ClientID: true}
	}
	if err := p.Send(ctx, topic, msgs, backends.SendOptions{Replicas: replicas}); err != nil {
		t.Fatalf("send %s: %v", tag, err)
	}
}

// idLedger counts the deliveries of the subscriptions it drains, and acks
// them, except those that hold keeps (passed on first, unsettled, for the
// test to settle).
type idLedger struct {
	hold  func(*backends.Delivery) bool // may be nil
	first chan *backends.Delivery
	wg    sync.WaitGroup

	mu    sync.Mutex
	got   map[string]int // id -> deliveries
	acked map[string]int // id -> acked deliveries
}

func newIDLedger(hold func(*backends.Delivery) bool) *idLedger {
	return &idLedger{hold: hold, first: make(chan *backends.Delivery, 16), got: map[string]int{}, acked: map[string]int{}}
}

// drain receives from sub until ctx ends or sub closes.
func (l *idLedger) drain(ctx context.Context, sub backends.Subscription) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			d, err := sub.Receive(ctx)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.got[d.ID]++
			keep := l.hold != nil && l.hold(d)
			if !keep && d.Acker.Ack() == nil {
				l.acked[d.ID]++
			}
			l.mu.Unlock()
			if keep {
				l.first <- d
			}
		}
	}()
}

// ack acks d, kept by hold, and counts it.
func (l *idLedger) ack(t *testing.T, d *backends.Delivery) {
	t.Helper()
	if err := d.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.acked[d.ID]++
	l.mu.Unlock()
}

// keepFirst is a idLedger hold that keeps the first delivery only.
func keepFirst() func(*backends.Delivery) bool {
	kept := false
	return func(*backends.Delivery) bool { // called under idLedger.mu
		k := !kept
		kept = true
		return k
	}
}

func (l *idLedger) counts(id string) (got, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[id], l.acked[id]
}

// waitKnown waits until cond holds for the pool's view of topic/channel.
func waitKnown(t *testing.T, what string, cond func(now time.Time) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(time.Now()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientIDSentTwiceDeliveredOnce: client ids sent twice, read by two
// subscriptions of one pool on one channel, are delivered once, with
// replicas 1 and 2: ten ids sent twice back to back while both
// subscriptions read (both copies of each live at once, most pairs split
// between the subscriptions), or one retried while its first delivery is
// held unacked. First deliveries are acked only once every copy reached
// a subscription, so a twin delivered meanwhile is counted; an id sent
// once beside them is delivered once too.
func TestClientIDSentTwiceDeliveredOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		atOnce   bool
	}{
		{"at once, replicas 1", 1, true},
		{"at once, replicas 2", 2, true},
		{"retry while held, replicas 1", 1, false},
		{"retry while held, replicas 2", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			// A standby delay long enough that the copies are young when
			// they arrive (a replicated copy claims a hold only a quarter
			// of it after its send): a client-id copy claims one at once.
			p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.StandbyDelay = 4 * time.Second })
			const topic = "idem"
			createChannels(t, p, localHTTP(nodes), topic, "c")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ids := []string{"k0"}
			if tc.atOnce {
				ids = []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
			}
			var l *idLedger
			// Keep each id's first delivery (hold runs under l.mu, after
			// the count); "single" is acked at once.
			l = newIDLedger(func(d *backends.Delivery) bool { return d.ID != "single" && l.got[d.ID] == 1 })
			open := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 20, AckDeadline: 5 * time.Second}
			for range 2 {
				l.drain(ctx, subscribeOpts(t, p, open))
			}
			waitChannelClients(t, localHTTP(nodes), topic, "c", 2)
			sendClientIDs(t, p, topic, tc.replicas, "first", append(ids, "single")...)
			if tc.atOnce {
				sendClientIDs(t, p, topic, tc.replicas, "retry", ids...)
			}
			var held []*backends.Delivery
			for range ids {
				held = append(held, <-l.first)
			}
			if !tc.atOnce {
				waitKnown(t, "k0 held", func(now time.Time) bool {
					_, until := p.acked.state(topic, "c", "k0", now)
					return until.After(now)
				})
				sendClientIDs(t, p, topic, tc.replicas, "retry", ids...)
			}
			copies := (2*len(ids) + 1) * tc.replicas
			waitTaken(t, localHTTP(nodes), topic, "c", copies)
			for _, id := range ids {
				if got, _ := l.counts(id); got != 1 {
					t.Errorf("%s delivered %d times while its first delivery was held", id, got)
				}
			}
			for _, d := range held {
				l.ack(t, d)
			}
			waitChannelEmpty(t, localHTTP(nodes), topic, "c", copies, 30*time.Second)
			cancel()
			l.wg.Wait()
			for _, id := range append(ids, "single") {
				if got, acked := l.counts(id); got != 1 || acked != 1 {
					t.Errorf("%s: %d deliveries, %d acked; want 1 and 1", id, got, acked)
				}
			}
		})
	}
}

// waitChannelClients waits until topic/channel has n clients on every node.
func waitChannelClients(t *testing.T, httpAddrs []string, topic, channel string, n int) {
	t.Helper()
	waitKnown(t, fmt.Sprintf("%d clients of %s/%s on every node", n, topic, channel), func(time.Time) bool {
		for _, addr := range httpAddrs {
			if channelClients(addr, topic, channel) < n {
				return false
			}
		}
		return true
	})
}

// TestClientIDRetryAcrossInstances: two pools (two qgate instances)
// sharing the ack bus, a subscription on each on one channel. A message
// sent through A is delivered at one of them; its retry, sent through B
// once the first copy is known acked (or only held: delivered and not
// yet acked) on both, is not delivered, whichever subscription it reaches:
// finished once the first is acked, deferred while it is merely held.
func TestClientIDRetryAcrossInstances(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		ackFirst bool // ack before the retry; else hold it across the retry
	}{
		{"acked, replicas 1", 1, true},
		{"acked, replicas 2", 2, true},
		{"held, replicas 1", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			tweak := func(c *Config) { c.AckTopic, c.StandbyDelay = DefaultAckTopic, 400*time.Millisecond }
			a := newPool(t, ModeCluster, localNodes(nodes), tweak)
			b := newPool(t, ModeCluster, localNodes(nodes), tweak)
			waitAckReaders(t, nodes, a.cfg.InstanceID)
			waitAckReaders(t, nodes, b.cfg.InstanceID)
			const topic = "idem2"
			createChannels(t, a, localHTTP(nodes), topic, "c")
			open := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: 3 * time.Second}
			subs := []backends.Subscription{subscribeOpts(t, a, open), subscribeOpts(t, b, open)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l := newIDLedger(nil)
			if !tc.ackFirst {
				l = newIDLedger(keepFirst())
			}
			for _, sub := range subs {
				l.drain(ctx, sub)
			}
			sendClientIDs(t, a, topic, tc.replicas, "first", "k1")
			if tc.ackFirst {
				waitKnown(t, "k1 acked on both instances", func(now time.Time) bool {
					return a.acked.has(topic, "c", "k1", now) && b.acked.has(topic, "c", "k1", now)
				})
				sendClientIDs(t, b, topic, tc.replicas, "retry", "k1")
			} else {
				held := <-l.first
				waitKnown(t, "k1 held on both instances", func(now time.Time) bool {
					_, ha := a.acked.state(topic, "c", "k1", now)
					_, hb := b.acked.state(topic, "c", "k1", now)
					return ha.After(now) && hb.After(now)
				})
				sendClientIDs(t, b, topic, tc.replicas, "retry", "k1")
				// Ack the first only once the retry's copy reached a
				// subscription (deferred for the hold, or parked behind
				// the held copy): a delivery of it meanwhile would count.
				waitTaken(t, localHTTP(nodes), topic, "c", 2)
				if got, _ := l.counts("k1"); got != 1 {
					t.Fatalf("k1 delivered %d times while its first delivery was held", got)
				}
				l.ack(t, held)
			}
			waitChannelEmpty(t, localHTTP(nodes), topic, "c", 2*tc.replicas, 30*time.Second)
			cancel()
			l.wg.Wait()
			if got, acked := l.counts("k1"); got != 1 || acked != 1 {
				t.Errorf("k1: %d deliveries, %d acked; want 1 and 1", got, acked)
			}
		})
	}
}

// waitTaken waits until n messages reached topic/channel in all and none
// is waiting there for a consumer (each is in flight or deferred).
func waitTaken(t *testing.T, httpAddrs []string, topic, channel string, n int) {
	t.Helper()
	waitKnown(t, fmt.Sprintf("%d messages taken from %s/%s", n, topic, channel), func(time.Time) bool {
		count, depth := 0, 0
		for _, addr := range httpAddrs {
			if tp := nsqdtest.Stats(t, addr).Topic(topic); tp != nil {
				if ch := tp.Channel(channel); ch != nil {
					count += int(ch.MessageCount)
					depth += int(ch.Depth)
				}
			}
		}
		return count >= n && depth == 0
	})
}

// TestClientIDNotAckedIsDelivered: deduplication never loses a message.
// An id sent twice whose first delivery is nacked, and one whose
// subscription closes without acking it, are delivered again (by either
// copy) and acked once; nothing is finished while its twin is merely held.
func TestClientIDNotAckedIsDelivered(t *testing.T) {
	for _, end := range []string{"nack", "close"} {
		t.Run(end, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			p := newPool(t, ModeCluster, localNodes(nodes), nil)
			const topic = "idem3"
			createChannels(t, p, localHTTP(nodes), topic, "c")
			open := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: 2 * time.Second}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l := newIDLedger(keepFirst())
			first := subscribeOpts(t, p, open)
			l.drain(ctx, first)
			sendClientIDs(t, p, topic, 1, "first", "k1")
			sendClientIDs(t, p, topic, 1, "retry", "k1")
			d := <-l.first
			l.drain(ctx, subscribeOpts(t, p, open))
			waitTaken(t, localHTTP(nodes), topic, "c", 2)
			switch end {
			case "nack":
				if err := d.Acker.Nack(0); err != nil {
					t.Fatal(err)
				}
			case "close":
				first.Close()
			}
			waitChannelEmpty(t, localHTTP(nodes), topic, "c", 2, 30*time.Second)
			cancel()
			l.wg.Wait()
			if got, acked := l.counts("k1"); got != 2 || acked != 1 {
				t.Errorf("k1, its first delivery ended by %s: %d deliveries, %d acked; want 2 and 1", end, got, acked)
			}
		})
	}
}

// TestClientIDHeldCopyLost: a copy deferred because its twin is held is
// never finished for it. Instance A (node n0 only) holds the first send's
// copy; its retry, written to n1 only, reaches instance B's subscription
// and is deferred there. The held copy is then lost (n0's channel
// emptied, as when a node dies with it in flight) and its delivery
// nacked: the retry's copy must be delivered. Were a held twin finished,
// the message would be lost.
func TestClientIDHeldCopyLost(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	all := localNodes(nodes)
	bus := func(c *Config) { c.AckTopic = DefaultAckTopic }
	a := newPool(t, ModeCluster, all[:1], bus)
	b := newPool(t, ModeCluster, all, bus)
	onN1 := newPool(t, ModeCluster, all[1:], nil) // writes the retry to n1 only
	waitAckReaders(t, nodes[:1], a.cfg.InstanceID)
	waitAckReaders(t, nodes, b.cfg.InstanceID)
	const topic = "idemlost"
	createChannels(t, b, localHTTP(nodes), topic, "c")
	open := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 10, AckDeadline: 2 * time.Second}
	subA := subscribeOpts(t, a, open)
	sendClientIDs(t, a, topic, 1, "first", "k1")
	first := receive(t, subA, 10*time.Second)
	subB := subscribeOpts(t, b, open)
	waitKnown(t, "k1 held at B", func(now time.Time) bool {
		_, until := b.acked.state(topic, "c", "k1", now)
		return until.After(now)
	})
	sendClientIDs(t, onN1, topic, 1, "retry", "k1")
	// B handled the retry's copy: nothing of it queued or in flight at n1
	// (deferred for the hold; finishing it would lose the message).
	waitKnown(t, "the retry handled at B", func(time.Time) bool {
		tp := nsqdtest.Stats(t, nodes[1].HTTPAddr).Topic(topic)
		if tp == nil {
			return false
		}
		ch := tp.Channel("c")
		return ch != nil && ch.MessageCount >= 1 && ch.Depth == 0 && ch.InFlightCount == 0
	})
	nsqdtest.Post(t, nodes[0].HTTPAddr, "/channel/empty", topic, "c")
	if err := first.Acker.Nack(0); err != nil { // its REQ finds nothing at n0
		t.Fatal(err)
	}
	d := receive(t, subB, 15*time.Second)
	if d.ID != "k1" || string(d.Body) != "k1 retry" {
		t.Fatalf("delivered %s %q, want the retry of k1", d.ID, d.Body)
	}
	if err := d.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	if extra := receiveOrEmpty(t, subB, localHTTP(nodes), topic, "c", 15*time.Second); extra != nil {
		t.Errorf("delivered again: %s %q attempt %d", extra.ID, extra.Body, extra.Attempt)
	}
}
