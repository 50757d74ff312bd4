package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq"
	nsqhealth "github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/grpctest"
	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// value returns the value of the series name{labels}, and whether it
// exists, from a gather of m's registry.
func value(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			if !hasLabels(mt, labels) {
				continue
			}
			switch {
			case mt.Counter != nil:
				return mt.GetCounter().GetValue(), true
			case mt.Gauge != nil:
				return mt.GetGauge().GetValue(), true
			case mt.Histogram != nil:
				return float64(mt.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabels(mt *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range mt.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func wantValue(t *testing.T, m *metrics.Metrics, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := value(t, m, name, labels)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var fastCheck = nsqhealth.Config{Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond, Fall: 1, Rise: 1, Jitter: -1}

func newPool(t *testing.T, mode nsq.Mode, n int) *nsq.Pool {
	t.Helper()
	var nodes []nsq.NodeConfig
	for i, node := range nsqdtest.StartNodes(t, n) {
		nodes = append(nodes, nsq.NodeConfig{Name: fmt.Sprintf("n%d", i), TCPAddr: node.TCPAddr, HTTPAddr: node.HTTPAddr})
	}
	groups, err := nsq.GroupsForMode(mode, nodes)
	if err != nil {
		t.Fatal(err)
	}
	p, err := nsq.New(nsq.Config{Groups: groups, Check: fastCheck, FailbackHold: 100 * time.Millisecond,
		Logger: nsqdtest.Logger(t, slog.LevelWarn)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestNodeMetricsFromWatch(t *testing.T) {
	m := metrics.New()
	p := newPool(t, nsq.ModeFailover, 2)
	stop := m.StartNodeWatch(context.Background(), p)
	t.Cleanup(stop)

	up := func(node string) func() bool {
		return func() bool {
			v, _ := value(t, m, "qgate_node_state", map[string]string{"node": node, "state": "up"})
			return v == 1
		}
	}
	eventually(t, "n0 up", up("n0"))
	eventually(t, "n1 up", up("n1"))
	eventually(t, "n0 active", func() bool {
		v, _ := value(t, m, "qgate_node_active", map[string]string{"node": "n0", "group": "failover"})
		return v == 1
	})
	wantValue(t, m, "qgate_node_state", map[string]string{"node": "n0", "state": "down"}, 0)

	// Draining the primary moves the group's sends to the backup: a
	// failover; undraining moves them back after the hold: a failback.
	// (Start-up may have counted some already: n1 can come up first.)
	group := map[string]string{"group": "failover"}
	failovers, _ := value(t, m, "qgate_failovers_total", group)
	failbacks, _ := value(t, m, "qgate_failbacks_total", group)
	if _, err := p.SetDraining("n0", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failover", func() bool {
		v, _ := value(t, m, "qgate_failovers_total", group)
		return v == failovers+1
	})
	wantValue(t, m, "qgate_node_state", map[string]string{"node": "n0", "state": "draining"}, 1)
	wantValue(t, m, "qgate_node_active", map[string]string{"node": "n1", "group": "failover"}, 1)
	if _, err := p.SetDraining("n0", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failback", func() bool {
		v, _ := value(t, m, "qgate_failbacks_total", group)
		return v == failbacks+1
	})
	wantValue(t, m, "qgate_failovers_total", group, failovers+1)
	wantValue(t, m, "qgate_node_active", map[string]string{"node": "n0", "group": "failover"}, 1)
}

func TestObserveNodesCountsFailoversAndFailbacks(t *testing.T) {
	m := metrics.New()
	ev := func(name string, prio int, state backends.NodeState, active bool) backends.NodeEvent {
		return backends.NodeEvent{Node: backends.NodeStatus{Name: name, Group: "g", Priority: prio, State: state, Active: active}}
	}
	events := make(chan backends.NodeEvent, 10)
	events <- ev("a", 0, backends.NodeUp, true) // initial state: not a failover
	events <- ev("b", 1, backends.NodeUp, false)
	events <- ev("a", 0, backends.NodeDown, false)
	events <- ev("b", 1, backends.NodeUp, true) // failover
	events <- ev("a", 0, backends.NodeUp, false)
	events <- ev("b", 1, backends.NodeUp, false)
	events <- ev("a", 0, backends.NodeUp, true) // failback
	close(events)
	m.ObserveNodes(events)
	wantValue(t, m, "qgate_failovers_total", map[string]string{"group": "g"}, 1)
	wantValue(t, m, "qgate_failbacks_total", map[string]string{"group": "g"}, 1)
	wantValue(t, m, "qgate_node_state", map[string]string{"node": "a", "state": "up"}, 1)
	wantValue(t, m, "qgate_node_state", map[string]string{"node": "a", "state": "down"}, 0)
	wantValue(t, m, "qgate_node_active", map[string]string{"node": "b"}, 0)
}

func TestBackendMetrics(t *testing.T) {
	m := metrics.New()
	b := m.Backend(newPool(t, nsq.ModeCluster, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	msgs := []*backends.Message{
		{ID: "m1", Body: []byte("one"), PublishTime: time.Now()},
		{ID: "m2", Body: []byte("two"), PublishTime: time.Now()},
	}
	if err := b.Send(ctx, "metrics", msgs, backends.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, backends.SubscribeOptions{Topic: "metrics", Channel: "c", MaxInFlight: 10, AckDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sc := map[string]string{"topic": "metrics", "channel": "c"}

	d1, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, m, "qgate_in_flight", sc, 2)
	if err := d1.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Acker.Nack(0); err != nil {
		t.Fatal(err)
	}
	wantValue(t, m, "qgate_in_flight", sc, 0)
	d3, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d3.Attempt != 2 || d3.ID != d2.ID {
		t.Fatalf("redelivery: got %s attempt %d, want %s attempt 2", d3.ID, d3.Attempt, d2.ID)
	}
	wantValue(t, m, "qgate_in_flight", sc, 1)
	if err := d3.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := d3.Acker.Ack(); err == nil {
		t.Error("a second Ack succeeded")
	}

	wantValue(t, m, "qgate_send_duration_seconds", map[string]string{"topic": "metrics"}, 1)
	wantValue(t, m, "qgate_deliveries_total", sc, 3)
	wantValue(t, m, "qgate_redeliveries_total", sc, 1)
	wantValue(t, m, "qgate_acks_total", sc, 2)
	wantValue(t, m, "qgate_nacks_total", sc, 1)
	wantValue(t, m, "qgate_in_flight", sc, 0)
	_ = sub.Close()
	if _, ok := value(t, m, "qgate_in_flight", sc); ok {
		t.Error("qgate_in_flight of a closed subscription is still reported")
	}
}

func TestPoolObserver(t *testing.T) {
	m := metrics.New()
	var o metrics.PoolObserver = m
	o.SendAttempt("n0", "t", 3, nil)
	o.SendAttempt("n0", "t", 3, nil)
	o.SendAttempt("n1", "t", 3, io.ErrUnexpectedEOF)
	o.SendRetry("t")
	o.DeadLettered("t", "c")
	m.ClaimLost("t", "c", false)
	m.Expired("t", "c", false)
	m.Expired("t", "c", true)
	m.Filtered("t", "c")
	wantValue(t, m, "qgate_sends_total", map[string]string{"node": "n0", "topic": "t"}, 2)
	wantValue(t, m, "qgate_send_errors_total", map[string]string{"node": "n1", "topic": "t"}, 1)
	wantValue(t, m, "qgate_send_retries_total", map[string]string{"topic": "t"}, 1)
	wantValue(t, m, "qgate_dead_letters_total", map[string]string{"topic": "t", "channel": "c"}, 1)
	wantValue(t, m, "qgate_claims_yielded_total", map[string]string{"topic": "t", "channel": "c"}, 1)
	wantValue(t, m, "qgate_expired_total", map[string]string{"topic": "t", "channel": "c"}, 2)
	wantValue(t, m, "qgate_filtered_total", map[string]string{"topic": "t", "channel": "c"}, 1)
}

func TestEjectionMetrics(t *testing.T) {
	m := metrics.New()
	m.NodeOut("n0", "data_path")
	m.NodeOut("n0", "data_path")
	m.NodeOut("n0", "health_check")
	m.EjectionCapped("n1")
	wantValue(t, m, "qgate_node_out_total", map[string]string{"node": "n0", "reason": "data_path"}, 2)
	wantValue(t, m, "qgate_node_out_total", map[string]string{"node": "n0", "reason": "health_check"}, 1)
	wantValue(t, m, "qgate_node_ejections_capped_total", map[string]string{"node": "n1"}, 1)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestHTTPAndGRPCMetrics(t *testing.T) {
	m := metrics.New()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	m.InitializeGRPC(srv)
	conn := grpctest.Serve(t, srv)
	for range 3 {
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}

	var ready atomic.Bool
	hs, err := metrics.Listen("127.0.0.1:0", m.Handler(ready.Load), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.Close() })
	base := "http://" + hs.Addr().String()

	m.SendAttempt("n0", "orders", 1, nil)
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, line := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 3`,
		`qgate_sends_total{node="n0",topic="orders"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while not ready: got %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while ready: got %d, want 200", code)
	}
	if err := hs.Close(); err != nil {
		t.Error(err)
	}
	if err := hs.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestBackendForwardsLimits: the instrumented backend keeps what the
// service learns from the pool: its message sizes and its longest delay
// (without the latter qgate serve refused every delay past an hour).
func TestBackendForwardsLimits(t *testing.T) {
	p := newPool(t, nsq.ModeCluster, 1)
	b := metrics.New().Backend(p)
	if got, want := backends.MaxDelay(b), p.MaxDelay(); got != want || got == 0 {
		t.Errorf("MaxDelay through the metrics backend = %v, want the pool's %v", got, want)
	}
	m := &backends.Message{ID: "x", Body: []byte("body")}
	if got, want := backends.MessageSize(b, m), p.MessageSize(m); got != want {
		t.Errorf("MessageSize through the metrics backend = %d, want the pool's %d", got, want)
	}
}
