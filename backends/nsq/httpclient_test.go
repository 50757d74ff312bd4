package nsq

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestPoolHTTPClientOwnTransport: the pool's calls to nsqd's HTTP API use a
// transport of its own, without proxy, and closing the pool leaves the
// idle connections of http.DefaultTransport (other code in the process)
// alone. With http.DefaultTransport, Close closed them all.
func TestPoolHTTPClientOwnTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	get := func() (reused bool) {
		t.Helper()
		var info httptraceInfo
		req, err := http.NewRequestWithContext(info.ctx(context.Background()), http.MethodGet, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = resp.Body.Read(make([]byte, 16))
		resp.Body.Close()
		return info.reused
	}
	get() // leaves an idle keep-alive connection in http.DefaultTransport

	nodes := nsqdtest.StartNodes(t, 1)
	p := newPool(t, ModeCluster, localNodes(nodes), nil)
	tr, ok := p.http.Transport.(*http.Transport)
	if !ok || tr == http.DefaultTransport {
		t.Fatalf("pool's HTTP transport is %T %p, want an *http.Transport of its own", p.http.Transport, p.http.Transport)
	}
	if tr.Proxy != nil {
		t.Error("pool's HTTP transport has a Proxy func; nsqd must be dialled directly")
	}
	send(t, p, "own", "m") // nsqd creates a channel only on an existing topic
	if err := p.createChannel(context.Background(), nodes[0].HTTPAddr, "own", "c"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !get() {
		t.Error("closing the pool closed http.DefaultTransport's idle connection")
	}
}

// TestChannelCreateFailureWarns: a channel that cannot be created on a node
// is logged at Warn with the node, topic, channel and error. The fault is
// injected by a proxy in front of a real nsqd's HTTP port that refuses
// /channel/create and passes everything else (health checks) through.
func TestChannelCreateFailureWarns(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 1)
	target, err := url.Parse("http://" + nodes[0].HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/channel/create" {
			http.Error(w, "injected", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	rec := newWarnRecorder()
	cfgs := localNodes(nodes)
	cfgs[0].HTTPAddr = strings.TrimPrefix(front.URL, "http://")
	p := newPool(t, ModeCluster, cfgs, func(c *Config) {
		c.Logger = slog.New(rec)
	})
	sub, err := p.Subscribe(context.Background(), backends.SubscribeOptions{
		Topic: "warned", Channel: "c", MaxInFlight: 1, AckDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if attrs, ok := rec.find("nsq channel create failed"); ok {
			for k, want := range map[string]string{"node": "n0", "topic": "warned", "channel": "c"} {
				if attrs[k] != want {
					t.Errorf("attr %s = %q, want %q (all: %v)", k, attrs[k], want, attrs)
				}
			}
			if !strings.Contains(attrs["err"], "500") {
				t.Errorf("attr err = %q, want the HTTP status", attrs["err"])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no Warn record for the failed channel create within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// warnRecorder is a slog.Handler that keeps Warn and Error records with
// their attributes (the logger's and the record's) as strings.
type warnRecorder struct {
	store *recordStore
	attrs []slog.Attr
}

type recordStore struct {
	mu      sync.Mutex
	records []map[string]string
}

func newWarnRecorder() *warnRecorder { return &warnRecorder{store: &recordStore{}} }

func (h *warnRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnRecorder) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	m["msg"] = r.Message
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	h.store.records = append(h.store.records, m)
	return nil
}

func (h *warnRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnRecorder{store: h.store, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *warnRecorder) WithGroup(string) slog.Handler { return h }

// find returns the attributes of the first record with message msg.
func (h *warnRecorder) find(msg string) (map[string]string, bool) {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	for _, m := range h.store.records {
		if m["msg"] == msg {
			return m, true
		}
	}
	return nil, false
}

// httptraceInfo records whether a request reused a connection.
type httptraceInfo struct{ reused bool }

func (i *httptraceInfo) ctx(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(c httptrace.GotConnInfo) { i.reused = c.Reused },
	})
}
