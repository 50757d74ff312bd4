package nsq

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// filterRecorder counts Filtered calls.
type filterRecorder struct {
	nopObserver
	n atomic.Int64
}

func (r *filterRecorder) Filtered(string, string) { r.n.Add(1) }

// TestFilter: a subscription with a filter gets only the messages it
// accepts; the others are finished on its channel (counted once each,
// their standby copies too finished), while another channel of the topic
// gets every message.
func TestFilter(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	rec := &filterRecorder{}
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) {
		c.StandbyDelay = 300 * time.Millisecond
		c.Observer = rec
	})
	const topic = "filt"
	createChannels(t, p, localHTTP(nodes), topic, "eu")
	createChannels(t, p, localHTTP(nodes), topic, "all")
	msgs := []*backends.Message{
		{ID: "a", Body: []byte("a"), Attributes: map[string]string{"region": "eu"}, PublishTime: time.Now()},
		{ID: "b", Body: []byte("b"), Attributes: map[string]string{"region": "us"}, PublishTime: time.Now()},
		{ID: "c", Body: []byte("c"), PublishTime: time.Now()},
		{ID: "d", Body: []byte("d"), Attributes: map[string]string{"region": "eu"}, PublishTime: time.Now()},
	}
	if err := p.Send(context.Background(), topic, msgs, backends.SendOptions{Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	drain := func(sub backends.Subscription, channel string) []string {
		var ids []string
		for {
			d := receiveOrEmpty(t, sub, localHTTP(nodes), topic, channel, 20*time.Second)
			if d == nil {
				slices.Sort(ids)
				return ids
			}
			ids = append(ids, d.ID)
			if err := d.Acker.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	eu := subscribeOpts(t, p, backends.SubscribeOptions{Topic: topic, Channel: "eu", MaxInFlight: 10, AckDeadline: 10 * time.Second,
		Filter: func(a map[string]string) bool { return a["region"] == "eu" }})
	if got := drain(eu, "eu"); !slices.Equal(got, []string{"a", "d"}) {
		t.Errorf("filtered channel got %v, want [a d]", got)
	}
	// Counted right after each finish: wait for the count to settle.
	for deadline := time.Now().Add(5 * time.Second); rec.n.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := rec.n.Load(); n != 2 {
		t.Errorf("Filtered %d times, want 2 (b and c, standbys not counted)", n)
	}
	all := subscribe(t, p, topic, "all", 10)
	if got := drain(all, "all"); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("unfiltered channel got %v, want all four", got)
	}
}
