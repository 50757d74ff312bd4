package chaos

import (
	"fmt"
	"slices"
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
