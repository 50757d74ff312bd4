package nsqd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func httpDo(t *testing.T, method, url string, body []byte) string {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", method, url, resp.Status, b)
	}
	return string(b)
}

func topicDepth(t *testing.T, n *Node, topic string) int64 {
	t.Helper()
	var stats struct {
		Topics []struct {
			TopicName string `json:"topic_name"`
			Depth     int64  `json:"depth"`
		} `json:"topics"`
	}
	body := httpDo(t, http.MethodGet, "http://"+n.HTTPAddr+"/stats?format=json&topic="+topic, nil)
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatalf("stats: %v in %s", err, body)
	}
	for _, tp := range stats.Topics {
		if tp.TopicName == topic {
			return tp.Depth
		}
	}
	return -1
}

func TestStartStopRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n, err := Start(ctx, Options{DataDir: dir, MemQueueSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(n.TCPAddr, "127.0.0.1:") || strings.HasSuffix(n.TCPAddr, ":0") {
		t.Errorf("TCPAddr = %q, want a real 127.0.0.1 port", n.TCPAddr)
	}
	if n.HTTPAddr == n.TCPAddr || strings.HasSuffix(n.HTTPAddr, ":0") {
		t.Errorf("HTTPAddr = %q, want a real port", n.HTTPAddr)
	}
	if got := httpDo(t, http.MethodGet, "http://"+n.HTTPAddr+"/ping", nil); got != "OK" {
		t.Errorf("/ping = %q, want OK", got)
	}
	for range 3 {
		httpDo(t, http.MethodPost, "http://"+n.HTTPAddr+"/pub?topic=t1", []byte("hello"))
	}
	if d := topicDepth(t, n, "t1"); d != 3 {
		t.Errorf("depth before restart = %d, want 3", d)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-n.Done():
	default:
		t.Error("Done not closed after Stop")
	}

	// Same data dir: the messages are back.
	n2, err := Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() { n2.Stop() })
	if d := topicDepth(t, n2, "t1"); d != 3 {
		t.Errorf("depth after restart = %d, want 3", d)
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	n, err := Start(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	if n2, err := Start(context.Background(), Options{DataDir: dir}); err == nil {
		n2.Stop()
		t.Fatal("second node on the same data dir started, want an error")
	}
}

func TestStartRequiresDataDir(t *testing.T) {
	if _, err := Start(context.Background(), Options{}); err == nil {
		t.Fatal("Start without DataDir succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, Options{DataDir: t.TempDir()}); err != context.Canceled {
		t.Fatalf("Start with done ctx = %v, want context.Canceled", err)
	}
}

func TestStartN(t *testing.T) {
	base := t.TempDir()
	nodes, err := StartN(context.Background(), 3, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := StopAll(nodes); err != nil {
			t.Error(err)
		}
	})
	seen := map[string]bool{}
	for i, n := range nodes {
		if want := filepath.Join(base, n.Name); n.DataDir != want {
			t.Errorf("node %d DataDir = %q, want %q", i, n.DataDir, want)
		}
		for _, a := range []string{n.Name, n.TCPAddr, n.HTTPAddr} {
			if seen[a] {
				t.Errorf("node %d: %q used twice", i, a)
			}
			seen[a] = true
		}
		httpDo(t, http.MethodGet, "http://"+n.HTTPAddr+"/ping", nil)
	}
	ids := map[int64]bool{}
	for _, n := range nodes {
		ids[n.ID] = true
	}
	if len(ids) != 3 {
		t.Errorf("node ids not distinct: %v", ids)
	}
}

// recordHandler keeps records for assertions.
type recordHandler struct {
	level slog.Level
	recs  chan slog.Record
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.recs <- r:
	default:
	}
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestLogAdapter(t *testing.T) {
	h := &recordHandler{level: slog.LevelDebug, recs: make(chan slog.Record, 1000)}
	a := newSlogAdapter()
	a.set(slog.New(h), "n1")
	closed := "client(127.0.0.1:2) - failed to read command - read tcp: use of closed network connection"
	a.Output(2, "WARNING: disk slow")
	a.Output(2, "INFO: TCP: new client(127.0.0.1:1)")
	a.Output(2, "no prefix")
	a.Output(2, "ERROR: "+closed) // a fault while running
	a.stopping.Store(true)
	a.Output(2, "ERROR: "+closed) // the shutdown closing connections
	want := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelWarn, "disk slow"},
		{slog.LevelDebug, "TCP: new client(127.0.0.1:1)"},
		{slog.LevelInfo, "no prefix"},
		{slog.LevelError, closed},
		{slog.LevelDebug, closed},
	}
	for _, w := range want {
		r := <-h.recs
		if r.Level != w.level || r.Message != w.msg {
			t.Errorf("got %v %q, want %v %q", r.Level, r.Message, w.level, w.msg)
		}
	}

	// A real node at Debug logs its start.
	n, err := Start(context.Background(), Options{DataDir: t.TempDir(), Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	n.Stop()
	timeout := time.After(time.Second)
	for {
		select {
		case r := <-h.recs:
			if strings.Contains(r.Message, "nsqd v") {
				return
			}
		case <-timeout:
			t.Fatal("no nsqd version line logged")
		}
	}
}

func TestLoggerSetsLevel(t *testing.T) {
	o := nsqdOptions(Options{DataDir: "x", Logger: slog.New(&recordHandler{level: slog.LevelInfo})})
	if o.LogLevel.String() != "INFO" {
		t.Errorf("nsqd level for an Info logger = %s, want INFO", o.LogLevel.String())
	}
	o = nsqdOptions(Options{DataDir: "x", Logger: slog.New(&recordHandler{level: slog.LevelDebug - 4})})
	if o.LogLevel.String() != "DEBUG" {
		t.Errorf("nsqd level for a Debug-4 logger = %s, want DEBUG", o.LogLevel.String())
	}
}

// A channel created after nsqd started gets its deferred messages on time:
// nsqd rescans its channel list every QueueScanRefreshInterval.
func TestNewChannelDeferredOnTime(t *testing.T) {
	n, err := Start(context.Background(), Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	base := "http://" + n.HTTPAddr
	// Channel c must be created after nsqd listed its channels for a scan
	// (else the first scan finds it and the test proves nothing): a
	// deferred message on a probe channel becomes ready only in a scan of
	// a channel list that holds the probe, so once it is ready, c comes
	// after that list.
	httpDo(t, http.MethodPost, base+"/topic/create?topic=probe", nil)
	httpDo(t, http.MethodPost, base+"/channel/create?topic=probe&channel=c", nil)
	httpDo(t, http.MethodPost, base+"/pub?topic=probe&defer=1", []byte("probe"))
	for deadline := time.Now().Add(3 * DefaultQueueScanRefreshInterval); channelDepth(t, base, "probe") != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("probe's deferred message never ready: no channel scan")
		}
	}
	httpDo(t, http.MethodPost, base+"/topic/create?topic=d", nil)
	httpDo(t, http.MethodPost, base+"/channel/create?topic=d&channel=c", nil)
	start := time.Now()
	httpDo(t, http.MethodPost, base+"/pub?topic=d&defer=200", []byte("later"))
	for channelDepth(t, base, "d") != 1 {
		if time.Since(start) > DefaultQueueScanRefreshInterval+2*time.Second { // nsqd's own default, 5s, would miss it
			t.Fatalf("deferred message not ready after %v: %s", time.Since(start),
				httpDo(t, http.MethodGet, base+"/stats?format=json&topic=d", nil))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("200ms deferred message ready after %v", time.Since(start))
}

// channelDepth is the depth (ready messages) of topic's only channel on
// the nsqd at base, or -1 if it has not exactly one.
func channelDepth(t *testing.T, base, topic string) int64 {
	t.Helper()
	var stats struct {
		Topics []struct {
			Channels []struct {
				Depth int64 `json:"depth"`
			} `json:"channels"`
		} `json:"topics"`
	}
	body := httpDo(t, http.MethodGet, base+"/stats?format=json&topic="+topic, nil)
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	if len(stats.Topics) != 1 || len(stats.Topics[0].Channels) != 1 {
		return -1
	}
	return stats.Topics[0].Channels[0].Depth
}

// Stop right after Start must wait for every nsqd goroutine (run with -race:
// an Exit racing Main's start is flagged).
func TestStopRightAfterStart(t *testing.T) {
	for range 10 {
		n, err := Start(context.Background(), Options{DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}
