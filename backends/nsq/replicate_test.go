package nsq

import (
	"context"
	"errors"
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

func sendReplicas(ctx context.Context, p *Pool, topic string, replicas int, ids ...string) error {
	msgs := make([]*backends.Message, len(ids))
	for i, id := range ids {
		msgs[i] = &backends.Message{ID: id, Body: []byte(id), PublishTime: time.Now(), Attributes: map[string]string{"k": id}}
	}
	return p.Send(ctx, topic, msgs, backends.SendOptions{Replicas: replicas})
}

// rawIDs drains topic/channel on nsqd nd with a plain go-nsq consumer
// until want messages arrived and the channel holds nothing more (none
// queued, in flight or deferred: every message it had was handed to the
// handler and finished), and returns their qgate ids.
func rawIDs(t *testing.T, nd *nsqd.Node, topic, channel string, want int) []string {
	t.Helper()
	c, err := gonsq.NewConsumer(topic, channel, gonsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	c.SetLoggerLevel(gonsq.LogLevelError)
	var mu sync.Mutex
	var ids []string
	c.AddHandler(gonsq.HandlerFunc(func(m *gonsq.Message) error {
		e, ok := envelope.Decode(m.Body)
		if !ok {
			t.Errorf("raw body without envelope: %q", m.Body)
		}
		if e.Replicas != 2 {
			t.Errorf("copy of %s: envelope replicas %d, want 2", e.ID, e.Replicas)
		}
		mu.Lock()
		ids = append(ids, e.ID)
		mu.Unlock()
		return nil
	}))
	if err := c.ConnectToNSQD(nd.TCPAddr); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Stop(); <-c.StopChan }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		if n >= want && channelSettled(t, nd.HTTPAddr, topic, channel) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s/%s on %s: %d of %d messages, or some not finished, after 10s", topic, channel, nd.Name, n, want)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), ids...)
}

// TestReplicasTwo: with replicas 2 over three nodes every message is on
// exactly two nodes, and a subscriber gets it once, without the marker.
func TestReplicasTwo(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.StandbyDelay = 300 * time.Millisecond })
	const topic, n = "repl", 60
	for _, nd := range nodes { // the raw channel keeps every copy for inspection
		nsqdtest.Create(t, nd.HTTPAddr, topic, "raw")
	}
	sub := subscribe(t, p, topic, "c", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		if err := sendReplicas(ctx, p, topic, 2, fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	copies := map[string]int{}
	total := 0
	for _, nd := range nodes {
		tp := nsqdtest.Stats(t, nd.HTTPAddr).Topic(topic)
		if tp == nil {
			t.Fatalf("node %s has no topic %s", nd.Name, topic)
		}
		ids := rawIDs(t, nd, topic, "raw", int(tp.MessageCount))
		t.Logf("node %s: %d messages (/stats message_count %d)", nd.Name, len(ids), tp.MessageCount)
		onNode := map[string]bool{}
		for _, id := range ids {
			if onNode[id] {
				t.Errorf("node %s holds %s twice", nd.Name, id)
			}
			onNode[id] = true
			copies[id]++
		}
		total += len(ids)
	}
	for i := range n {
		if id := fmt.Sprint("m", i); copies[id] != 2 {
			t.Errorf("%s: %d copies, want 2", id, copies[id])
		}
	}
	if total != 2*n {
		t.Errorf("%d copies in all, want %d", total, 2*n)
	}
	got := map[string]int{}
	for range n {
		d := receive(t, sub, 5*time.Second)
		got[d.ID]++
		if len(d.Attributes) != 1 || d.Attributes["k"] != d.ID {
			t.Errorf("delivery attributes %v", d.Attributes)
		}
		if err := d.Acker.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	// Every standby copy surfaces after its delay and is finished, not
	// delivered: wait until channel c is empty everywhere (no copy queued,
	// in flight or deferred), then nothing may be ready.
	waitChannelEmpty(t, localHTTP(nodes), topic, "c", n, 20*time.Second)
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if d, err := sub.Receive(done); err == nil {
		t.Errorf("second copy delivered: %s (attempt %d)", d.ID, d.Attempt)
	}
	for id, c := range got {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
	if len(got) != n {
		t.Errorf("%d distinct messages delivered, want %d", len(got), n)
	}
	// Every copy was finished: nothing waits on channel c anywhere.
	for _, nd := range nodes {
		if ch := nsqdtest.Stats(t, nd.HTTPAddr).Topic(topic).Channel("c"); ch.Depth != 0 || ch.InFlightCount != 0 {
			t.Errorf("node %s channel c: depth %d, in flight %d", nd.Name, ch.Depth, ch.InFlightCount)
		}
	}
}

// TestReplicasMoreThanNodes: with fewer usable nodes than replicas, a
// send is ErrUnavailable, writing nothing (by default: every copy is
// required); with MinReplicas 1 it writes one copy per usable node.
func TestReplicasMoreThanNodes(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	strict := newPool(t, ModeCluster, localNodes(nodes), nil)
	err := sendReplicas(context.Background(), strict, "many", 3, "x")
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("replicas 3, min 3, over 2 nodes: got %v, want ErrUnavailable", err)
	}
	t.Log(err)
	for _, nd := range nodes {
		if tp := nsqdtest.Stats(t, nd.HTTPAddr).Topic("many"); tp != nil && tp.MessageCount != 0 {
			t.Errorf("node %s: %d messages written", nd.Name, tp.MessageCount)
		}
	}
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.MinReplicas = 1 })
	if err := sendReplicas(context.Background(), p, "many", 3, "y"); err != nil {
		t.Fatalf("replicas 3 over 2 nodes, min 1: %v", err)
	}
	for _, nd := range nodes {
		if tp := nsqdtest.Stats(t, nd.HTTPAddr).Topic("many"); tp == nil || tp.MessageCount != 1 {
			t.Errorf("node %s: topic %+v, want 1 message (one copy per node)", nd.Name, tp)
		}
	}
	// Draining one of two nodes leaves one node: one copy, not replicated.
	if _, err := p.SetDraining("n0", true); err != nil {
		t.Fatal(err)
	}
	if err := sendReplicas(context.Background(), p, "many", 2, "z"); err != nil {
		t.Errorf("replicas 2 with one usable node, min 1: %v", err)
	}
	if tp := nsqdtest.Stats(t, nodes[1].HTTPAddr).Topic("many"); tp == nil || tp.MessageCount != 2 {
		t.Errorf("node %s: topic %+v, want 2 messages", nodes[1].Name, tp)
	}
}

// TestReplicasSurviveKill: replicas 2 over three durable nsqd processes
// (--mem-queue-size=0 --sync-every=1) under load with a subscriber; SIGKILL
// one node and never restart it: every acknowledged message is delivered,
// including those the killed node held or had in flight to the subscriber,
// and no client sees an error (a copy bound for the killed node moves to
// the third group).
func TestReplicasSurviveKill(t *testing.T) {
	procs := startProcs(t, 3, nsqdtest.Args("--mem-queue-size=0", "--sync-every=1"))
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		c.StandbyDelay = time.Second
		// A killed node refuses connections: it is found at once whatever
		// the timeout. A generous one keeps the survivors, fsyncing every
		// message on a loaded test machine, from being taken for dead
		// (the suite under load 37 saw "0 nodes usable").
		c.Check.Timeout, c.Check.Fall = 2*time.Second, 3
	})
	const topic = "replkill"
	sub := subscribe(t, p, topic, "c", 50)
	c, _ := consumeAll(t, sub)
	l := startLoadOpts(t, p, topic, 4, 2*time.Millisecond, backends.SendOptions{Replicas: 2})
	for i, pr := range procs { // every node holds copies when one is killed
		waitTopicCount(t, pr.HTTPAddr(), topic, 0, 100, fmt.Sprintf("p%d before the kill", i))
	}
	procs[1].Kill()
	// The load goes on on the survivors, both copies of each message there.
	for _, i := range []int{0, 2} {
		pr := procs[i]
		waitTopicCount(t, pr.HTTPAddr(), topic, topicCount(pr.HTTPAddr(), topic), 100, fmt.Sprintf("p%d after the kill", i))
	}
	l.halt()
	acked, _ := l.result()
	checkNoErrors(t, l)
	if !waitAllDelivered(t, c, acked, 15*time.Second) {
		return
	}
	c.mu.Lock()
	dups := 0
	for _, n := range c.seen {
		if n > 1 {
			dups++
		}
	}
	c.mu.Unlock()
	t.Logf("replicas 2, one of three nodes killed for good: %d acknowledged, all delivered, %d delivered more than once", len(acked), dups)
}

// channelSettled reports whether topic/channel on the nsqd at httpAddr
// holds no message: none queued, in flight or deferred.
func channelSettled(t *testing.T, httpAddr, topic, channel string) bool {
	tp := nsqdtest.Stats(t, httpAddr).Topic(topic)
	if tp == nil {
		return false
	}
	ch := tp.Channel(channel)
	return ch != nil && ch.Depth == 0 && ch.InFlightCount == 0 && ch.DeferredCount == 0
}

// waitChannelEmpty waits until topic/channel holds nothing on any node
// (queued, in flight or deferred) after at least minCount messages reached
// it in all, and fails the test at timeout.
func waitChannelEmpty(t *testing.T, httpAddrs []string, topic, channel string, minCount int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		busy, count := 0, 0
		for _, addr := range httpAddrs {
			tp := nsqdtest.Stats(t, addr).Topic(topic)
			if tp == nil {
				continue
			}
			if ch := tp.Channel(channel); ch != nil {
				busy += int(ch.Depth) + ch.InFlightCount + ch.DeferredCount
				count += int(ch.MessageCount)
			}
		}
		if busy == 0 && count >= minCount {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s/%s: %d messages still queued, in flight or deferred, %d arrived, after %v", topic, channel, busy, count, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func localHTTP(nodes []*nsqd.Node) []string {
	out := make([]string, len(nodes))
	for i, nd := range nodes {
		out[i] = nd.HTTPAddr
	}
	return out
}

// TestReplicasPanicMode: one node out only for data-path failures (its
// checks pass) and another dead leave one usable node: a replicated send
// still gets its two copies, taking the ejected node (Envoy's panic mode),
// rather than failing every replicated send until the ejection ends.
func TestReplicasPanicMode(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	if _, ok := p.nodes["n0"].mon.Eject(errors.New("test: slow")); !ok {
		t.Fatal("n0 not ejected")
	}
	if err := nodes[1].Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n0, n1 backends.NodeStatus
		for _, st := range p.Nodes() {
			switch st.Name {
			case "n0":
				n0 = st
			case "n1":
				n1 = st
			}
		}
		if n0.State == backends.NodeDown && n0.OutReason == backends.OutDataPath && n1.State == backends.NodeDown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n0 %v (%v), n1 %v: want both down, n0 for the data path", n0.State, n0.OutReason, n1.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := sendReplicas(context.Background(), p, "panic", 2, "x"); err != nil {
		t.Fatalf("replicated send with one usable node and one ejected by the data path: %v", err)
	}
	for _, i := range []int{0, 2} {
		if tp := nsqdtest.Stats(t, nodes[i].HTTPAddr).Topic("panic"); tp == nil || tp.MessageCount != 1 {
			t.Errorf("node n%d: topic %+v, want one copy", i, tp)
		}
	}
}
