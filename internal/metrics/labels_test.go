package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/internal/metrics"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// scrape returns the qgate_ sample lines of m's /metrics, as Prometheus
// would store them (a histogram counts one line per bucket, sum and count).
func scrape(t *testing.T, m *metrics.Metrics) []string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	var lines []string
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "qgate_") {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

// touch uses topic as a gateway does once: a send acknowledged by each of
// three nodes, its latency, a delivery and an ack on one channel.
func touch(m *metrics.Metrics, topic string) {
	for _, node := range []string{"n0", "n1", "n2"} {
		m.SendAttempt(node, topic, 1, nil)
	}
	m.SendDone(topic, time.Millisecond)
	m.Delivered(topic, "c", 1)
	m.Acked(topic, "c")
}

// seriesPerTopic is the number of qgate_ lines touch makes for one topic
// (3 sends, the histogram's buckets, sum and count, a delivery, an ack).
func seriesPerTopic(t *testing.T) int {
	t.Helper()
	m := metrics.New()
	touch(m, "one")
	return len(scrape(t, m))
}

// TestMetricsBoundedByCap touches many topics: the topics beyond the cap
// are counted under OtherLabel, so the series never exceed what the cap
// allows, and nothing is lost (the sum over every label value is the count
// of uses).
func TestMetricsBoundedByCap(t *testing.T) {
	const maxLabels, topics = 50, 500
	per := seriesPerTopic(t)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	m := metrics.New(metrics.WithClock(clock.Now), metrics.WithMaxLabelValues(maxLabels))
	limit := (maxLabels + 1) * per // the cap's topics and OtherLabel
	for i := range topics {
		touch(m, fmt.Sprintf("t%d", i))
		clock.Advance(time.Second) // within the idle time: nothing goes
		if i%50 == 49 {
			if n := len(scrape(t, m)); n > limit {
				t.Fatalf("after %d topics: %d qgate_ series, want at most %d", i+1, n, limit)
			}
		}
	}
	wantValue(t, m, "qgate_sends_total", map[string]string{"node": "n0", "topic": "t0"}, 1)
	wantValue(t, m, "qgate_sends_total", map[string]string{"node": "n0", "topic": metrics.OtherLabel}, topics-maxLabels)
	wantValue(t, m, "qgate_acks_total", map[string]string{"topic": metrics.OtherLabel, "channel": metrics.OtherLabel}, topics-maxLabels)
	if _, ok := value(t, m, "qgate_sends_total", map[string]string{"node": "n0", "topic": fmt.Sprint("t", maxLabels)}); ok {
		t.Errorf("topic %d beyond the cap of %d has a series of its own", maxLabels, maxLabels)
	}
}

// TestMetricsIdleRemoved checks that the series of topics and channels
// unused for the idle time are gone at the next scrape, that an open
// subscription keeps its own, and that the room they made is used again.
func TestMetricsIdleRemoved(t *testing.T) {
	const idle = 10 * time.Minute
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	m := metrics.New(metrics.WithClock(clock.Now), metrics.WithLabelIdle(idle), metrics.WithMaxLabelValues(10))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := m.Backend(newPool(t, nsq.ModeCluster, 1))
	sub, err := b.Subscribe(ctx, backends.SubscribeOptions{Topic: "kept", Channel: "open", MaxInFlight: 1, AckDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := b.Send(ctx, "kept", []*backends.Message{{ID: "m1", Body: []byte("x"), PublishTime: time.Now()}}, backends.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := sub.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		touch(m, fmt.Sprintf("t%d", i))
	}
	before := len(scrape(t, m))

	clock.Advance(idle - time.Second)
	if n := len(scrape(t, m)); n != before {
		t.Fatalf("before the idle time: %d qgate_ series, want %d", n, before)
	}
	touch(m, "t5") // used again: its idle time starts anew
	clock.Advance(2 * time.Second)
	lines := scrape(t, m)
	for _, l := range lines {
		if strings.Contains(l, `topic="t5"`) {
			continue
		}
		if strings.Contains(l, `topic="t`) || strings.Contains(l, metrics.OtherLabel) {
			t.Errorf("idle series still reported: %s", l)
		}
	}
	wantValue(t, m, "qgate_sends_total", map[string]string{"node": "n0", "topic": "t5"}, 2)
	wantValue(t, m, "qgate_deliveries_total", map[string]string{"topic": "kept", "channel": "open"}, 1)
	wantValue(t, m, "qgate_in_flight", map[string]string{"topic": "kept", "channel": "open"}, 1)
	t.Logf("qgate_ series: %d before the idle time, %d after (one topic used again)", before, len(lines))

	// The room is free again: the next topic has its own series.
	touch(m, "fresh")
	wantValue(t, m, "qgate_sends_total", map[string]string{"node": "n0", "topic": "fresh"}, 1)
	if err := d.Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	// A closed subscription's series go after the idle time like any.
	_ = sub.Close()
	clock.Advance(idle + time.Second)
	for _, l := range scrape(t, m) {
		if strings.Contains(l, `topic="kept"`) {
			t.Errorf("series of a closed, idle subscription still reported: %s", l)
		}
	}
}

// TestMetricsTenThousandTopics measures issue 12's case at the defaults:
// 10,000 topics touched once, the qgate_ series at once and after the
// default idle time.
func TestMetricsTenThousandTopics(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	m := metrics.New(metrics.WithClock(clock.Now))
	for i := range 10000 {
		touch(m, fmt.Sprintf("topic-%d", i))
	}
	peak := len(scrape(t, m))
	limit := (metrics.DefaultMaxLabelValues + 1) * seriesPerTopic(t)
	if peak > limit {
		t.Errorf("10,000 topics: %d qgate_ series, want at most %d", peak, limit)
	}
	clock.Advance(metrics.DefaultLabelIdle + time.Second)
	after := len(scrape(t, m))
	if after >= 1000 {
		t.Errorf("after the idle time: %d qgate_ series, want under 1000", after)
	}
	t.Logf("10,000 topics touched once: %d qgate_ series (at most %d), %d after %v idle", peak, limit, after, metrics.DefaultLabelIdle)
}

// TestMetricsSubscriptionsBeyondCap: a subscription opened when the cap is
// reached counts its deliveries, in-flight messages and acks under
// OtherLabel, also once room was made meanwhile (one subscription's
// numbers stay in one series).
func TestMetricsSubscriptionsBeyondCap(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	m := metrics.New(metrics.WithClock(clock.Now), metrics.WithMaxLabelValues(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := m.Backend(newPool(t, nsq.ModeCluster, 1))
	var subs []backends.Subscription
	var ds []*backends.Delivery
	for _, ch := range []string{"first", "second"} {
		sub, err := b.Subscribe(ctx, backends.SubscribeOptions{Topic: "capped", Channel: ch, MaxInFlight: 1, AckDeadline: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if err := b.Send(ctx, "capped", []*backends.Message{{ID: "m-" + ch, Body: []byte("x"), PublishTime: time.Now()}}, backends.SendOptions{}); err != nil {
			t.Fatal(err)
		}
		d, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		subs, ds = append(subs, sub), append(ds, d)
	}
	first := map[string]string{"topic": "capped", "channel": "first"}
	other := map[string]string{"topic": metrics.OtherLabel, "channel": metrics.OtherLabel}
	wantValue(t, m, "qgate_in_flight", first, 1)
	wantValue(t, m, "qgate_in_flight", other, 1)
	wantValue(t, m, "qgate_deliveries_total", other, 1)
	if _, ok := value(t, m, "qgate_in_flight", map[string]string{"channel": "second"}); ok {
		t.Error("the subscription beyond the cap has an in-flight series of its own")
	}

	// The first subscription ends and goes idle: room for a pair.
	_ = subs[0].Close()
	clock.Advance(metrics.DefaultLabelIdle + time.Second)
	if _, err := m.Gather(); err != nil {
		t.Fatal(err)
	}
	if err := ds[1].Acker.Ack(); err != nil {
		t.Fatal(err)
	}
	wantValue(t, m, "qgate_acks_total", other, 1)
	if _, ok := value(t, m, "qgate_acks_total", map[string]string{"channel": "second"}); ok {
		t.Error("an ack of the subscription beyond the cap was counted apart from its deliveries")
	}
}
