package nsq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// timerTestHop makes "long" delays short enough for a test: a delay of a
// second waits on the timer topic in ten steps.
const timerTestHop = 100 * time.Millisecond

func withTimer(c *Config) {
	c.TimerTopic = DefaultTimerTopic
	c.TimerHop = timerTestHop
}

// sentAt records when each message of a delayed send was accepted.
type sentAt struct {
	mu  sync.Mutex
	due map[string]time.Time
}

// sendDelayed sends one message per id with delay and replicas, each
// published at the moment of its Send, and records its due time.
func (s *sentAt) sendDelayed(t *testing.T, p *Pool, topic string, delay time.Duration, replicas int, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		now := time.Now()
		m := &backends.Message{ID: id, Body: []byte(id), PublishTime: now}
		if err := p.Send(ctx, topic, []*backends.Message{m}, backends.SendOptions{Delay: delay, Replicas: replicas}); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		if s.due == nil {
			s.due = make(map[string]time.Time)
		}
		s.due[id] = now.Add(delay)
		s.mu.Unlock()
	}
}

// receiveAll receives until every id in want was delivered once, acking
// each; it fails on an early, unknown, repeated or non-first delivery.
// It returns the greatest lateness seen.
func (s *sentAt) receiveAll(t *testing.T, sub backends.Subscription, want int, timeout time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	seen := make(map[string]bool)
	var late time.Duration
	for len(seen) < want {
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatalf("%d of %d delivered: %v", len(seen), want, err)
		}
		now := time.Now()
		s.mu.Lock()
		due, ok := s.due[d.ID]
		s.mu.Unlock()
		switch {
		case !ok:
			t.Errorf("delivered %q, never sent", d.ID)
		case seen[d.ID]:
			t.Errorf("%q delivered twice", d.ID)
		case now.Before(due.Add(-notBeforePrecision)):
			t.Errorf("%q delivered %v before it was due", d.ID, due.Sub(now))
		case d.Attempt != 1:
			t.Errorf("%q delivered as attempt %d, want 1 (timer steps are not attempts)", d.ID, d.Attempt)
		}
		late = max(late, now.Sub(due))
		seen[d.ID] = true
		if err := d.Acker.Ack(); err != nil {
			t.Error(err)
		}
	}
	return late
}

// timerRequeues returns the REQs counted on the timer channel of the
// nodes at httpAddrs: the steps of the messages that waited there.
func timerRequeues(t *testing.T, httpAddrs []string) uint64 {
	t.Helper()
	var n uint64
	for _, a := range httpAddrs {
		for _, tp := range nsqdtest.Stats(t, a).Topics {
			if tp.Name != DefaultTimerTopic {
				continue
			}
			for _, c := range tp.Channels {
				if c.Name == TimerChannel {
					n += c.RequeueCount
				}
			}
		}
	}
	return n
}

// TestLongDelay: messages delayed beyond the timer hop, written once and
// replicated, wait on the timer topic in steps and are delivered once
// each, not before they are due, as attempt 1, and not much later.
func TestLongDelay(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) {
		withTimer(c)
		c.StandbyDelay = 300 * time.Millisecond
	})
	if got := p.MaxDelay(); got != MaxLongDelay {
		t.Fatalf("MaxDelay() = %v, want %v", got, MaxLongDelay)
	}
	const topic = "later"
	sub := subscribe(t, p, topic, "c", 20)
	var s sentAt
	s.sendDelayed(t, p, topic, time.Second, 1, "a1", "a2", "a3")
	s.sendDelayed(t, p, topic, 1200*time.Millisecond, 2, "r1", "r2", "r3")
	s.sendDelayed(t, p, topic, 50*time.Millisecond, 2, "short") // within a hop: no timer
	late := s.receiveAll(t, sub, 7, 20*time.Second)
	t.Logf("latest delivery: %v after its due time", late)
	if late > 2*time.Second {
		t.Errorf("a message was delivered %v after its due time", late)
	}
	// Six messages (nine copies) went through the timer topic, each
	// deferred there at least once: written without deferral, it arrives
	// at once, before it is due. (Ten steps each at best; nsqd scans a
	// new channel's deferred messages only after its next refresh.)
	if n := timerRequeues(t, localHTTP(nodes)); n < 9 {
		t.Errorf("%d timer steps for 9 copies, want at least one each", n)
	}
	// The standby copies of the replicated ones are not delivered.
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	if d, err := sub.Receive(ctx); err == nil {
		t.Errorf("%q delivered again (attempt %d)", d.ID, d.Attempt)
	}
}

// TestLongDelayLimits: without a timer topic a pool refuses delays over
// its hop; with one, delays over MaxLongDelay.
func TestLongDelayLimits(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	msg := []*backends.Message{{ID: "x", Body: []byte("x"), PublishTime: time.Now()}}
	off := newPool(t, ModeCluster, localNodes(nodes), nil)
	if got := off.MaxDelay(); got != DefaultTimerHop {
		t.Errorf("MaxDelay() without a timer topic = %v, want %v", got, DefaultTimerHop)
	}
	err := off.Send(context.Background(), "t", msg, backends.SendOptions{Delay: DefaultTimerHop + time.Second})
	if !errors.Is(err, ErrRejected) {
		t.Errorf("a delay over the hop without a timer topic: %v, want ErrRejected", err)
	}
	on := newPool(t, ModeCluster, localNodes(nodes), withTimer)
	err = on.Send(context.Background(), "t", msg, backends.SendOptions{Delay: MaxLongDelay + time.Second})
	if !errors.Is(err, ErrRejected) {
		t.Errorf("a delay over MaxLongDelay: %v, want ErrRejected", err)
	}
}

// TestLongDelaySurvivesRestarts: delayed messages waiting on the timer
// topic survive a graceful restart of their nsqd (which writes deferred
// messages to disk, where they lose their deferral) and the pool's
// restart, and are still not delivered early. One node, so every message
// is on the restarted one; nsqd runs as the README advises.
func TestLongDelaySurvivesRestarts(t *testing.T) {
	pr := nsqdtest.StartProcess(t, nsqdtest.Args("--mem-queue-size=0", "--sync-every=1"))
	nodes := processNodes([]*nsqdtest.Process{pr})
	tweak := func(c *Config) {
		withTimer(c)
		c.TimerHop = 200 * time.Millisecond
	}
	p1 := newPool(t, ModeCluster, nodes, tweak)
	const topic = "restart"
	createChannels(t, p1, []string{pr.HTTPAddr()}, topic, "c")
	var s sentAt
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%02d", i)
	}
	s.sendDelayed(t, p1, topic, 3*time.Second, 1, ids...)
	// Wait until every message is deferred on the timer channel.
	waitFor(t, 10*time.Second, "20 deferred timer messages", func() bool {
		for _, tp := range nsqdtest.Stats(t, pr.HTTPAddr()).Topics {
			for _, c := range tp.Channels {
				if tp.Name == DefaultTimerTopic && c.Name == TimerChannel && c.DeferredCount == len(ids) {
					return true
				}
			}
		}
		return false
	})
	p1.Close()
	pr.Term()
	pr.Restart()
	p2 := newPool(t, ModeCluster, nodes, tweak)
	sub := subscribe(t, p2, topic, "c", 50)
	late := s.receiveAll(t, sub, len(ids), 20*time.Second)
	t.Logf("latest delivery: %v after its due time", late)
}

// TestTimerEnvelope: a timer message splits into the envelope and its
// topic; anything else does not.
func TestTimerEnvelope(t *testing.T) {
	env := envelope.Append(nil, &envelope.Message{ID: "i", Body: []byte("b"), NotBefore: time.Unix(5, 0)})
	tm := envelope.AppendTimerTopic(append([]byte(nil), env...), "orders")
	got, topic, ok := envelope.SplitTimer(tm)
	if !ok || topic != "orders" || string(got) != string(env) {
		t.Fatalf("SplitTimer = %q, %q, %v", got, topic, ok)
	}
	if m, ok := envelope.Decode(tm); !ok || m.ID != "i" || !m.NotBefore.Equal(time.Unix(5, 0)) {
		t.Errorf("Decode of a timer message = %+v, %v", m, ok)
	}
	for _, b := range [][]byte{env, []byte("raw"), append(envelope.AppendTimerTopic(append([]byte(nil), env...), "a"), 0x22, 1, 'x') /* not last */} {
		if _, _, ok := envelope.SplitTimer(b); ok {
			t.Errorf("SplitTimer(%q) ok", b)
		}
	}
	if len(tm)-len(env) > envelope.MaxTimerTopicSize {
		t.Errorf("timer topic took %d bytes, more than MaxTimerTopicSize", len(tm)-len(env))
	}
}

// TestLongDelaySurvivesNodeKill: with replicas 2, messages waiting on the
// timer topic survive the SIGKILL of a node (which loses what it held
// deferred, in memory): their other copies, on the surviving node, are
// delivered, once each and not before they are due (a message whose
// first copy was on the killed node comes with its standby, after the
// standby delay).
func TestLongDelaySurvivesNodeKill(t *testing.T) {
	procs := startProcs(t, 2, nsqdtest.Args("--mem-queue-size=0", "--sync-every=1"))
	const standby = time.Second
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		withTimer(c)
		c.StandbyDelay = standby
	})
	const topic = "killed"
	httpAddrs := []string{procs[0].HTTPAddr(), procs[1].HTTPAddr()}
	createChannels(t, p, httpAddrs, topic, "c")
	var s sentAt
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = fmt.Sprintf("k%02d", i)
	}
	s.sendDelayed(t, p, topic, 2*time.Second, 2, ids...)
	// Every copy deferred on a timer channel (in nsqd's memory) before
	// the kill.
	waitFor(t, 10*time.Second, "20 deferred timer copies", func() bool {
		n := 0
		for _, h := range httpAddrs {
			for _, tp := range nsqdtest.Stats(t, h).Topics {
				for _, c := range tp.Channels {
					if tp.Name == DefaultTimerTopic && c.Name == TimerChannel {
						n += c.DeferredCount
					}
				}
			}
		}
		return n == 2*len(ids)
	})
	procs[0].Kill() // never restarted
	sub := subscribe(t, p, topic, "c", 50)
	late := s.receiveAll(t, sub, len(ids), 30*time.Second)
	t.Logf("latest delivery: %v after its due time", late)
	ctx, cancel := context.WithTimeout(context.Background(), 2*standby)
	defer cancel()
	if d, err := sub.Receive(ctx); err == nil {
		t.Errorf("%q delivered again (attempt %d)", d.ID, d.Attempt)
	}
}
