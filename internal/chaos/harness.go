// The Harness as a scenario sees it: faults on nodes, gateways stopped and
// started, subscribers and publishers added, waiting for the nodes.

package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd"
)

// Harness is one scenario run in progress, as a scenario's functions see
// it.
type Harness struct {
	P  Params
	Sc Scenario

	log     *slog.Logger
	dir     string
	cluster *cluster
	// inst are the qgate instances; queue and admin are the first's.
	inst   []*instance
	queue  qgatev1.QueueServiceClient
	admin  qgatev1.AdminServiceClient
	ledger *Ledger
	watch  *watcher
	topic  string
	rate   int
	seed   int64
	// drainStuck is set when the drain gave up because nothing was
	// delivered for a long while although the nodes held messages.
	drainStuck bool

	mu     sync.Mutex
	faults []*Fault

	subs    []*subscriber
	lib     *libLoad // the Go client library's load (AddLibrary), or nil
	subStop []context.CancelFunc
	pubs    []*publisher
	spubs   []*streamPublisher
	// bursts are Burst's sends in progress; burstN numbers the bursts.
	bursts sync.WaitGroup
	burstN int
	// twice: every unary Send (publishers' and bursts') carries its id as
	// the client-chosen message id and is made twice, a retry (S18).
	twice bool
	due   sync.Map // id -> time.Time: earliest delivery of deferred messages
	// ttl, if set, is the time to live of every other message the
	// publishers send (S19); expires holds, for each, the latest moment it
	// can expire: its Send's end + ttl.
	ttl     time.Duration
	expires sync.Map // id -> time.Time
	nacked  sync.Map // id -> time.Time: earliest redelivery after a nack

	// decide is the standard subscribers' ack policy (nil: ack all).
	decide func(*qgatev1.Delivery) (Action, time.Duration)
	// counter counts the pool's releases of a down node's deliveries.
	counter *countingHandler
	// stopTook is how long the last gateway stop took.
	stopTook time.Duration
	// holderStop ends S10's non-acking subscriber.
	holderStop func()

	wg sync.WaitGroup
}

// d picks the short or long form of a duration.
func (h *Harness) d(short, long time.Duration) time.Duration {
	if h.P.Long {
		return long
	}
	return short
}

// Sleep waits d or until ctx is done.
func (h *Harness) Sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Begin records the start of a fault on nodes (none for gateway faults).
func (h *Harness) Begin(kind string, nodes ...string) *Fault {
	f := &Fault{Kind: kind, Nodes: nodes, At: time.Now()}
	h.mu.Lock()
	h.faults = append(h.faults, f)
	h.mu.Unlock()
	return f
}

// Heal records the end of a fault.
func (h *Harness) Heal(f *Fault) {
	h.mu.Lock()
	f.Healed = time.Now()
	h.mu.Unlock()
}

// Node returns a node's process by name ("n1" …).
func (h *Harness) Node(name string) *nsqd.Process { return h.cluster.node(name) }

// Signal applies a fault to a node: "SIGKILL", "SIGTERM", "SIGSTOP",
// "SIGCONT" or "restart".
func (h *Harness) Signal(ctx context.Context, name, what string) error {
	p := h.Node(name)
	var err error
	switch what {
	case "SIGKILL":
		err = p.Kill()
	case "SIGTERM":
		err = p.Term()
	case "SIGSTOP":
		err = p.Stop()
	case "SIGCONT":
		err = p.Cont()
	case "restart":
		err = p.Restart(ctx)
	default:
		err = fmt.Errorf("unknown signal %q", what)
	}
	if err != nil {
		return fmt.Errorf("chaos: %s %s: %w", what, name, err)
	}
	h.log.Info("chaos: node fault", "node", name, "signal", what)
	return nil
}

// instance is one qgate of a run and the harness's connection to it; the
// connection outlives restarts of the gateway on the same address.
type instance struct {
	gc    gatewayConfig
	gw    gateway // nil while stopped
	conn  *grpc.ClientConn
	queue qgatev1.QueueServiceClient
}

// StopGateway stops the first qgate, abruptly (kill) or gracefully.
func (h *Harness) StopGateway(kill bool) error { return h.StopGatewayN(0, kill) }

// StopGatewayN stops qgate number i (from 0), abruptly (kill: SIGKILL of a
// child process) or gracefully. Stopping a stopped qgate does nothing.
func (h *Harness) StopGatewayN(i int, kill bool) error {
	in := h.inst[i]
	if in.gw == nil {
		return nil
	}
	var err error
	if kill {
		err = in.gw.kill()
	} else {
		err = in.gw.stop()
	}
	in.gw = nil
	h.log.Info("chaos: gateway stopped", "gateway", i, "kill", kill)
	return err
}

// StartGateway starts the first qgate again on the same address and nodes.
func (h *Harness) StartGateway(ctx context.Context) error { return h.StartGatewayN(ctx, 0) }

// StartGatewayN starts qgate number i again on its address and nodes.
func (h *Harness) StartGatewayN(ctx context.Context, i int) error {
	in := h.inst[i]
	if in.gw != nil {
		return fmt.Errorf("chaos: gateway %d is running", i)
	}
	gw, err := h.startGateway(ctx, in.gc)
	if err != nil {
		return err
	}
	in.gw = gw
	return nil
}

// Gateways is the number of qgate instances of the run.
func (h *Harness) Gateways() int { return len(h.inst) }

func (h *Harness) startGateway(ctx context.Context, gc gatewayConfig) (gateway, error) {
	if h.Sc.Child {
		if len(h.P.ChildCommand) == 0 {
			return nil, errors.New("chaos: scenario needs a gateway child process and Params.ChildCommand is empty")
		}
		return startChild(ctx, h.P.ChildCommand, gc, h.P.NodeOutput)
	}
	var gw gateway
	var err error
	// The address was free a moment ago (or was ours before a restart):
	// retry briefly while the kernel releases it.
	for range 50 {
		if gw, err = startInproc(gc, h.log); err == nil {
			return gw, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, err
}

// AddSubscriber starts another subscriber on the run's topic and channel.
// decide (may be nil: ack everything) picks what it does with a delivery.
// It returns a function that ends the subscriber's stream.
func (h *Harness) AddSubscriber(ctx context.Context, name string, maxInFlight uint32, decide func(*qgatev1.Delivery) (Action, time.Duration)) (func(), error) {
	return h.addSubscriber(ctx, h.queue, name, maxInFlight, decide)
}

func (h *Harness) addSubscriber(ctx context.Context, client qgatev1.QueueServiceClient, name string, maxInFlight uint32, decide func(*qgatev1.Delivery) (Action, time.Duration)) (func(), error) {
	s := &subscriber{
		name: name, client: client, topic: h.topic, channel: "chaos",
		maxInFlight: maxInFlight, ackDeadline: h.Sc.AckDeadline,
		ledger: h.ledger, decide: decide,
	}
	sctx, cancel := context.WithCancel(ctx)
	opened := make(chan struct{})
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s.run(sctx, opened)
	}()
	h.subs = append(h.subs, s)
	h.subStop = append(h.subStop, cancel)
	select {
	case <-opened:
		return cancel, nil
	case <-time.After(10 * time.Second):
		cancel()
		return nil, fmt.Errorf("chaos: subscriber %s not opened after 10s", name)
	}
}

// AddPublisher adds a publisher; call from Setup (publishers start after
// Setup). delay > 0 makes deferred sends.
func (h *Harness) AddPublisher(name string, rate int, delay time.Duration) {
	h.addPublisher(h.queue, name, rate, delay)
}

func (h *Harness) addPublisher(client qgatev1.QueueServiceClient, name string, rate int, delay time.Duration) {
	p := &publisher{
		name: name, client: client, topic: h.topic,
		interval: time.Second / time.Duration(max(rate, 1)), timeout: 2 * time.Second,
		replicas: uint32(h.replicas()), delay: delay, ledger: h.ledger,
	}
	if delay > 0 {
		p.due = &h.due
	}
	if h.ttl > 0 {
		p.ttl, p.expires = h.ttl, &h.expires
	}
	h.pubs = append(h.pubs, p)
}

// addStreamPublisher adds a publisher that sends with SendStream.
func (h *Harness) addStreamPublisher(client qgatev1.QueueServiceClient, name string, rate int) {
	h.spubs = append(h.spubs, &streamPublisher{
		name: name, client: client, topic: h.topic,
		interval: time.Second / time.Duration(max(rate, 1)), timeout: 2 * time.Second,
		replicas: uint32(h.replicas()), ledger: h.ledger,
	})
}

// replicas is the replicas per send: the override or the scenario's, at
// most the number of nodes that can hold a copy: the groups in cluster and
// ha modes, the members of the one group in failover mode (a primary and
// a backup). A pool that cannot place them fails the sends, and the run's
// "acked ≥ 1" promise says so.
func (h *Harness) replicas() int {
	n := h.Sc.Replicas
	if h.P.Replicas > 0 {
		n = h.P.Replicas
	}
	groups := h.Sc.Nodes
	if h.Sc.Mode == nsq.ModeHA {
		groups = len(h.Sc.Layout)
	}
	return min(n, groups)
}

// waitNodesUp waits until the pool reports every node up, or out only
// for data-path failures (an ejection: its health checks pass, and the
// pool takes it back when the ejection ends, which after repeated faults
// can be longer than limit by design).
func (h *Harness) waitNodesUp(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := h.admin.ListNodes(lctx, &qgatev1.ListNodesRequest{})
		cancel()
		var states []string
		if err == nil {
			up := 0
			for _, n := range resp.GetNodes() {
				if n.GetState() == qgatev1.NodeState_NODE_STATE_UP || n.GetOutReason() == qgatev1.OutReason_OUT_REASON_DATA_PATH {
					up++
				}
				states = append(states, fmt.Sprintf("%s %s %s", n.GetName(), n.GetState(), n.GetOutReason()))
			}
			if up == h.Sc.Nodes {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: pool nodes not all up after %v (last error %v; nodes: %s)", limit, err, strings.Join(states, ", "))
		}
		if err := h.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// WaitNodesUp waits until the pool reports every node up again.
func (h *Harness) WaitNodesUp(ctx context.Context) error {
	return h.waitNodesUp(ctx, 15*time.Second)
}
