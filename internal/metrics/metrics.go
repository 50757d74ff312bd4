package metrics

import (
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
)

// Namespace prefixes qgate's own metric names.
const Namespace = "qgate"

// Metrics holds qgate's collectors and their registry. Its methods are safe
// for concurrent use.
type Metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	sends        *prometheus.CounterVec
	sendErrors   *prometheus.CounterVec
	retries      *prometheus.CounterVec
	sendDuration *prometheus.HistogramVec
	failovers    *prometheus.CounterVec
	failbacks    *prometheus.CounterVec
	nodeState    *prometheus.GaugeVec
	nodeActive   *prometheus.GaugeVec
	deliveries   *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
	acks         *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	yielded      *prometheus.CounterVec
	expired      *prometheus.CounterVec
	filtered     *prometheus.CounterVec
	nodesOut     *prometheus.CounterVec
	capped       *prometheus.CounterVec
	inFlight     *inFlightCollector
	labels       *labelLimiter
}

// Option configures New.
type Option func(*options)

type options struct {
	now       func() time.Time
	idle      time.Duration
	maxLabels int
}

// WithLabelIdle sets how long a topic, or a topic and channel, may go
// unused (no send, delivery, ack, nack or dead letter, and no open
// subscription) before its series are removed by a scrape (counted from
// the first scrape after the last use).
// Default DefaultLabelIdle (10 min).
func WithLabelIdle(d time.Duration) Option { return func(o *options) { o.idle = d } }

// WithMaxLabelValues sets how many distinct topics, and separately how many
// distinct topic/channel pairs, get series of their own; the ones beyond
// are counted under OtherLabel until idle ones make room. Default
// DefaultMaxLabelValues (1000).
func WithMaxLabelValues(n int) Option { return func(o *options) { o.maxLabels = n } }

// WithClock sets the clock that idle times are measured by (tests).
// Default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// SendBuckets are the buckets of qgate_send_duration_seconds: a write to a
// local nsqd takes well under a millisecond, a failover about an attempt
// timeout (1s by default).
var SendBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New returns a Metrics with a new registry holding every collector.
func New(opts ...Option) *Metrics {
	o := options{now: time.Now, idle: DefaultLabelIdle, maxLabels: DefaultMaxLabelValues}
	for _, opt := range opts {
		opt(&o)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(prometheus.DefBuckets))),
		sends:      counter("sends_total", "Writes of a batch that a node acknowledged.", "node", "topic"),
		sendErrors: counter("send_errors_total", "Writes of a batch to a node that failed.", "node", "topic"),
		retries:    counter("send_retries_total", "Writes retried on another node after a failure.", "topic"),
		sendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "send_duration_seconds",
			Help:    "Latency of a Send to the backend, retries included.",
			Buckets: SendBuckets,
		}, []string{"topic"}),
		failovers:    counter("failovers_total", "Sends of a group moved to a lower-priority member.", "group"),
		failbacks:    counter("failbacks_total", "Sends of a group moved back to a higher-priority member.", "group"),
		nodeState:    gauge("node_state", "1 for the node's current state, 0 for the others.", "node", "group", "state"),
		nodeActive:   gauge("node_active", "1 while the node takes its group's sends.", "node", "group"),
		deliveries:   counter("deliveries_total", "Deliveries handed to subscribers, redeliveries included.", "topic", "channel"),
		redeliveries: counter("redeliveries_total", "Deliveries of a message after its first (attempt > 1).", "topic", "channel"),
		acks:         counter("acks_total", "Acked deliveries.", "topic", "channel"),
		nacks:        counter("nacks_total", "Nacked deliveries.", "topic", "channel"),
		deadLetters:  counter("dead_letters_total", "Messages moved to a dead-letter topic: past max attempts, or expired with dead_letter_expired.", "topic", "channel"),
		filtered: counter("filtered_total",
			"Messages finished without delivery because they failed the subscription's filter (open.filter).",
			"topic", "channel"),
		expired: counter("expired_total",
			"Messages met after their expiry (Message.ttl) and not delivered: finished, or moved to the dead-letter topic with dead_letter_expired.",
			"topic", "channel"),
		yielded: counter("claims_yielded_total",
			"Late copies of a message that gave way to another qgate instance's earlier claim on the channel: each a duplicate delivery avoided.",
			"topic", "channel"),
		nodesOut: counter("node_out_total",
			"Times a node went out of the send path, by reason: data_path (ejected for failed sends), health_check (/ping failed).",
			"node", "reason"),
		capped: counter("node_ejections_capped_total",
			"Data-path ejections refused because the max ejection share of nodes was out already (or the node was the last usable one).",
			"node"),
		inFlight: newInFlightCollector(),
		labels:   newLabelLimiter(o.now, o.idle, o.maxLabels),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grpc,
		m.sends, m.sendErrors, m.retries, m.sendDuration,
		m.failovers, m.failbacks, m.nodeState, m.nodeActive,
		m.deliveries, m.redeliveries, m.acks, m.nacks, m.deadLetters, m.yielded, m.expired, m.filtered, m.nodesOut, m.capped, m.inFlight,
	)
	return m
}

// Registry is the registry every collector is registered in; register more
// collectors here. Gather it through Gather, which first removes idle
// series.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Gather removes the series of topics and channels idle for longer than
// the idle time (WithLabelIdle), then gathers the registry. /metrics is
// served from it, so idle series go at the next scrape, with no goroutine
// of their own.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	m.labels.sweep(m.drop)
	return m.reg.Gather()
}

// drop deletes the series of an idle key: a topic's from the vectors
// labelled by topic (one series per node for some), a topic/channel pair's
// from those labelled by both.
func (m *Metrics) drop(k labelKey) {
	if k.channel == "" {
		l := prometheus.Labels{"topic": k.topic}
		for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
			m.sends, m.sendErrors, m.retries, m.sendDuration,
		} {
			v.DeletePartialMatch(l)
		}
		return
	}
	for _, v := range []*prometheus.CounterVec{m.deliveries, m.redeliveries, m.acks, m.nacks, m.deadLetters, m.yielded, m.expired, m.filtered} {
		v.DeleteLabelValues(k.topic, k.channel)
	}
}

// GRPC is the go-grpc-middleware server metrics collector.
func (m *Metrics) GRPC() *grpcprom.ServerMetrics { return m.grpc }

// UnaryServerInterceptor counts and times every unary call (grpc_server_*).
// Put it first in the chain, so rejected calls are counted too.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return m.grpc.UnaryServerInterceptor()
}

// StreamServerInterceptor counts and times every stream (grpc_server_*).
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return m.grpc.StreamServerInterceptor()
}

// InitializeGRPC creates the grpc_server_* series of every registered
// method with zero values, so dashboards see them before the first call.
// Call it after the services are registered on s.
func (m *Metrics) InitializeGRPC(s *grpc.Server) { m.grpc.InitializeMetrics(s) }

// PoolObserver is what a pool reports about its writes. Metrics implements
// it; a pool that takes an observer declares its own interface with the
// methods it calls, which Metrics satisfies.
type PoolObserver interface {
	// SendAttempt reports one write of msgs messages to node: err nil
	// means the node acknowledged it.
	SendAttempt(node, topic string, msgs int, err error)
	// SendRetry reports that a failed write of topic is tried again on
	// another node.
	SendRetry(topic string)
	// DeadLettered reports a message of topic/channel moved to its
	// dead-letter topic.
	DeadLettered(topic, channel string)
}

var _ PoolObserver = (*Metrics)(nil)

// NodeOut counts a node going out of the send path for reason (data_path,
// health_check).
func (m *Metrics) NodeOut(node, reason string) { m.nodesOut.WithLabelValues(node, reason).Inc() }

// EjectionCapped counts a data-path ejection of node that the pool refused
// because too many nodes were out already.
func (m *Metrics) EjectionCapped(node string) { m.capped.WithLabelValues(node).Inc() }

// SendAttempt implements PoolObserver.
func (m *Metrics) SendAttempt(node, topic string, _ int, err error) {
	topic = m.labels.topic(topic)
	if err != nil {
		m.sendErrors.WithLabelValues(node, topic).Inc()
		return
	}
	m.sends.WithLabelValues(node, topic).Inc()
}

// SendRetry implements PoolObserver.
func (m *Metrics) SendRetry(topic string) { m.retries.WithLabelValues(m.labels.topic(topic)).Inc() }

// DeadLettered implements PoolObserver.
func (m *Metrics) DeadLettered(topic, channel string) {
	m.deadLetters.WithLabelValues(m.labels.pair(topic, channel)).Inc()
}

// ClaimLost counts a late copy of topic/channel that gave way to another
// instance's earlier claim (nsq.ClaimObserver).
func (m *Metrics) ClaimLost(topic, channel string, _ bool) {
	m.yielded.WithLabelValues(m.labels.pair(topic, channel)).Inc()
}

// Expired counts a message of topic/channel met after its expiry and not
// delivered (nsq.ExpiryObserver).
func (m *Metrics) Expired(topic, channel string, _ bool) {
	m.expired.WithLabelValues(m.labels.pair(topic, channel)).Inc()
}

// Filtered counts a message of topic/channel finished because it failed
// the subscription's filter (nsq.FilterObserver).
func (m *Metrics) Filtered(topic, channel string) {
	m.filtered.WithLabelValues(m.labels.pair(topic, channel)).Inc()
}

// SendDone records the latency of a Send as the service sees it.
func (m *Metrics) SendDone(topic string, d time.Duration) {
	m.sendDuration.WithLabelValues(m.labels.topic(topic)).Observe(d.Seconds())
}

// Delivered counts a delivery of attempt (1 = first) handed to a
// subscriber of topic/channel.
func (m *Metrics) Delivered(topic, channel string, attempt int) {
	m.delivered(m.pairLabels(topic, channel), attempt)
}

// Acked counts an acked delivery of topic/channel.
func (m *Metrics) Acked(topic, channel string) {
	m.acks.WithLabelValues(m.labels.pair(topic, channel)).Inc()
}

// Nacked counts a nacked delivery of topic/channel.
func (m *Metrics) Nacked(topic, channel string) {
	m.nacks.WithLabelValues(m.labels.pair(topic, channel)).Inc()
}

// pairLabels marks topic/channel used and returns its label values.
func (m *Metrics) pairLabels(topic, channel string) labelKey {
	t, c := m.labels.pair(topic, channel)
	return labelKey{t, c}
}

// delivered counts a delivery under the label values k.
func (m *Metrics) delivered(k labelKey, attempt int) {
	m.deliveries.WithLabelValues(k.topic, k.channel).Inc()
	if attempt > 1 {
		m.redeliveries.WithLabelValues(k.topic, k.channel).Inc()
	}
}
