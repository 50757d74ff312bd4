package nsq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// fastCheck is a health config for tests: detection within
// Fall×Interval+Timeout = 400ms.
var fastCheck = health.Config{Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond, Fall: 2, Rise: 2, Jitter: -1}

func localNodes(nodes []*nsqd.Node) []NodeConfig {
	out := make([]NodeConfig, len(nodes))
	for i, n := range nodes {
		out[i] = NodeConfig{Name: fmt.Sprintf("n%d", i), TCPAddr: n.TCPAddr, HTTPAddr: n.HTTPAddr}
	}
	return out
}

// newPool starts a pool over nodes laid out by mode and closes it at
// cleanup.
func newPool(t testing.TB, mode Mode, nodes []NodeConfig, tweak func(*Config)) *Pool {
	t.Helper()
	groups, err := GroupsForMode(mode, nodes)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Groups: groups, Check: fastCheck, FailbackHold: time.Second,
		Logger: nsqdtest.Logger(t, slog.LevelInfo)}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func msg(body string) *backends.Message {
	return &backends.Message{ID: body, Body: []byte(body), PublishTime: time.Now(),
		Attributes: map[string]string{"k": body}}
}

func send(t testing.TB, p *Pool, topic string, bodies ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs := make([]*backends.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = msg(b)
	}
	if err := p.Send(ctx, topic, msgs, backends.SendOptions{}); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func subscribe(t testing.TB, p *Pool, topic, channel string, maxInFlight int) backends.Subscription {
	t.Helper()
	return subscribeOpts(t, p, backends.SubscribeOptions{
		Topic: topic, Channel: channel, MaxInFlight: maxInFlight, AckDeadline: 10 * time.Second})
}

// subscribeOpts opens a subscription with opts, closed at cleanup.
func subscribeOpts(t testing.TB, p *Pool, opts backends.SubscribeOptions) backends.Subscription {
	t.Helper()
	s, err := p.Subscribe(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func receive(t testing.TB, s backends.Subscription, timeout time.Duration) *backends.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d, err := s.Receive(ctx)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return d
}

func TestSendReceiveSpread(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	s := subscribe(t, p, "t1", "c", 10)
	const n = 30
	for i := range n {
		send(t, p, "t1", fmt.Sprint(i))
	}
	got := map[string]bool{}
	for range n {
		d := receive(t, s, 5*time.Second)
		if d.Attributes["k"] != string(d.Body) || d.ID != string(d.Body) || d.Attempt != 1 {
			t.Errorf("delivery %+v", d.Message)
		}
		got[string(d.Body)] = true
		if err := d.Acker.Ack(); err != nil {
			t.Fatal(err)
		}
		if err := d.Acker.Ack(); !errors.Is(err, backends.ErrUnknownDelivery) {
			t.Errorf("second ack: got %v, want ErrUnknownDelivery", err)
		}
	}
	if len(got) != n {
		t.Errorf("got %d distinct messages, want %d", len(got), n)
	}
	for _, nd := range nodes {
		st := nsqdtest.Stats(t, nd.HTTPAddr)
		tp := st.Topic("t1")
		if tp == nil || tp.MessageCount < n/3-2 {
			t.Errorf("node %s: topic stats %+v: sends not spread", nd.Name, tp)
		}
	}
	var up int
	for _, st := range p.Nodes() {
		if st.State == backends.NodeUp && st.Active {
			up++
		}
	}
	if up != 3 {
		t.Errorf("Nodes: %+v", p.Nodes())
	}
}
