package nsq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

func processNodes(procs []*nsqdtest.Process) []NodeConfig {
	out := make([]NodeConfig, len(procs))
	for i, p := range procs {
		out[i] = NodeConfig{Name: fmt.Sprintf("p%d", i), TCPAddr: p.TCPAddr(), HTTPAddr: p.HTTPAddr()}
	}
	return out
}

func startProcs(t *testing.T, n int, opts ...nsqdtest.ProcessOption) []*nsqdtest.Process {
	t.Helper()
	procs := make([]*nsqdtest.Process, n)
	for i := range procs {
		procs[i] = nsqdtest.StartProcess(t, opts...)
	}
	return procs
}

func nodeState(p *Pool, name string) backends.NodeStatus {
	for _, st := range p.Nodes() {
		if st.Name == name {
			return st
		}
	}
	return backends.NodeStatus{}
}

// TestSendFrozenNode freezes one of three nsqd processes (SIGSTOP) and shows
// that Sends with a 2s deadline keep succeeding within 2.5s: the attempt on
// the frozen node times out after AttemptTimeout, the node is ejected and
// the Send moves on.
func TestSendFrozenNode(t *testing.T) {
	procs := startProcs(t, 3)
	// Slow active checks, so the send path, not the checker, meets the
	// frozen node first.
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		c.Check = health.Config{Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}
	})
	for i := range 6 { // connect every producer
		send(t, p, "frozen", fmt.Sprint("warm", i))
	}
	procs[1].Stop()
	t.Cleanup(procs[1].Cont)
	// kill(SIGSTOP) returns before every thread of nsqd has stopped; a
	// send in the next moment could still be answered.
	time.Sleep(50 * time.Millisecond)
	frozenAt := time.Now()
	var worst time.Duration
	for i := range 6 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		err := p.Send(ctx, "frozen", []*backends.Message{msg(fmt.Sprint("m", i))}, backends.SendOptions{})
		took := time.Since(start)
		cancel()
		worst = max(worst, took)
		t.Logf("send %d after freeze: %v in %v", i, err, took.Round(time.Millisecond))
		if err != nil {
			t.Errorf("send %d: %v", i, err)
		}
		if took > 2500*time.Millisecond {
			t.Errorf("send %d took %v, want <= 2.5s", i, took)
		}
	}
	st := nodeState(p, "p1")
	t.Logf("frozen node: state %v since %v after freeze, last error %q; slowest send %v",
		st.State, st.Since.Sub(frozenAt).Round(time.Millisecond), st.LastError, worst.Round(time.Millisecond))
	if st.State != backends.NodeDown {
		t.Errorf("frozen node state %v, want down", st.State)
	}
}

// TestProtocolErrorKeepsNodeUp sends a body larger than nsqd's maximum
// straight to the pool (the service would refuse it): the Send fails, but
// no node is marked down and the pool keeps working.
func TestProtocolErrorKeepsNodeUp(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	send(t, p, "big", "a", "b", "c") // connect
	send(t, p, "big", "d")
	before := producerConns(t, nodes[0].HTTPAddr) + producerConns(t, nodes[1].HTTPAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	big := &backends.Message{ID: "big", Body: make([]byte, 2<<20)}
	err := p.Send(ctx, "big", []*backends.Message{big}, backends.SendOptions{})
	t.Logf("2 MiB send: %v", err)
	if err == nil {
		t.Fatal("2 MiB send succeeded, want an error")
	}
	if !errors.Is(err, ErrRejected) && !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("error %v: want ErrRejected or ErrUnavailable", err)
	}
	err = p.Send(ctx, "bad$topic", []*backends.Message{msg("x")}, backends.SendOptions{})
	t.Logf("bad topic send: %v", err)
	if !errors.Is(err, ErrRejected) || !errors.Is(err, backends.ErrRejected) {
		t.Errorf("bad topic: got %v, want ErrRejected (and backends.ErrRejected)", err)
	}
	time.Sleep(3 * fastCheck.Interval)
	for _, st := range p.Nodes() {
		if st.State != backends.NodeUp {
			t.Errorf("node %s: %v (%s), want up", st.Name, st.State, st.LastError)
		}
	}
	for i := range 4 {
		send(t, p, "big", fmt.Sprint("after", i))
	}
	after := producerConns(t, nodes[0].HTTPAddr) + producerConns(t, nodes[1].HTTPAddr)
	t.Logf("producer connections before %d, after %d (nsqd closes the connection on a protocol error; the pool redials)", before, after)
	if after != before {
		t.Errorf("producer connections: %d before, %d after", before, after)
	}
}

func producerConns(t *testing.T, httpAddr string) int {
	n := 0
	for _, c := range nsqdtest.Stats(t, httpAddr).Producers {
		if strings.Contains(c.UserAgent, "go-nsq") {
			n++
		}
	}
	return n
}

// TestOnlyNodeSlowNotEjected freezes the only node of a pool for longer
// than the attempt timeout while a Send waits on it: with nowhere else to
// go, the Send waits for the node within its own deadline and succeeds once
// the node answers, and the node is not ejected over a slow moment.
func TestOnlyNodeSlowNotEjected(t *testing.T) {
	procs := startProcs(t, 1)
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		c.Check = health.Config{Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}
		c.AttemptTimeout = 300 * time.Millisecond
	})
	send(t, p, "slow", "warm")
	procs[0].Stop()
	t.Cleanup(procs[0].Cont)
	time.Sleep(50 * time.Millisecond)
	go func() {
		time.Sleep(time.Second) // > AttemptTimeout
		procs[0].Cont()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := p.Send(ctx, "slow", []*backends.Message{msg("while-frozen")}, backends.SendOptions{})
	t.Logf("send to the frozen only node: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("send: %v, want success once the node answers", err)
	}
	if st := nodeState(p, "p0"); st.State != backends.NodeUp {
		t.Errorf("only node state %v (last error %q), want up", st.State, st.LastError)
	}
}
