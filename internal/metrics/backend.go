package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qgate/qgate/backends"
)

// Backend returns b instrumented: Send latency, and per subscription its
// deliveries, redeliveries, acks, nacks and in-flight count. Build the
// service on the returned Backend; Close closes b.
func (m *Metrics) Backend(b backends.Backend) backends.Backend {
	return &backend{Backend: b, m: m}
}

type backend struct {
	backends.Backend
	m *Metrics
}

// MessageSize and BatchSize are b's backend's (backends.Sizer).
func (b *backend) MessageSize(m *backends.Message) int { return backends.MessageSize(b.Backend, m) }

func (b *backend) BatchSize(n, total int) int { return backends.BatchSize(b.Backend, n, total) }

// MaxDelay is b's backend's (backends.MaxDelayer): without it a server
// would refuse the delays its pool takes.
func (b *backend) MaxDelay() time.Duration { return backends.MaxDelay(b.Backend) }

func (b *backend) Send(ctx context.Context, topic string, msgs []*backends.Message, opts backends.SendOptions) error {
	start := time.Now()
	err := b.Backend.Send(ctx, topic, msgs, opts)
	b.m.SendDone(topic, time.Since(start))
	return err
}

func (b *backend) Subscribe(ctx context.Context, opts backends.SubscribeOptions) (backends.Subscription, error) {
	sub, err := b.Backend.Subscribe(ctx, opts)
	if err != nil {
		return nil, err
	}
	s := &subscription{
		Subscription: sub,
		m:            b.m,
		topic:        opts.Topic,
		channel:      opts.Channel,
		deadline:     opts.AckDeadline,
		held:         make(map[*acker]time.Time),
	}
	s.labels.topic, s.labels.channel = b.m.labels.pin(opts.Topic, opts.Channel)
	b.m.inFlight.add(s)
	return s, nil
}

// subscription counts its deliveries and keeps the deadline of each one it
// handed out and that is not yet settled, for the in-flight gauge.
type subscription struct {
	backends.Subscription
	m              *Metrics
	topic, channel string
	labels         labelKey // pinned while the subscription is open
	deadline       time.Duration
	mu             sync.Mutex
	held           map[*acker]time.Time // unsettled deliveries and their deadlines
	closed         bool
}

func (s *subscription) Receive(ctx context.Context) (*backends.Delivery, error) {
	d, err := s.Subscription.Receive(ctx)
	if err != nil {
		return nil, err
	}
	s.m.delivered(s.labels, d.Attempt) // pinned: no need to mark a use
	a := &acker{Acker: d.Acker, s: s}
	s.mu.Lock()
	if !s.closed {
		s.held[a] = time.Now().Add(s.deadline)
	}
	s.mu.Unlock()
	dd := *d
	dd.Acker = a
	return &dd, nil
}

// Close unpins the subscription's labels once (Close may be called more
// than once) and closes the subscription.
func (s *subscription) Close() error {
	s.m.inFlight.remove(s)
	s.mu.Lock()
	wasClosed := s.closed
	s.closed = true
	clear(s.held)
	s.mu.Unlock()
	if !wasClosed {
		s.m.labels.unpin(s.labels.topic, s.labels.channel)
	}
	return s.Subscription.Close()
}

// inFlight counts held deliveries whose deadline has not passed, and
// forgets the others.
func (s *subscription) inFlight(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, dl := range s.held {
		if now.After(dl) {
			delete(s.held, a)
		}
	}
	return len(s.held)
}

func (s *subscription) settle(a *acker) {
	s.mu.Lock()
	delete(s.held, a)
	s.mu.Unlock()
}

func (s *subscription) extend(a *acker) {
	s.mu.Lock()
	if _, ok := s.held[a]; ok {
		s.held[a] = time.Now().Add(s.deadline)
	}
	s.mu.Unlock()
}

// acker counts settlements. A failed Ack or Nack (an unknown delivery) also
// ends the delivery's time in flight.
type acker struct {
	backends.Acker
	s *subscription
}

func (a *acker) Ack() error {
	err := a.Acker.Ack()
	if err == nil {
		a.s.m.acks.WithLabelValues(a.s.settleLabels()...).Inc()
	}
	a.s.settle(a)
	return err
}

func (a *acker) Nack(delay time.Duration) error {
	err := a.Acker.Nack(delay)
	if err == nil {
		a.s.m.nacks.WithLabelValues(a.s.settleLabels()...).Inc()
	}
	a.s.settle(a)
	return err
}

// settleLabels returns the label values an ack or nack is counted under:
// the subscription's pinned ones while it is open (the same as its
// deliveries', also when they are OtherLabel), else through the limiter,
// which marks the use (a settlement after Close).
func (s *subscription) settleLabels() []string {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		return []string{s.labels.topic, s.labels.channel}
	}
	t, c := s.m.labels.pair(s.topic, s.channel)
	return []string{t, c}
}

func (a *acker) Extend() error {
	err := a.Acker.Extend()
	if err == nil {
		a.s.extend(a)
	} else {
		a.s.settle(a)
	}
	return err
}

// inFlightCollector reports qgate_in_flight{topic,channel} at scrape time
// from the open subscriptions, so deliveries whose deadline passed unseen
// are not counted.
type inFlightCollector struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	subs map[*subscription]struct{}
}

func newInFlightCollector() *inFlightCollector {
	return &inFlightCollector{
		desc: prometheus.NewDesc(Namespace+"_in_flight",
			"Deliveries handed to subscribers and not yet acked, nacked or past their ack deadline.",
			[]string{"topic", "channel"}, nil),
		subs: make(map[*subscription]struct{}),
	}
}

func (c *inFlightCollector) add(s *subscription) {
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
}

func (c *inFlightCollector) remove(s *subscription) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *inFlightCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector: one series per topic and
// channel with an open subscription (by their pinned label values, so
// subscriptions beyond the cap share the OtherLabel series).
func (c *inFlightCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	subs := make([]*subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	now := time.Now()
	sums := make(map[labelKey]int)
	for _, s := range subs {
		sums[s.labels] += s.inFlight(now)
	}
	for k, n := range sums {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k.topic, k.channel)
	}
}
