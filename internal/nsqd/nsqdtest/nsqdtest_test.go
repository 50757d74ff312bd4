package nsqdtest

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/nsqd"
)

func pub(t *testing.T, httpAddr, topic, body string) {
	t.Helper()
	resp, err := http.Post("http://"+httpAddr+"/pub?topic="+topic, "application/octet-stream", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pub: %s", resp.Status)
	}
}

func depth(t *testing.T, httpAddr, topic string) int64 {
	t.Helper()
	tp := Stats(t, httpAddr).Topic(topic)
	if tp == nil {
		return -1
	}
	return tp.Depth
}

func TestStartNodes(t *testing.T) {
	t.Parallel()
	nodes := StartNodes(t, 2)
	if len(nodes) != 2 || nodes[0].TCPAddr == nodes[1].TCPAddr {
		t.Fatalf("nodes = %+v", nodes)
	}
	pub(t, nodes[1].HTTPAddr, "a", "x")
	s := Stats(t, nodes[1].HTTPAddr)
	if s.Health != "OK" || s.Version == "" {
		t.Errorf("health %q version %q", s.Health, s.Version)
	}
	if tp := s.Topic("a"); tp == nil || tp.Depth != 1 || tp.MessageCount != 1 {
		t.Errorf("topic a = %+v, want depth 1, 1 message", tp)
	}
	if s.Topic("missing") != nil {
		t.Error("Topic(missing) != nil")
	}
}

func TestProcessLifecycle(t *testing.T) {
	t.Parallel()
	p := StartProcess(t, Args("--log-level=warn"))
	tcp, httpAddr, pid := p.TCPAddr(), p.HTTPAddr(), p.Pid()
	for range 3 {
		pub(t, httpAddr, "life", "m")
	}

	// Frozen: /ping does not answer.
	p.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if _, err := nsqd.FetchStats(ctx, httpAddr); err == nil {
		t.Error("stopped nsqd answered /stats")
	}
	cancel()
	p.Cont()
	if d := depth(t, httpAddr, "life"); d != 3 {
		t.Errorf("depth after SIGCONT = %d, want 3", d)
	}

	// SIGTERM flushes memory queues; a restart has them back on the same ports.
	p.Term()
	if p.Running() {
		t.Fatal("running after Term")
	}
	p.Restart()
	if p.TCPAddr() != tcp || p.HTTPAddr() != httpAddr {
		t.Errorf("addresses changed on restart: %s %s -> %s %s", tcp, httpAddr, p.TCPAddr(), p.HTTPAddr())
	}
	if p.Pid() == pid {
		t.Error("pid unchanged after restart")
	}
	if d := depth(t, httpAddr, "life"); d != 3 {
		t.Errorf("depth after Term+Restart = %d, want 3", d)
	}

	p.Kill()
	if p.Running() {
		t.Fatal("running after Kill")
	}
	p.Restart()
	if !p.Running() {
		t.Fatal("not running after Restart")
	}
	// Cleanup must kill a stopped process.
	p.Stop()
}

func TestProcessesInParallel(t *testing.T) {
	t.Parallel()
	a, b := StartProcess(t), StartProcess(t)
	if a.TCPAddr() == b.TCPAddr() || a.DataDir() == b.DataDir() {
		t.Fatal("two processes share an address or data dir")
	}
	a.Kill()
	pub(t, b.HTTPAddr(), "p", "x")
}
