package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	nsqproc "github.com/qgate/qgate/internal/nsqd"
)

// standbyDelay is the harness's nsq.Config.StandbyDelay: shorter than
// qgate serve's default (30s) so that a drain need not wait long for the
// standby copies of what a killed node held, and long enough that a first
// copy reaches a subscriber (and its ack or hold reaches the other qgate,
// through nsqd, which syncs every message) before the standby is due on a
// loaded 2-core machine: at 2s, S16 delivered 1-22% twice there (load
// average 17-25); at 5s S16 none, but S14's burst left first copies 5s
// in nsqd's queues, due together with their standbys.
const standbyDelay = 10 * time.Second

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

	mu     sync.Mutex
	faults []*Fault

	subs    []*subscriber
	subStop []context.CancelFunc
	pubs    []*publisher
	spubs   []*streamPublisher
	// bursts are Burst's sends in progress; burstN numbers the bursts.
	bursts sync.WaitGroup
	burstN int
	due    sync.Map // id -> time.Time: earliest delivery of deferred messages
	nacked sync.Map // id -> time.Time: earliest redelivery after a nack

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
func (h *Harness) Node(name string) *nsqproc.Process { return h.cluster.node(name) }

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

// Run runs sc with p and returns its report; the report's Err is set when
// the run could not be carried out.
func Run(ctx context.Context, sc Scenario, p Params) *Report {
	p = p.withDefaults()
	if sc.Nodes == 0 {
		sc.Nodes = 3
	}
	if sc.MaxInFlight == 0 {
		sc.MaxInFlight = 200
	}
	if sc.Subscribers == 0 {
		sc.Subscribers = 2
	}
	if sc.AckDeadline == 0 {
		sc.AckDeadline = 3 * time.Second
	}
	if sc.Gateways == 0 {
		sc.Gateways = 1
	}
	if sc.CheckInterval == 0 {
		sc.CheckInterval = 100 * time.Millisecond
	}
	counter := newCountingHandler(p.Logger.Handler())
	h := &Harness{P: p, Sc: sc, log: slog.New(counter), counter: counter, ledger: NewLedger(), topic: "chaos"}
	h.rate = p.Rate
	if h.rate <= 0 {
		h.rate = 200
		if p.Long && sc.LongRate > 0 {
			h.rate = sc.LongRate
		}
	}
	h.seed = p.Seed
	if h.seed == 0 {
		h.seed = time.Now().UnixNano()
	}
	r := &Report{Scenario: sc.Name, Title: sc.Title, Promises: append(slices.Clone(baseline), sc.Promises...), Notes: sc.Notes}
	form := "short"
	if p.Long {
		form = "long"
	}
	mode := sc.Mode
	if mode == "" {
		mode = nsq.ModeCluster
	}
	senders := "unary Send"
	if sc.Streams {
		senders = "unary Send and SendStream"
	}
	r.Setup = fmt.Sprintf("%s form; %d nsqd, mode %s, replicas %d, %d msg/s (%s), %d qgate × %d subscribers, ack deadline %v, checks every %v, nsqd args %v",
		form, sc.Nodes, mode, max(h.replicas(), 1), h.rate, senders, sc.Gateways, sc.Subscribers, sc.AckDeadline, sc.CheckInterval, sc.NodeArgs)
	if sc.Child {
		r.Setup += ", qgate as child processes"
	}
	if sc.Random {
		r.Setup += fmt.Sprintf(", seed %d", h.seed)
	}
	r.Setup += "; " + buildCommit()
	loadStart := loadavg()
	err := h.run(ctx, mode, r)
	r.AddText("load average", math.NaN(), "", fmt.Sprintf("%s at start, %s at end", loadStart, loadavg()))
	if err != nil {
		r.Err = err
	}
	if r.Skipped == "" && r.Err == nil {
		r.Evaluate()
	}
	return r
}

func (h *Harness) run(ctx context.Context, mode nsq.Mode, r *Report) (err error) {
	if p := h.P; p.NSQD == "" {
		return errors.New("chaos: no nsqd binary")
	}
	h.dir = h.P.Dir
	if h.dir == "" {
		if h.dir, err = os.MkdirTemp("", "qgate-chaos-"); err != nil {
			return err
		}
		defer os.RemoveAll(h.dir)
	}
	if h.cluster, err = startCluster(ctx, h.P.NSQD, h.dir, h.Sc.Nodes, h.Sc.NodeArgs, h.P.NodeOutput); err != nil {
		return err
	}
	defer h.cluster.close()
	groups, err := h.cluster.groups(mode, h.Sc.Layout)
	if err != nil {
		return err
	}
	addr, err := nsqproc.FreeAddr()
	if err != nil {
		return err
	}
	defer func() {
		for i, in := range h.inst {
			if in.conn != nil {
				in.conn.Close()
			}
			err = errors.Join(err, h.StopGatewayN(i, false))
		}
	}()
	for i := range h.Sc.Gateways {
		if i > 0 {
			if addr, err = nsqproc.FreeAddr(); err != nil {
				return err
			}
		}
		in := &instance{gc: gatewayConfig{
			Addr: addr, Groups: groups,
			CheckInterval: h.Sc.CheckInterval, CheckTimeout: 250 * time.Millisecond,
			Fall: 2, Rise: 2, FailbackHold: time.Second, AttemptTimeout: 500 * time.Millisecond,
			StandbyDelay: standbyDelay, AckTopic: nsq.DefaultAckTopic,
		}}
		h.inst = append(h.inst, in)
		if in.gw, err = h.startGateway(ctx, in.gc); err != nil {
			return err
		}
		if in.conn, err = dial(addr); err != nil {
			return err
		}
		in.queue = qgatev1.NewQueueServiceClient(in.conn)
	}
	h.queue = h.inst[0].queue
	h.admin = qgatev1.NewAdminServiceClient(h.inst[0].conn)

	runCtx, stopAll := context.WithCancel(ctx)
	defer func() {
		stopAll()
		h.wg.Wait()
	}()
	h.watch = &watcher{client: h.admin}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.watch.run(runCtx)
	}()
	if err := h.waitNodesUp(ctx, 10*time.Second); err != nil {
		return err
	}
	if h.Sc.Setup != nil {
		if err := h.Sc.Setup(runCtx, h); err != nil {
			return err
		}
	}
	for g, in := range h.inst {
		for i := range h.Sc.Subscribers {
			name := fmt.Sprintf("sub%d", i+1)
			if len(h.inst) > 1 {
				name = fmt.Sprintf("g%d-sub%d", g+1, i+1)
			}
			if _, err := h.addSubscriber(runCtx, in.queue, name, h.Sc.MaxInFlight, h.decide); err != nil {
				return err
			}
		}
	}
	if len(h.pubs) == 0 && len(h.spubs) == 0 {
		// Two publishers per qgate, sharing the rate; with Streams the
		// second of each pair uses SendStream.
		n := 2 * len(h.inst)
		for g, in := range h.inst {
			for i := range 2 {
				k := 2*g + i
				rate := h.rate*(k+1)/n - h.rate*k/n
				name := fmt.Sprintf("p%d", k+1)
				if h.Sc.Streams && i == 1 {
					h.addStreamPublisher(in.queue, "s"+name, rate)
				} else {
					h.addPublisher(in.queue, name, rate, 0)
				}
			}
		}
	}
	loadCtx, stopLoad := context.WithCancel(runCtx)
	defer stopLoad()
	var pubWG sync.WaitGroup
	for _, p := range h.pubs {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			p.run(loadCtx)
		}()
	}
	for _, p := range h.spubs {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			p.run(loadCtx)
		}()
	}

	// Warm up, then the fault schedule, then load on the healed system.
	loadStart := time.Now()
	if err := h.Sleep(ctx, h.d(time.Second, 3*time.Second)); err != nil {
		return err
	}
	if h.Sc.NeedsReplicas {
		if reason := h.checkReplicas(ctx); reason != "" {
			r.Skipped = reason
			stopLoad()
			pubWG.Wait()
			return nil
		}
	}
	if h.Sc.Fault != nil {
		if err := h.Sc.Fault(runCtx, h); err != nil {
			stopLoad()
			pubWG.Wait()
			return err
		}
	}
	if err := h.Sleep(ctx, h.d(time.Second, 3*time.Second)); err != nil {
		return err
	}
	stopLoad()
	pubWG.Wait()
	h.bursts.Wait()
	loadEnd := time.Now()
	drained, why := h.drain(ctx)

	res := h.ledger.Check()
	var first *Fault
	if len(h.faults) > 0 {
		first = h.faults[0]
	}
	var faultAt time.Time
	if first != nil {
		faultAt = first.At
	}
	r.addResult(res, faultAt)
	r.AddText("load", loadEnd.Sub(loadStart).Seconds(), "s", fmt.Sprintf("%.1f s", loadEnd.Sub(loadStart).Seconds()))
	r.AddText("drain", ms(drained), "ms", fmt.Sprintf("%.1f s (%s)", drained.Seconds(), why))
	h.addFaultMetrics(r)
	h.addLeft(ctx, r)
	r.Add("dropped by pool (node down)", float64(h.counter.released()), "")
	var opens, broken, ackErrs int64
	for _, s := range h.subs {
		opens, broken, ackErrs = opens+s.opens.Load(), broken+s.broken.Load(), ackErrs+s.ackErrors.Load()
	}
	r.AddText("subscribe streams", float64(opens), "", fmt.Sprintf("%d opened, %d broke, %d ack errors", opens, broken, ackErrs))
	if h.Sc.Measure != nil {
		h.Sc.Measure(h, r)
	}
	return nil
}

// addLeft reports what the nodes still hold after the drain: messages
// that were neither lost nor delivered but are stuck (for example on a node
// that no consumer reads).
func (h *Harness) addLeft(ctx context.Context, r *Report) {
	var total int64
	var parts []string
	for i, p := range h.cluster.procs {
		if !p.Running() {
			parts = append(parts, h.cluster.names[i]+": down")
			continue
		}
		st, err := fetchStats(ctx, p.HTTPAddr())
		if err != nil {
			parts = append(parts, h.cluster.names[i]+": "+err.Error())
			continue
		}
		n, consumers := left(st, h.topic, "chaos")
		var topicDepth int64
		if t := st.Topic(h.topic); t != nil {
			topicDepth = t.Depth
		}
		total += n + topicDepth
		parts = append(parts, fmt.Sprintf("%s: %d msgs, %d consumers, topic depth %d", h.cluster.names[i], n, consumers, topicDepth))
	}
	r.AddText("left on nodes", float64(total), "", fmt.Sprintf("%d (%s)", total, strings.Join(parts, "; ")))
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

// drain waits until no more deliveries can come, or they stopped coming,
// or a time limit passes; it returns how long it waited and why it
// stopped. No more can come when nothing was delivered for a second, every
// acked message was delivered, and the running nodes hold nothing for the
// topic and channel: no message not yet copied to the channel, ready, in
// flight (delivered, not yet acked: a lost ack brings it back after the
// ack deadline) or deferred (a copy to be redelivered later, a standby
// copy). Ending when lost is 0 would miss those late duplicates. With
// messages missing (or WaitRedelivery), the quiet period is the ack
// deadline + 2 s instead of 1 s; the nodes must still be empty. While the
// nodes hold messages the drain goes on as long as deliveries come (a
// backlog on slow, fsyncing nodes), and gives up when none came for the
// ack deadline + 10 s (stuck) or at the limit (1 min, 5 min long).
func (h *Harness) drain(ctx context.Context) (time.Duration, string) {
	start := time.Now()
	limit := start.Add(h.d(time.Minute, 5*time.Minute))
	stuck := h.Sc.AckDeadline + 10*time.Second
	for time.Now().Before(limit) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		_, _, last := h.ledger.Counts()
		if last.Before(start) {
			last = start
		}
		idle := time.Since(last)
		quiet := time.Second
		if h.Sc.WaitRedelivery || (idle >= quiet && h.ledger.Check().LostCount() > 0) {
			quiet = h.Sc.AckDeadline + 2*time.Second
		}
		if idle < quiet {
			continue
		}
		if h.nodesEmpty(ctx) {
			return time.Since(start), fmt.Sprintf("nodes empty, nothing delivered for %v", quiet)
		}
		if idle >= stuck {
			return time.Since(start), fmt.Sprintf("nodes not empty, nothing delivered for %v", stuck)
		}
	}
	return time.Since(start), "time limit, nodes not empty"
}

// nodesEmpty reports whether every running node holds nothing for the
// run's topic and channel (not yet copied to the channel, ready, in flight
// or deferred). A node that does not answer is not empty.
func (h *Harness) nodesEmpty(ctx context.Context) bool {
	for _, p := range h.cluster.procs {
		if !p.Running() {
			continue
		}
		st, err := fetchStats(ctx, p.HTTPAddr())
		if err != nil {
			return false
		}
		n, _ := left(st, h.topic, "chaos")
		if t := st.Topic(h.topic); t != nil {
			n += t.Depth
		}
		if n > 0 {
			return false
		}
	}
	return true
}

// addFaultMetrics adds detection and recovery times and the availability
// of sends while faults lasted.
func (h *Harness) addFaultMetrics(r *Report) {
	events := h.watch.snapshot()
	var detect, recov time.Duration
	detected, recovered, nodeFaults := true, true, 0
	for _, f := range h.faults {
		if len(f.Nodes) == 0 {
			continue
		}
		nodeFaults++
		t := Timings(*f, events)
		detected = detected && t.Detected
		recovered = recovered && t.Recovered
		detect, recov = max(detect, t.Detect), max(recov, t.Recover)
	}
	if nodeFaults > 0 {
		r.AddDuration("detect", detect, detected)
		r.AddDuration("recover", recov, recovered)
	}
	r.Add("false failovers", float64(Downs(events, derefFaults(h.faults))), "")
	if len(h.faults) == 0 {
		return
	}
	from := h.faults[0].At
	to := h.faults[len(h.faults)-1].Healed
	if to.IsZero() {
		to = time.Now()
	}
	// When were the lost messages sent: before the fault (they lived on a
	// node), during it, or after the heal (written to a restarted node)?
	res := h.ledger.Check()
	if res.LostCount() > 0 {
		lost := make(map[string]bool)
		for _, id := range res.Lost {
			lost[id] = true
		}
		var before, during, after int
		for _, s := range h.ledger.Sends() {
			if s.Outcome != Acked || !lost[s.IDs[0]] {
				continue
			}
			switch {
			case s.Start.Before(from):
				before++
			case s.Start.Before(to):
				during++
			default:
				after++
			}
		}
		r.AddText("lost, by send time", float64(res.LostCount()), "",
			fmt.Sprintf("%d before the fault, %d during, %d after the heal", before, during, after))
	}
	ok, all := 0, 0
	for _, s := range h.ledger.Sends() {
		if s.Start.Before(from) || s.Start.After(to) {
			continue
		}
		all++
		if s.Outcome == Acked {
			ok++
		}
	}
	avail := math.NaN()
	if all > 0 {
		avail = math.Round(1000*float64(ok)/float64(all)) / 10
	}
	r.AddText("availability", avail, "%", fmt.Sprintf("%s%% (%d of %d sends acked during the fault)", fmtNum(avail), ok, all))
}

func derefFaults(fs []*Fault) []Fault {
	out := make([]Fault, len(fs))
	for i, f := range fs {
		out[i] = *f
	}
	return out
}

// checkReplicas returns why replicated sends are not in effect, or "".
// It compares the messages the nodes hold with the sends acked so far: with
// replicas = k the nodes must hold about k copies of each.
func (h *Harness) checkReplicas(ctx context.Context) string {
	res := h.ledger.Check()
	if res.Acked == 0 {
		return fmt.Sprintf("no send with replicas=%d was acked during warm-up (errors: %v)", h.replicas(), res.SendErrors)
	}
	var held uint64
	for _, p := range h.cluster.procs {
		st, err := fetchStats(ctx, p.HTTPAddr())
		if err != nil {
			return fmt.Sprintf("cannot read nsqd stats: %v", err)
		}
		held += messages(st, h.topic)
	}
	// Sends are still running: held counts copies of a few sends acked
	// after the ledger was read; the 0.75 factor absorbs that the other way.
	want := float64(h.replicas()) * float64(res.Acked) * 0.75
	if float64(held) < want {
		return fmt.Sprintf("replicated sends are not in effect: %d sends acked with replicas=%d but the nodes hold %d copies (the pool does not write replicas yet)",
			res.Acked, h.replicas(), held)
	}
	return ""
}
