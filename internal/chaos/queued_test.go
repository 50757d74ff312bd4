package chaos

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends/nsq/envelope"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestQueuedIDs checks that after a clean stop the run's messages are read
// back from a real nsqd's data directory wherever nsqd held them: still in
// the topic queue (no channel yet), in the channel's queue, and in flight
// to a consumer that never answered (nsqd writes those to disk as it
// exits); and that another topic's messages are not counted.
func TestQueuedIDs(t *testing.T) {
	dir := t.TempDir()
	node := nsqdtest.StartNode(t, nsqd.Options{DataDir: dir})
	prod, err := gonsq.NewProducer(node.TCPAddr, gonsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Stop()
	pub := func(topic, id string) {
		t.Helper()
		b := envelope.Append(nil, &envelope.Message{ID: fmt.Sprintf("%032x", len(id)), Body: []byte(id), PublishTime: time.Now()})
		if err := prod.Publish(topic, b); err != nil {
			t.Fatal(err)
		}
	}
	pub("chaos", "before-channel") // stays in the topic queue until a channel exists
	// A consumer that takes one message and never answers: it is in flight
	// when nsqd stops.
	cfg := gonsq.NewConfig()
	cfg.MaxInFlight = 1
	cons, err := gonsq.NewConsumer("chaos", "chaos", cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	cons.AddHandler(gonsq.HandlerFunc(func(m *gonsq.Message) error {
		m.DisableAutoResponse()
		e, _ := envelope.Decode(m.Body)
		got <- string(e.Body)
		return nil
	}))
	cons.SetLogger(nil, gonsq.LogLevelError)
	if err := cons.ConnectToNSQD(node.TCPAddr); err != nil {
		t.Fatal(err)
	}
	defer cons.Stop()
	var inFlight string
	select {
	case inFlight = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no message reached the consumer")
	}
	for i := range 3 {
		pub("chaos", fmt.Sprintf("queued-%d", i))
	}
	pub("other", "other-topic")
	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}

	ids, err := queuedIDs(dir, "chaos")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	want := []string{"before-channel", "queued-0", "queued-1", "queued-2"}
	if !slices.Equal(ids, want) {
		t.Fatalf("queued ids = %v, want %v (in flight at the stop: %s)", ids, want, inFlight)
	}
}

// TestAddQueued: after a drain that ran out of time, acked messages a node
// still holds are re-counted from lost to "still queued", and only those;
// after a drain that gave up because deliveries stopped they stay lost;
// and with nothing left on the nodes nothing is re-counted. Two real nsqd
// processes: n2 holds two of the three undelivered messages, n1 another
// message the ledger does not miss.
func TestAddQueued(t *testing.T) {
	bin := nsqdtest.NSQDBinary(t)
	undelivered := []string{"q1", "q2", "gone"}
	cases := []struct {
		name      string
		publish   bool // q1, q2 on n2, "other" on n1
		stuck     bool
		wantLost  float64
		wantQueue float64 // -1: no "still queued" metric
	}{
		{"time limit", true, false, 1, 2},
		{"deliveries stopped", true, true, 3, 2},
		{"nodes empty", false, false, 3, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, err := startCluster(t.Context(), bin, t.TempDir(), 2, nil, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.close() })
			if c.publish {
				publish(t, cl.procs[1].TCPAddr(), "chaos", "q1", "q2")
				publish(t, cl.procs[0].TCPAddr(), "chaos", "other")
			}
			h := &Harness{cluster: cl, topic: "chaos", drainStuck: c.stuck}
			r := &Report{}
			r.AddText("lost", float64(len(undelivered)), "", "before")
			h.addQueued(t.Context(), r, Result{Lost: undelivered})

			got := map[string]Metric{}
			for _, m := range r.Metrics {
				got[m.Name] = m
			}
			if v := got["lost"].Value; v != c.wantLost {
				t.Errorf("lost = %v (%s), want %v", v, got["lost"].Text, c.wantLost)
			}
			q, ok := got["undelivered, still queued"]
			switch {
			case c.wantQueue < 0 && ok:
				t.Errorf("still queued reported with empty nodes: %s", q.Text)
			case c.wantQueue >= 0 && (!ok || q.Value != c.wantQueue):
				t.Errorf("still queued = %v (%s), want %v", q.Value, q.Text, c.wantQueue)
			case c.wantQueue > 0 && (!strings.Contains(q.Text, "n2 2") || strings.Contains(q.Text, "n1 ")):
				t.Errorf("still queued text %q: want n2 2 and no n1", q.Text)
			}
		})
	}
}

// publish sends ledger ids as envelope bodies to topic on one nsqd.
func publish(t *testing.T, addr, topic string, ids ...string) {
	t.Helper()
	prod, err := gonsq.NewProducer(addr, gonsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Stop()
	prod.SetLogger(nil, gonsq.LogLevelError)
	for i, id := range ids {
		b := envelope.Append(nil, &envelope.Message{ID: fmt.Sprintf("%032x", i), Body: []byte(id), PublishTime: time.Now()})
		if err := prod.Publish(topic, b); err != nil {
			t.Fatal(err)
		}
	}
}
