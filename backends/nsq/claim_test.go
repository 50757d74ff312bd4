package nsq

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/envelope"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestHoldRanking: of two instances' holds of one message the earlier
// claim stays whatever order they arrive in, an instance moves only its
// own hold, and a hold's end by the instance that lost does not end the
// winner's.
func TestHoldRanking(t *testing.T) {
	now := time.Unix(1000, 0)
	until := now.Add(time.Minute)
	early, late := now.Add(-2*time.Second), now.Add(-time.Second)
	for _, order := range []string{"early first", "late first"} {
		t.Run(order, func(t *testing.T) {
			a := newAckedIDs(time.Minute, 100)
			holds := []struct {
				by    string
				since time.Time
			}{{"A", early}, {"B", late}}
			if order == "late first" {
				holds[0], holds[1] = holds[1], holds[0]
			}
			for _, h := range holds {
				a.hold("t", "c", h.by, []envelope.Hold{{ID: "m", Until: until, Since: h.since}}, now)
			}
			if _, won, _ := a.owns("t", "c", "m", "A", now); !won {
				t.Error("A's earlier claim lost")
			}
			if _, won, u := a.owns("t", "c", "m", "B", now); won || !u.Equal(until) {
				t.Errorf("B's later claim: won %v, until %v; want lost to A's until %v", won, u, until)
			}
			// B gives way and ends its hold: A's stays.
			a.hold("t", "c", "B", []envelope.Hold{{ID: "m", Until: now}}, now)
			if _, h := a.state("t", "c", "m", now); !h.Equal(until) {
				t.Errorf("held until %v after B's end, want A's %v", h, until)
			}
			// A extends its own hold; then ends it.
			a.hold("t", "c", "A", []envelope.Hold{{ID: "m", Until: until.Add(time.Minute), Since: early}}, now)
			if _, h := a.state("t", "c", "m", now); !h.Equal(until.Add(time.Minute)) {
				t.Errorf("held until %v after A's extension", h)
			}
			a.hold("t", "c", "A", []envelope.Hold{{ID: "m", Until: now}}, now)
			if _, h := a.state("t", "c", "m", now); !h.IsZero() {
				t.Errorf("still held until %v after A ended its hold", h)
			}
		})
	}
	// The same since: the smaller instance id ranks first, in either order.
	a := newAckedIDs(time.Minute, 100)
	a.hold("t", "c", "B", []envelope.Hold{{ID: "m", Until: until, Since: early}}, now)
	a.hold("t", "c", "A", []envelope.Hold{{ID: "m", Until: until, Since: early}}, now)
	if _, won, _ := a.owns("t", "c", "m", "A", now); !won {
		t.Error("tie: A did not rank first")
	}
}

// TestBacklogDrainedByTwoInstances: a backlog of replicated messages whose
// standbys are due (both copies live) drained by two qgate instances at
// once, one subscription each, sharing the ack topic. Each copy that
// arrives claims its message and waits the settle time; of two copies
// taken at the same moment by the two instances, the earlier claim
// delivers and the other gives way: each message is delivered once, none
// lost. The control (no settle wait) shows how many the race delivers
// twice.
func TestBacklogDrainedByTwoInstances(t *testing.T) {
	for _, settle := range []time.Duration{500 * time.Millisecond, -1} {
		name := map[bool]string{true: "settle", false: "control, no settle"}[settle > 0]
		t.Run(name, func(t *testing.T) {
			nodes := nsqdtest.StartNodes(t, 2)
			const standby = 4 * time.Second // settle at most standby/8
			tweak := func(c *Config) {
				c.StandbyDelay, c.ClaimSettle, c.AckTopic = standby, settle, DefaultAckTopic
			}
			a := newPool(t, ModeCluster, localNodes(nodes), tweak)
			b := newPool(t, ModeCluster, localNodes(nodes), tweak)
			waitAckReaders(t, nodes, a.cfg.InstanceID)
			waitAckReaders(t, nodes, b.cfg.InstanceID)
			const topic, n = "backlog2", 200
			createChannels(t, a, localHTTP(nodes), topic, "c")
			for i := range n {
				if err := sendReplicas(context.Background(), a, topic, 2, fmt.Sprint("m", i)); err != nil {
					t.Fatal(err)
				}
			}
			// Every standby due: both copies of each message live. Each
			// instance hears the other's heartbeats meanwhile.
			time.Sleep(standby)
			opts := backends.SubscribeOptions{Topic: topic, Channel: "c", MaxInFlight: 20, AckDeadline: 2 * time.Second}
			dups := drainAcking(t, localHTTP(nodes), topic, n, 60*time.Second, subscribeOpts(t, a, opts), subscribeOpts(t, b, opts))
			if settle < 0 {
				t.Logf("control: %d of %d messages delivered twice without the settle wait", dups, n)
				return
			}
			if dups > 0 {
				t.Errorf("%d of %d messages delivered more than once", dups, n)
			}
		})
	}
}
