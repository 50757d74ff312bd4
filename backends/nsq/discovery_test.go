package nsq

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nsqio/nsq/nsqlookupd"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// startLookupd runs nsqlookupd in-process on loopback ports.
func startLookupd(t *testing.T) *nsqlookupd.NSQLookupd {
	opts := nsqlookupd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.Logger = discardLogger{}
	l, err := nsqlookupd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); l.Main() }()
	t.Cleanup(func() { l.Exit(); <-done })
	return l
}

type discardLogger struct{}

func (discardLogger) Output(int, string) error { return nil }

// TestDiscovery: nodes registered with nsqlookupd join a pool configured
// with no static nodes, take sends and are consumed; a node that stops
// leaves the pool; a node that starts later joins it.
func TestDiscovery(t *testing.T) {
	l := startLookupd(t)
	lookupArg := nsqdtest.Args("--lookupd-tcp-address=" + l.RealTCPAddr().String())
	procs := startProcs(t, 2, lookupArg)
	p, err := New(Config{
		LookupdHTTPAddrs:    []string{l.RealHTTPAddr().String()},
		LookupdPollInterval: 100 * time.Millisecond,
		Check:               fastCheck,
		Logger:              nsqdtest.Logger(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	waitNodes := func(want int) time.Duration {
		t.Helper()
		start := time.Now()
		for len(p.Nodes()) != want {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("pool has nodes %+v, want %d", p.Nodes(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitNodes(2)
	const topic = "disc"
	sub := subscribe(t, p, topic, "c", 10)
	for i := range 6 {
		send(t, p, topic, fmt.Sprint("a", i))
	}
	for range 6 {
		receive(t, sub, 5*time.Second).Acker.Ack()
	}

	third := nsqdtest.StartProcess(t, lookupArg)
	joined := waitNodes(3)
	ev := watchEvents(t, p)
	deadline := time.Now().Add(3 * time.Second)
	for topicCount(third.HTTPAddr(), topic) <= 0 && time.Now().Before(deadline) {
		send(t, p, topic, "to-third")
		receive(t, sub, 5*time.Second).Acker.Ack()
	}
	if n := topicCount(third.HTTPAddr(), topic); n <= 0 {
		t.Errorf("discovered node took %d sends", n)
	}

	procs[0].Term() // nsqd deregisters from nsqlookupd on exit
	left := waitNodes(2)
	t.Logf("discovery: a new node joined in %v, a stopped node left in %v (poll interval 100ms)", joined.Round(time.Millisecond), left.Round(time.Millisecond))
	for i := range 6 {
		send(t, p, topic, fmt.Sprint("b", i))
		receive(t, sub, 5*time.Second).Acker.Ack()
	}
	ev.wait(t, time.Time{}, time.Second, "left event", func(e backends.NodeEvent) bool {
		return e.Node.TCPAddr == procs[0].TCPAddr() && e.Node.LastError == "left the pool"
	})
}
