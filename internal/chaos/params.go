// What a run is given: Params (shared by every scenario) and Scenario (one
// named fault schedule with its promises).

package chaos

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/qgate/qgate/backends/nsq"
)

// Params are the knobs of a run, shared by every scenario.
type Params struct {
	// NSQD is the nsqd binary. Required.
	NSQD string
	// Long runs the long form of the scenario.
	Long bool
	// Replicas, if > 0, overrides the scenario's replicas per send.
	Replicas int
	// Rate is messages per second over all publishers. Default: the
	// scenario's (200, or its LongRate in the long form).
	Rate int
	// Seed seeds the scenarios that draw at random (the nemesis); 0 picks
	// one from the clock. The seed used is printed with the report.
	Seed int64
	// Dir holds the nodes' data directories; default a temporary directory
	// removed after the run.
	Dir string
	// ChildCommand starts a gateway child (scenarios that SIGKILL qgate):
	// the argv of a program that runs Main or the package's TestMain with
	// the gateway config in its environment. Required by those scenarios.
	ChildCommand []string
	// Logger receives the harness's, pool's and server's logs. Default
	// discards.
	Logger *slog.Logger
	// NodeOutput receives nsqd's output. Default discards.
	NodeOutput io.Writer
}

func (p Params) withDefaults() Params {
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	if p.NodeOutput == nil {
		p.NodeOutput = io.Discard
	}
	return p
}

// Scenario is one named fault schedule with its promises.
type Scenario struct {
	// Name is short ("S1", "S1-durable"); Title says what happens.
	Name, Title string
	// Nodes is the number of nsqd processes (default 3); Mode and Layout
	// (node indices per group, ModeHA only) shape the pool.
	Nodes  int
	Mode   nsq.Mode
	Layout [][]int
	// NodeArgs are extra nsqd flags for every node.
	NodeArgs []string
	// Replicas per send (0: the server default).
	Replicas int
	// Child runs qgate as a child process (so it can be SIGKILLed).
	Child bool
	// Subscribers is the number of acking subscribers on the one channel,
	// on each qgate. Default 2.
	// -1: none (the library's subscriber only, see Harness.AddLibrary).
	Subscribers int
	// Gateways is the number of qgate instances on the same nodes
	// (default 1). Each gets Subscribers subscribers and its own
	// publishers; a message acked by subscribers of two instances counts as
	// a duplicate.
	Gateways int
	// Streams makes half of each qgate's publishers send with SendStream
	// instead of unary Send.
	Streams bool
	// LongRate is the send rate of the long form (default: the short
	// form's, 200 msg/s).
	LongRate int
	// CheckInterval is the pool's health-check interval (default 100 ms).
	CheckInterval time.Duration
	// MaxInFlight of each subscriber. Default 200.
	MaxInFlight uint32
	// AckDeadline of the subscriptions. Default 3s.
	AckDeadline time.Duration
	// StandbyDelay is the qgates' standby delay (default standbyDelay,
	// 10 s; the scenarios that promise a duplicate rate use qgate serve's
	// default, nsq.DefaultStandbyDelay).
	StandbyDelay time.Duration
	// Load, if set, says in the report's header what the load is when
	// Setup replaces the default publishers and subscribers.
	Load string
	// TimerHop is the qgates' timer hop (nsq.Config.TimerHop; default
	// nsq.DefaultTimerHop): a delay longer than it waits on the timer
	// topic, which every qgate reads.
	TimerHop time.Duration
	// Setup adjusts the harness before the subscribers and publishers
	// start: more subscribers, the ack policy, deferred publishers.
	Setup func(ctx context.Context, h *Harness) error
	// Fault runs the fault schedule under load; it returns when the system
	// is healed.
	Fault func(ctx context.Context, h *Harness) error
	// Measure adds scenario-specific metrics to the report.
	Measure func(h *Harness, r *Report)
	// Promises are checked on the report.
	Promises []Promise
	// Notes are printed with the table.
	Notes []string
	// WaitRedelivery makes the drain wait for a full quiet period (ack
	// deadline + 2 s) even when every acked message was delivered, so that
	// redeliveries after the deadline are seen.
	WaitRedelivery bool
	// NeedsReplicas: the scenario proves replication; it is skipped (and
	// the run fails) when the nodes do not hold the extra copies.
	NeedsReplicas bool
	// Random: the schedule draws from a generator seeded with the run's
	// seed; the report prints it (Params.Seed, --seed, replays it).
	Random bool
}
