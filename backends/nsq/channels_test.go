package nsq

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// createCounter is a transport over the real one that counts the channel
// creates of one topic per nsqd, and makes the first timeouts of them wait
// for their deadline without reaching nsqd (a node too loaded to answer in
// time, which a real nsqd does not become on demand).
type createCounter struct {
	next     http.RoundTripper
	topic    string
	mu       sync.Mutex
	calls    map[string]int // per nsqd HTTP address, timed-out ones included
	timeouts int            // creates still to time out
}

func (c *createCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/channel/create" || req.URL.Query().Get("topic") != c.topic {
		return c.next.RoundTrip(req)
	}
	c.mu.Lock()
	c.calls[req.URL.Host]++
	stall := c.timeouts > 0
	if stall {
		c.timeouts--
	}
	c.mu.Unlock()
	if stall {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return c.next.RoundTrip(req)
}

func (c *createCounter) count(host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[host]
}

// newCountingPool starts n nodes with topic and a pool whose creates of
// topic's channels cc counts; the first timeouts of them time out. Checks
// are lenient (a loaded machine must not mark a node down: Subscribe's
// connect round skips it); checkTimeout bounds each create attempt.
func newCountingPool(t *testing.T, n int, topic string, timeouts int, checkTimeout time.Duration) (*Pool, []NodeConfig, *createCounter) {
	t.Helper()
	nodes := localNodes(nsqdtest.StartNodes(t, n))
	cc := &createCounter{topic: topic, calls: make(map[string]int), timeouts: timeouts}
	p := newPool(t, ModeCluster, nodes, func(c *Config) {
		c.wrapHTTP = func(rt http.RoundTripper) http.RoundTripper { cc.next = rt; return cc }
		c.Check = health.Config{Interval: time.Second, Timeout: checkTimeout, Fall: 5, Rise: 1, Jitter: -1}
	})
	for _, nc := range nodes {
		createTopic(t, nc.HTTPAddr, topic) // else nsqd answers TOPIC_NOT_FOUND, which is not remembered
	}
	return p, nodes, cc
}

// createTopic creates topic on the nsqd at httpAddr.
func createTopic(t *testing.T, httpAddr, topic string) {
	t.Helper()
	nsqdtest.Create(t, httpAddr, topic, "")
}

func subscribeN(t *testing.T, p *Pool, topic, channel string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			sub, err := p.Subscribe(ctx, backends.SubscribeOptions{Topic: topic, Channel: channel, MaxInFlight: 1, AckDeadline: 10 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			t.Cleanup(func() { _ = sub.Close() })
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestChannelCreatedOncePerNode: subscriptions of one channel, opened
// together and one after the other, make one /channel/create per node; a
// second channel makes one more. Before, every subscription made one per
// node (3,000 calls for 1,000 streams on 3 nodes).
func TestChannelCreatedOncePerNode(t *testing.T) {
	const topic = "once"
	p, nodes, cc := newCountingPool(t, 2, topic, 0, 2*time.Second) // no create times out
	subscribeN(t, p, topic, "c", 20)
	subscribeN(t, p, topic, "c", 5)
	subscribeN(t, p, topic, "d", 5)
	for _, nc := range nodes {
		// A node marked down meanwhile (a loaded machine) gets its creates
		// when it is back: wait for them, then count.
		waitFor(t, 10*time.Second, "a create per channel on "+nc.Name, func() bool { return cc.count(nc.HTTPAddr) >= 2 })
		if got := cc.count(nc.HTTPAddr); got != 2 {
			t.Errorf("node %s: %d channel creates for 30 subscriptions of 2 channels, want 2", nc.Name, got)
		}
	}
}

// TestChannelCreateRetriedOnTimeout: a create that times out is tried
// again, and the channel exists on the node when Subscribe returns. Before,
// the timeout was logged and the create dropped.
func TestChannelCreateRetriedOnTimeout(t *testing.T) {
	const topic = "retried"
	// Subscribe waits for its first connect round for DialTimeout + 500 ms
	// at most: a timeout of 300 ms leaves room for the retry.
	p, nodes, cc := newCountingPool(t, 1, topic, 1, 300*time.Millisecond)
	subscribeN(t, p, topic, "c", 1)
	if got := cc.count(nodes[0].HTTPAddr); got < 2 { // more if a real one timed out too (load)
		t.Errorf("%d channel creates, want 2 (one timed out, one retried)", got)
	}
	found := false
	for _, tp := range nsqdtest.Stats(t, nodes[0].HTTPAddr).Topics {
		for _, ch := range tp.Channels {
			found = found || (tp.Name == topic && ch.Name == "c")
		}
	}
	if !found {
		t.Error("channel c does not exist on the node after Subscribe returned")
	}
}

// waitFor polls cond every 20 ms until it holds, failing the test after
// timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
