package discovery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nsqio "github.com/nsqio/nsq/nsqd"
	"github.com/nsqio/nsq/nsqlookupd"

	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// startLookupd starts an in-process nsqlookupd on loopback ports; it exits
// at cleanup.
func startLookupd(t *testing.T) *nsqlookupd.NSQLookupd {
	t.Helper()
	opts := nsqlookupd.NewOptions()
	opts.TCPAddress = "127.0.0.1:0"
	opts.HTTPAddress = "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.Logger = tbLogger{t}
	opts.LogLevel = nsqlookupd.LOG_WARN
	l, err := nsqlookupd.New(opts)
	if err != nil {
		t.Fatalf("nsqlookupd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.Main(); err != nil {
			t.Errorf("nsqlookupd main: %v", err)
		}
	}()
	// Wait until it answers, so Exit never races with Main's start.
	url := "http://" + l.RealHTTPAddr().String() + "/ping"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nsqlookupd does not answer: %v", err)
		}
	}
	t.Cleanup(func() { l.Exit(); <-done })
	return l
}

type tbLogger struct{ t testing.TB }

func (l tbLogger) Output(_ int, s string) error { l.t.Log(s); return nil }

// startRegistered starts an in-process nsqd that registers with lookupd.
func startRegistered(t *testing.T, l *nsqlookupd.NSQLookupd) *nsqd.Node {
	t.Helper()
	return nsqdtest.StartNode(t, nsqd.Options{Tune: func(o *nsqio.Options) {
		o.NSQLookupdTCPAddresses = []string{l.RealTCPAddr().String()}
		o.BroadcastAddress = "127.0.0.1"
	}})
}

// reports collects Run's calls.
type reports struct {
	mu    sync.Mutex
	calls [][]Node
}

func (r *reports) add(nodes []Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, nodes)
}

func (r *reports) last() ([]Node, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return nil, 0
	}
	return r.calls[len(r.calls)-1], len(r.calls)
}

func tcpAddrs(nodes []Node) []string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.TCPAddr)
	}
	return s
}

// countingTransport counts the requests it carries.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(req)
}

// waitFor waits until the last report has exactly the TCP addresses want.
func waitFor(t *testing.T, r *reports, d time.Duration, want ...string) []Node {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(d)
	for {
		nodes, _ := r.last()
		if got := tcpAddrs(nodes); slices.Equal(got, want) {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("last report %v, want %v", tcpAddrs(nodes), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunFollowsLookupd(t *testing.T) {
	l := startLookupd(t)
	a := startRegistered(t, l)
	// b is a process: in-process nsqd v1.3.0 does not close its nsqlookupd
	// connection on Exit, so lookupd would list it until its inactive
	// timeout; a killed process's connection closes at once.
	b := nsqdtest.StartProcess(t, nsqdtest.Args(
		"--lookupd-tcp-address="+l.RealTCPAddr().String(),
		"--broadcast-address=127.0.0.1"))

	polls := &countingTransport{}
	p, err := New([]string{l.RealHTTPAddr().String()}, 50*time.Millisecond,
		&http.Client{Transport: polls, Timeout: time.Second}, nsqdtest.Logger(t, -4))
	if err != nil {
		t.Fatal(err)
	}
	var r reports
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, r.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})

	start := time.Now()
	nodes := waitFor(t, &r, 5*time.Second, a.TCPAddr, b.TCPAddr())
	t.Logf("both nodes reported after %v", time.Since(start))
	for _, n := range nodes {
		want := a.HTTPAddr
		if n.TCPAddr == b.TCPAddr() {
			want = b.HTTPAddr()
		}
		if n.HTTPAddr != want || n.Version == "" {
			t.Errorf("node %+v: want HTTPAddr %s and a version", n, want)
		}
	}
	_, calls := r.last()

	// nsqlookupd forgets a node when its connection closes.
	start = time.Now()
	b.Kill()
	waitFor(t, &r, 5*time.Second, a.TCPAddr)
	t.Logf("stopped node gone after %v", time.Since(start))

	// An unchanged set is not reported again: polls go on (a poll ends
	// before the next begins, so once 4 more began, 3 more ended and would
	// have reported), and the reports do not.
	_, calls2 := r.last()
	polled := polls.n.Load()
	for deadline := time.Now().Add(10 * time.Second); polls.n.Load() < polled+4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d polls in 10s, want 4", polls.n.Load()-polled)
		}
	}
	if _, calls3 := r.last(); calls3 != calls2 || calls2 != calls+1 {
		t.Errorf("reports: %d with both nodes, %d after the stop, %d later; want n, n+1, n+1", calls, calls2, calls3)
	}
}

func TestPollKeepsNodesOfUnreachableLookupd(t *testing.T) {
	l1 := startLookupd(t)
	l2 := startLookupd(t)
	a := startRegistered(t, l1)
	b := startRegistered(t, l2)
	// Without keep-alive, a lookupd that exited refuses connections at once
	// (an open keep-alive connection would still reach its HTTP server).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	p, err := New([]string{"http://" + l1.RealHTTPAddr().String(), l2.RealHTTPAddr().String()}, time.Second, client, nsqdtest.Logger(t, -4))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{a.TCPAddr, b.TCPAddr}
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		nodes, err := p.Poll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(tcpAddrs(nodes), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("poll %v, want %v", tcpAddrs(nodes), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The second lookupd goes away: its nodes stay known.
	l2.Exit()
	if _, err := p.fetch(context.Background(), "http://"+l2.RealHTTPAddr().String()); err == nil {
		t.Fatal("the exited lookupd still answers")
	}
	nodes, err := p.Poll(context.Background())
	if err != nil {
		t.Fatalf("poll with one lookupd down: %v", err)
	}
	if got := tcpAddrs(nodes); !slices.Equal(got, want) {
		t.Errorf("poll with one lookupd down: %v, want %v", got, want)
	}
}

func TestPollErrors(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	t.Cleanup(bad.Close)
	p, err := New([]string{bad.URL}, time.Second, nil, nsqdtest.Logger(t, -4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Poll(context.Background()); err == nil {
		t.Error("poll of a failing lookupd that never answered: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Poll(ctx); err != context.Canceled {
		t.Errorf("poll with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, addrs := range [][]string{nil, {"ftp://x:1"}, {"nohost"}, {"http://x"}} {
		if _, err := New(addrs, 0, nil, nil); err == nil {
			t.Errorf("New(%q): no error", addrs)
		}
	}
	if _, err := New([]string{"x:1"}, -time.Second, nil, nil); err == nil {
		t.Error("negative interval: no error")
	}
	p, err := New([]string{"127.0.0.1:4161", "http://127.0.0.1:4161"}, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.addrs) != 1 || p.interval != DefaultInterval {
		t.Errorf("addrs %v interval %v", p.addrs, p.interval)
	}
}
