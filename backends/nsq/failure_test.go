package nsq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// freeze freezes pr with SIGSTOP and waits until every thread of it is
// stopped (kill returns before they all are, and a thread still running
// could answer), as /proc shows; it fails the test after 10s.
func freeze(t *testing.T, pr *nsqdtest.Process) {
	t.Helper()
	pr.Stop()
	t.Cleanup(pr.Cont)
	deadline := time.Now().Add(10 * time.Second)
	for !allStopped(pr.Pid()) {
		if time.Now().After(deadline) {
			t.Fatalf("nsqd %d: not every thread stopped 10s after SIGSTOP", pr.Pid())
		}
		time.Sleep(time.Millisecond)
	}
}

// allStopped reports whether every thread of process pid is in state T
// (stopped) according to /proc/pid/task/*/stat.
func allStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if len(stats) == 0 {
		return false
	}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		// "pid (comm) S ...": the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
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
	freeze(t, procs[1])
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
	obs := &ejectObserver{}
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) { c.Observer = obs })
	send(t, p, "big", "a", "b", "c") // connect
	send(t, p, "big", "d")
	before := producerConns(t, nodes[0].HTTPAddr) + producerConns(t, nodes[1].HTTPAddr)
	// From here on every change of a node's state is seen, also one that
	// recovers before the test looks: the watch reports each change (a
	// flap a slow reader missed still arrives, coalesced, as an event),
	// and the observer is told of every ejection as it happens.
	watchFrom := time.Now()
	ev := watchEvents(t, p)

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
	// Give the active checks a chance to react too: wait until each node
	// was checked Fall+1 more times after the bad sends.
	waitChecks(t, p, time.Now(), fastCheck.Fall+1, 10*time.Second)
	for i := range 4 {
		send(t, p, "big", fmt.Sprint("after", i))
	}
	for _, st := range p.Nodes() {
		if st.State != backends.NodeUp {
			t.Errorf("node %s: %v (%s), want up", st.Name, st.State, st.LastError)
		}
	}
	if out, capped := obs.snapshot(); len(out)+len(capped) > 0 {
		t.Errorf("nodes went out %v (ejections refused: %v), want none", out, capped)
	}
	seen := map[string]bool{}
	ev.mu.Lock()
	for _, e := range ev.evs {
		first := !seen[e.Node.Name] // Watch's snapshot of the node
		seen[e.Node.Name] = true
		if e.Node.State != backends.NodeUp || !first {
			t.Errorf("node event %v after the watch began: %s %v->%v (%s)",
				e.at.Sub(watchFrom).Round(time.Millisecond), e.Node.Name, e.Previous, e.Node.State, e.Node.LastError)
		}
	}
	ev.mu.Unlock()
	after := producerConns(t, nodes[0].HTTPAddr) + producerConns(t, nodes[1].HTTPAddr)
	t.Logf("producer connections before %d, after %d (nsqd closes the connection on a protocol error; the pool redials)", before, after)
	if after != before {
		t.Errorf("producer connections: %d before, %d after", before, after)
	}
}

// waitChecks waits until every node of p finished n checks after since, as
// its status's LastCheck shows, and fails the test at timeout.
func waitChecks(t *testing.T, p *Pool, since time.Time, n int, timeout time.Duration) {
	t.Helper()
	checks := map[string]map[time.Time]bool{}
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, st := range p.Nodes() {
			if checks[st.Name] == nil {
				checks[st.Name] = map[time.Time]bool{}
			}
			if st.LastCheck.After(since) {
				checks[st.Name][st.LastCheck] = true
			}
			done = done && len(checks[st.Name]) >= n
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every node checked %d times within %v after %v", n, timeout, since)
		}
		time.Sleep(fastCheck.Interval / 10)
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
	obs := &ejectObserver{}
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		c.Check = health.Config{Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}
		c.AttemptTimeout = 300 * time.Millisecond
		c.Observer = obs
	})
	send(t, p, "slow", "warm")
	freeze(t, procs[0])
	go func() {
		// The fault: frozen for longer than AttemptTimeout. Slept, as a
		// longer freeze on a slow machine only makes the test stricter.
		time.Sleep(time.Second)
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
	// Also not ejected for a moment and back by now: the observer is told
	// of every ejection as it happens.
	if out, _ := obs.snapshot(); len(out) > 0 {
		t.Errorf("the only node went out %v, want never", out)
	}
}
