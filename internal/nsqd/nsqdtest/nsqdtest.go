// Package nsqdtest is package nsqd for tests: in-process nodes for fast
// tests, nsqd as a separate OS process for tests that must kill, freeze or
// restart a node, and nsqd's /stats for assertions on depths, in-flight
// counts and connections. It is the only nsqd package that imports
// "testing"; the serving binary does not link it.
//
// Every helper takes a testing.TB, fails the test on error and registers a
// t.Cleanup that stops what it started. Call them from the test goroutine.
package nsqdtest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/qgate/qgate/internal/nsqd"
)

// StartNodes starts n in-process nsqd nodes on loopback ports, with data in
// a temporary directory and nsqd's warnings and errors logged to t.Log. They
// are stopped at cleanup.
func StartNodes(t testing.TB, n int) []*nsqd.Node {
	t.Helper()
	nodes := make([]*nsqd.Node, n)
	for i := range n {
		nodes[i] = StartNode(t, nsqd.Options{})
	}
	return nodes
}

// StartNode starts one in-process nsqd with opts. DataDir defaults to a
// temporary directory and Logger to t.Log at level Warn. It is stopped at
// cleanup.
func StartNode(t testing.TB, opts nsqd.Options) *nsqd.Node {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = Logger(t, slog.LevelWarn)
	}
	n, err := nsqd.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("nsqdtest: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("nsqdtest: stop %s: %v", n.Name, err)
		}
	})
	return n
}

// Logger returns a logger that writes records at level and above to t.Log,
// and drops them once the test has finished (t.Log would panic).
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(LogWriter(t), &slog.HandlerOptions{Level: level}))
}

// LogWriter returns a writer that sends each write to t.Log (without its
// trailing newline), for a logger or a command's output, and drops writes
// once the test has finished (t.Log would panic). Safe for concurrent use.
func LogWriter(t testing.TB) io.Writer {
	w := &tbWriter{t: t}
	t.Cleanup(w.close)
	return w
}

// tbWriter writes lines to t.Log until closed.
type tbWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tbWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
