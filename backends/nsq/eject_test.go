package nsq

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// ejectObserver records NodeOut and EjectionCapped calls.
type ejectObserver struct {
	nopObserver
	mu     sync.Mutex
	out    []string // node/reason
	capped []string
}

func (o *ejectObserver) NodeOut(node, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.out = append(o.out, node+"/"+reason)
}

func (o *ejectObserver) EjectionCapped(node string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.capped = append(o.capped, node)
}

func (o *ejectObserver) snapshot() (out, capped []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.out...), append([]string(nil), o.capped...)
}

// TestEjectionCapAndReason ejects one node of two for data-path failures:
// it reports why and until when, its good pings do not bring it back
// early, and the other node, now the last usable one, is not ejected.
func TestEjectionCapAndReason(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	obs := &ejectObserver{}
	base := 1500 * time.Millisecond
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) {
		c.Eject = health.EjectConfig{Consecutive: 2, BaseEjection: base, MaxEjection: 10 * time.Second}
		c.Observer = obs
	})
	n0, n1 := p.nodes["n0"], p.nodes["n1"]
	cause := errors.New("test: publish timed out")
	p.dataFailure(n0, cause)
	if st := nodeState(p, "n0"); st.State != backends.NodeUp {
		t.Fatalf("one failure of two took n0 %v", st.State)
	}
	start := time.Now()
	p.dataFailure(n0, cause)
	ejected := time.Now()
	st := nodeState(p, "n0")
	if st.State != backends.NodeDown || st.OutReason != backends.OutDataPath || st.Ejections != 1 {
		t.Fatalf("n0 after two failures: state %v, reason %v, ejections %d; want down, data_path, 1", st.State, st.OutReason, st.Ejections)
	}
	if st.OutUntil.Before(start.Add(base)) || st.OutUntil.After(ejected.Add(base)) {
		t.Errorf("n0 out until %v after the failure began, want %v after the failure (it took %v)", st.OutUntil.Sub(start), base, ejected.Sub(start))
	}
	// n1 is the last usable node: never ejected.
	for range 3 {
		p.dataFailure(n1, cause)
	}
	if st := nodeState(p, "n1"); st.State != backends.NodeUp || st.OutReason != backends.OutNone {
		t.Errorf("last usable node: state %v, reason %v; want up, none", st.State, st.OutReason)
	}
	// Checks every 100ms pass meanwhile; n0 stays out for the whole
	// ejection, then comes back on its own. Checks passed after the
	// ejection (Rise+1 of them) must not end it; on a machine too slow to
	// run them within the ejection there is nothing to check.
	waitChecks(t, p, ejected, fastCheck.Rise+1, 10*time.Second)
	if st := nodeState(p, "n0"); st.State != backends.NodeDown && time.Now().Before(ejected.Add(base)) {
		t.Errorf("n0 back after %v of a %v ejection (passed checks must not end it)", time.Since(start), base)
	} else if !time.Now().Before(ejected.Add(base)) {
		t.Logf("%d checks took longer than the %v ejection: not checked that they leave n0 out", fastCheck.Rise+1, base)
	}
	deadline := time.Now().Add(base + 5*time.Second)
	for nodeState(p, "n0").State != backends.NodeUp {
		if time.Now().After(deadline) {
			t.Fatalf("n0 not back %v after its ejection of %v", time.Since(start), base)
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(start)
	t.Logf("n0 back after %v (ejection %v)", back.Round(time.Millisecond), base)
	if back < base-50*time.Millisecond {
		t.Errorf("n0 back after %v, before its ejection of %v ended", back, base)
	}
	out, capped := obs.snapshot()
	if len(out) != 1 || out[0] != "n0/data_path" {
		t.Errorf("NodeOut calls %v, want [n0/data_path]", out)
	}
	if len(capped) == 0 || capped[0] != "n1" {
		t.Errorf("EjectionCapped calls %v, want n1's", capped)
	}
	// On probation: the first failure ejects again, for twice as long.
	start = time.Now()
	p.dataFailure(n0, cause)
	st = nodeState(p, "n0")
	if d := st.OutUntil.Sub(start); st.OutReason != backends.OutDataPath || d < 2*base-50*time.Millisecond {
		t.Errorf("n0 on probation after one failure: reason %v, out for %v; want data_path, %v", st.OutReason, d, 2*base)
	}
}

// TestDownMovesWaitingSend freezes a node while an attempt waits on it with
// a long budget: marking the node down ends the wait at once.
func TestDownMovesWaitingSend(t *testing.T) {
	procs := startProcs(t, 2)
	p := newPool(t, ModeCluster, processNodes(procs), func(c *Config) {
		c.Check = health.Config{Interval: 5 * time.Second, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}
		c.Eject = health.EjectConfig{Consecutive: 1}
	})
	send(t, p, "move", "a", "b", "c", "d") // connect both producers
	freeze(t, procs[0])
	n0 := p.nodes["p0"]
	written := n0.mpubs.Load()
	errc := make(chan error, 1)
	go func() {
		errc <- p.attempt(context.Background(), n0, "move", [][]byte{[]byte("x")}, 0, 10*time.Second)
	}()
	// The attempt waits on the frozen node once its PUB is written.
	for deadline := time.Now().Add(10 * time.Second); n0.mpubs.Load() == written; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the attempt was not written within 10s")
		}
	}
	downAt := time.Now()
	p.dataFailure(n0, errors.New("test: another send timed out"))
	select {
	case err := <-errc:
		took := time.Since(downAt)
		t.Logf("waiting attempt ended %v after the node went down: %v", took.Round(time.Millisecond), err)
		if !errors.Is(err, errNodeDown) {
			t.Errorf("attempt: %v, want errNodeDown", err)
		}
		if retry, eject := classify(err); !retry || eject {
			t.Errorf("classify(errNodeDown) = retry %v, eject %v; want true, false", retry, eject)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the attempt still waits 5s after its node went down")
	}
}

// TestDownKeepsDeliveries takes a node out (ejected for its data path)
// while a subscriber holds one of its deliveries over a live connection:
// the delivery is not handed back, and its ack is taken.
func TestDownKeepsDeliveries(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	p := newPool(t, ModeCluster, localNodes(nodes), func(c *Config) {
		c.Eject = health.EjectConfig{Consecutive: 1, BaseEjection: 5 * time.Second}
	})
	ctx := context.Background()
	sub, err := p.Subscribe(ctx, backends.SubscribeOptions{Topic: "keep", Channel: "c", MaxInFlight: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	for range 4 {
		send(t, p, "keep", "m")
	}
	var held []*backends.Delivery
	for range 4 {
		held = append(held, receive(t, sub, 5*time.Second))
	}
	p.dataFailure(p.nodes["n0"], errors.New("test: publish timed out"))
	if st := nodeState(p, "n0"); st.State != backends.NodeDown {
		t.Fatalf("n0 %v, want down", st.State)
	}
	// Give the subscription's loop every chance to release (it would do so
	// within a kick; the housekeeping kicks once per check interval): wait
	// for 3 more checks of every node.
	waitChecks(t, p, time.Now(), 3, 10*time.Second)
	for i, d := range held {
		if err := d.Acker.Ack(); err != nil {
			t.Errorf("ack %d of a down node's live connection: %v, want nil", i, err)
		}
	}
	ctx2, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if d, err := sub.Receive(ctx2); err == nil {
		t.Errorf("delivery %q (attempt %d) came back after its ack", d.ID, d.Attempt)
	}
}

func TestLatencyWindow(t *testing.T) {
	var l latencyWindow
	lo, hi := 100*time.Millisecond, time.Second
	if got := l.timeout(lo, hi); got != hi {
		t.Errorf("no samples: %v, want %v", got, hi)
	}
	for i := range latencyMinSamples {
		l.add(time.Duration(i%10+1) * time.Millisecond) // p99 10ms
	}
	if got := l.timeout(lo, hi); got != lo {
		t.Errorf("p99 10ms: %v, want the floor %v", got, lo)
	}
	for range latencySamples {
		l.add(50 * time.Millisecond)
	}
	if got := l.timeout(lo, hi); got != 500*time.Millisecond {
		t.Errorf("p99 50ms: %v, want 500ms", got)
	}
	for range latencySamples {
		l.add(300 * time.Millisecond)
	}
	if got := l.timeout(lo, hi); got != hi {
		t.Errorf("p99 300ms: %v, want the ceiling %v", got, hi)
	}
}
