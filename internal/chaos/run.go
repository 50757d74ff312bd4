// Running a scenario: Run sets a run up from its Scenario and Params, and
// Harness.run starts nodes and gateways, the load, the fault schedule, the
// drain and the report. Params and Scenario are in params.go, the Harness
// API of scenarios in harness.go, the drain and measurements in measure.go.

package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd"
)

// standbyDelay is the harness's default nsq.Config.StandbyDelay: shorter
// than qgate serve's default (30s) so that a drain need not wait long for
// the standby copies of what a killed node held, and long enough that a
// first copy reaches a subscriber (and its ack or hold reaches the other
// qgate, through nsqd, which syncs every message) before the standby is
// due on a loaded 2-core machine: at 2s, S16 delivered 1-22% twice there
// (load average 17-25); at 5s S16 none, but S14's burst left first copies
// 5s in nsqd's queues, due together with their standbys. At 10s, S14
// delivered 1.1-4.7% twice at load 25-46 (0-0.1% at load 8): the scenarios
// that promise a duplicate rate (S14, S16) run with qgate serve's default
// (Scenario.StandbyDelay), as users do.
const standbyDelay = 10 * time.Second

// Run runs sc with p and returns its report; the report's Err is set when
// the run could not be carried out.
func Run(ctx context.Context, sc Scenario, p Params) *Report {
	p = p.withDefaults()
	sc.Nodes = cmp.Or(sc.Nodes, 3)
	sc.MaxInFlight = cmp.Or(sc.MaxInFlight, 200)
	sc.Subscribers = cmp.Or(sc.Subscribers, 2)
	sc.AckDeadline = cmp.Or(sc.AckDeadline, 3*time.Second)
	sc.Gateways = cmp.Or(sc.Gateways, 1)
	sc.CheckInterval = cmp.Or(sc.CheckInterval, 100*time.Millisecond)
	sc.StandbyDelay = cmp.Or(sc.StandbyDelay, standbyDelay)
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
	if sc.Load != "" {
		senders = sc.Load
	}
	r.Setup = fmt.Sprintf("%s form; %d nsqd, mode %s, replicas %d, %d msg/s (%s), %d qgate × %d subscribers, ack deadline %v, checks every %v, standby delay %v, nsqd args %v",
		form, sc.Nodes, mode, max(h.replicas(), 1), h.rate, senders, sc.Gateways, max(sc.Subscribers, 0), sc.AckDeadline, sc.CheckInterval, sc.StandbyDelay, sc.NodeArgs)
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
	addr, err := nsqd.FreeAddr()
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
			if addr, err = nsqd.FreeAddr(); err != nil {
				return err
			}
		}
		in := &instance{gc: gatewayConfig{
			Addr: addr, Groups: groups,
			CheckInterval: h.Sc.CheckInterval, CheckTimeout: 250 * time.Millisecond,
			Fall: 2, Rise: 2, FailbackHold: time.Second, AttemptTimeout: 500 * time.Millisecond,
			StandbyDelay: h.Sc.StandbyDelay, AckTopic: nsq.DefaultAckTopic,
			TimerTopic: nsq.DefaultTimerTopic, TimerHop: h.Sc.TimerHop,
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
	if h.lib != nil {
		if err := h.startLibrary(runCtx); err != nil {
			return err
		}
	}
	if len(h.pubs) == 0 && len(h.spubs) == 0 && h.lib == nil {
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
	if h.lib != nil {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			h.runLibraryPublisher(loadCtx)
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
	if faultAt.IsZero() {
		h.addDuplicateExamples(r, loadStart)
	} else {
		h.addDuplicateExamples(r, faultAt)
	}
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
	if h.lib != nil {
		h.measureLibrary(r, loadStart, loadEnd)
	}
	if h.Sc.Measure != nil {
		h.Sc.Measure(h, r)
	}
	h.addQueued(ctx, r, res) // last: it stops the gateways and nodes when it has to look
	return nil
}
