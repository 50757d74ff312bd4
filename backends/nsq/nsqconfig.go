package nsq

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	gonsq "github.com/nsqio/go-nsq"
)

// heartbeatInterval is the IDENTIFY heartbeat_interval of every connection:
// nsqd's minimum. nsqd sends a heartbeat at this interval on every
// connection, so a connection that stays silent for readTimeout belongs to a
// frozen or unreachable nsqd; and nsqd drops a client that does not answer
// for two intervals.
const heartbeatInterval = time.Second

// readTimeout bounds every read of a go-nsq connection (go-nsq's default is
// 60s). With heartbeats every second, three silent seconds mean the node is
// frozen: the connection is torn down, its pending publishes fail and a
// consumer's connection is freed for a later reconnect. It also bounds the
// IDENTIFY answer when dialling a frozen node (the kernel accepts the TCP
// connection even when nsqd is stopped).
const readTimeout = 3 * heartbeatInterval

// producerConfig returns the go-nsq config of the pool's producers.
func (p *Pool) producerConfig() *gonsq.Config {
	c := gonsq.NewConfig()
	p.baseConfig(c)
	return c
}

// baseConfig sets what producers and consumers share.
func (p *Pool) baseConfig(c *gonsq.Config) {
	// A dead host must fail a dial well within one attempt's budget.
	c.DialTimeout = p.cfg.DialTimeout
	// A write to a frozen node's socket blocks once the kernel buffer is
	// full; go-nsq holds its connection lock meanwhile. Bound it (go-nsq's
	// default is 1s too; set on purpose, not by accident).
	c.WriteTimeout = p.cfg.WriteTimeout
	c.ReadTimeout = readTimeout
	c.HeartbeatInterval = heartbeatInterval
	if p.cfg.TLS != nil {
		c.TlsV1 = true
		c.TlsConfig = p.cfg.TLS.Clone()
	}
	c.AuthSecret = p.cfg.AuthSecret
}

// consumerConfig returns the go-nsq config of a subscription's consumer of one node.
func (p *Pool) consumerConfig(maxInFlight int, ackDeadline time.Duration) *gonsq.Config {
	c := gonsq.NewConfig()
	p.baseConfig(c)
	// One consumer per node: its single connection gets RDY maxInFlight.
	c.MaxInFlight = maxInFlight
	// The ack deadline is nsqd's msg_timeout for this client (IDENTIFY).
	c.MsgTimeout = msgTimeout(ackDeadline)
	// nsqd buffers writes to a consumer for up to 250ms by default: that
	// much latency per delivery at low rates, and nsqd's ack deadline clock
	// starts before the message reaches us. Use nsqd's minimum (25ms);
	// busy connections still fill the buffer and flush early.
	c.OutputBufferTimeout = outputBufferTimeout
	// go-nsq's default of 5 FINs a message after 5 attempts without telling
	// anyone: a silent drop. 0 turns that off; the subscription handles
	// MaxAttempts itself (dead-letter topic, never a drop).
	c.MaxAttempts = 0
	// go-nsq would re-dial a lost direct nsqd connection every
	// LookupdPollInterval from a goroutine of its own; the subscription
	// stops a consumer whose connection closed before that goroutine starts
	// (see subscription.consumerOf) and reconnects through its own connect
	// rounds, within about one check interval. Kept short in case go-nsq
	// ever re-dials anyway: such a goroutine exits one interval after Stop.
	c.LookupdPollInterval = max(p.cfg.Check.Interval, 10*time.Millisecond)
	// No backoff: a nack is the client's decision about one message, not a
	// signal to slow the whole subscription down (we requeue without
	// backoff too).
	c.MaxBackoffDuration = 0
	return c
}

// outputBufferTimeout is the IDENTIFY output_buffer_timeout of consumers.
const outputBufferTimeout = 25 * time.Millisecond

// ackMargin is how much longer than the ack deadline nsqd waits before it
// times a delivery out. The subscription itself hands a delivery back at
// its deadline, counted from Receive; nsqd's clock starts earlier (when it
// wrote the message), so without a margin nsqd would redeliver before the
// client's deadline, and an Ack we accept could reach nsqd too late.
const ackMargin = 100 * time.Millisecond

// msgTimeout is the IDENTIFY msg_timeout for an ack deadline: the deadline
// plus ackMargin, within what nsqd accepts (1s up to its --max-msg-timeout,
// 15m by default).
func msgTimeout(ackDeadline time.Duration) time.Duration {
	return clampDuration(ackDeadline+ackMargin, time.Second, 15*time.Minute)
}

func clampDuration(d, lo, hi time.Duration) time.Duration {
	return min(max(d, lo), hi)
}

// nsqLogger adapts go-nsq's logger to slog. go-nsq is chatty and logs
// expected events (a killed node) as errors; its lines go to Debug, and
// warnings and errors to Info, tagged component=go-nsq. The pool logs what
// matters itself.
type nsqLogger struct{ l *slog.Logger }

// Output implements go-nsq's logger interface.
func (a nsqLogger) Output(_ int, s string) error {
	level := slog.LevelDebug
	if strings.HasPrefix(s, "ERR") || strings.HasPrefix(s, "WRN") {
		level = slog.LevelInfo
	}
	a.l.Log(context.Background(), level, s, "component", "go-nsq")
	return nil
}

// nsqLogLevel is the level go-nsq filters at: its Info lines are per
// connection events, useful only when debugging.
func (p *Pool) nsqLogLevel() gonsq.LogLevel {
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		return gonsq.LogLevelDebug
	}
	return gonsq.LogLevelWarning
}

// producerLogger is the logger of one producer: it marks the producer stale
// when go-nsq says its router exited (the connection is gone).
type producerLogger struct {
	nsqLogger
	stale *atomic.Bool
}

// Output implements go-nsq's logger interface.
func (l producerLogger) Output(depth int, s string) error {
	// go-nsq logs a connection's IO error before the producer closes over
	// it: marked stale then, the sender stops a run of DPUBs (the next
	// would make the closing producer reconnect, racing with its own
	// close: a data race in go-nsq 1.1.0) and replaces the producer.
	if strings.Contains(s, "exiting router") || strings.Contains(s, "IO error") {
		l.stale.Store(true)
	}
	if strings.HasPrefix(s, "INF") && !l.l.Enabled(context.Background(), slog.LevelDebug) {
		return nil
	}
	return l.nsqLogger.Output(depth, s)
}
