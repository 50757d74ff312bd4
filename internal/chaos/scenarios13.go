package chaos

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// The scenarios of issue 13's delivery semantics beyond idempotent sends
// (S18, with the issue 9 scenarios): S19, expiry.

// latePrecision: a delivery of an expiring message seen by a subscriber
// more than this after the latest moment the message could expire (its
// Send's end + ttl) was made after its expiry. It covers the way from
// the gateway's check to the subscriber on a loaded machine.
const latePrecision = time.Second

var (
	noLate = Promise{Metric: "delivered after expiry", Max: never,
		Why: "a message is not delivered after its ttl"}
	someExpired = Promise{Metric: "expired, not delivered", Min: 1, Max: math.Inf(1),
		Why: "the backlog made some acked messages expire (else the run proves nothing)"}
	someExpiringDelivered = Promise{Metric: "expiring delivered", Min: 1, Max: math.Inf(1),
		Why: "messages with a ttl are delivered while they live"}
)

// s19 is expiry: every other message carries a ttl (3 s; 10 s in the long
// form); slow subscribers (one delivery in flight each, acked after 20
// ms: about half the send rate) let a backlog build, and 1 of 3 nodes is
// frozen (SIGSTOP) for longer than the ttl, then continued. Expiring
// messages must not be delivered after their expiry: not from the
// backlog, not from the frozen node, not from their standby copies
// elsewhere; every acked message without a ttl must be delivered.
func s19() Scenario {
	sc := issue9(Scenario{
		Name:        "S19",
		Title:       "every other message with a ttl (3 s), slow subscribers, SIGSTOP 1 of 3 nodes for 2 ttl + 2 s, SIGCONT (replicas=2)",
		Replicas:    2,
		MaxInFlight: 1,
		Setup: func(_ context.Context, h *Harness) error {
			h.ttl = h.d(3*time.Second, 10*time.Second)
			h.decide = func(*qgatev1.Delivery) (Action, time.Duration) { return AckLater, 20 * time.Millisecond }
			h.AddPublisher("p1", h.rate/2, 0)
			h.AddPublisher("p2", h.rate-h.rate/2, 0)
			return nil
		},
		Fault: func(ctx context.Context, h *Harness) error {
			f := h.Begin("SIGSTOP", "n2")
			if err := h.Signal(ctx, "n2", "SIGSTOP"); err != nil {
				return err
			}
			if err := h.Sleep(ctx, 2*h.ttl+2*time.Second); err != nil {
				return err
			}
			if err := h.Signal(ctx, "n2", "SIGCONT"); err != nil {
				return err
			}
			h.Heal(f)
			return h.WaitNodesUp(ctx)
		},
		Measure:  measureExpiry,
		Promises: []Promise{noLoss, noLate, someExpired, someExpiringDelivered},
		Notes: []string{"issue 13: expiry; lost counts messages without a ttl (an expiring message may be absent: expired)",
			fmt.Sprintf("delivered after expiry: seen more than %v after its Send's end + ttl", latePrecision)},
	})
	sc.Streams = false
	return sc
}

// measureExpiry splits the acked messages never delivered into lost
// (without a ttl) and expired (with one), and counts deliveries of
// expiring messages and those made after their expiry.
func measureExpiry(h *Harness, r *Report) {
	res := h.ledger.Check()
	var lost, expired []string
	for _, id := range res.Lost {
		if _, ok := h.expires.Load(id); ok {
			expired = append(expired, id)
		} else {
			lost = append(lost, id)
		}
	}
	for i := range r.Metrics {
		if r.Metrics[i].Name == "lost" {
			r.Metrics[i].Value = float64(len(lost))
			r.Metrics[i].Text = fmt.Sprintf("%d %s (of the messages without a ttl)", len(lost), listed(lost))
		}
	}
	delivered := map[string]bool{}
	var late []string
	for _, d := range h.ledger.Deliveries() {
		v, ok := h.expires.Load(d.ID)
		if !ok {
			continue
		}
		delivered[d.ID] = true
		if over := d.At.Sub(v.(time.Time)); over > latePrecision {
			late = append(late, fmt.Sprintf("%s %.1fs late, attempt %d", d.ID, over.Seconds(), d.Attempt))
		}
	}
	r.AddText("delivered after expiry", float64(len(late)), "", fmt.Sprintf("%d %s", len(late), strings.Join(late[:min(len(late), maxListed)], "; ")))
	r.AddText("expired, not delivered", float64(len(expired)), "", fmt.Sprintf("%d acked messages with a ttl", len(expired)))
	r.Add("expiring delivered", float64(len(delivered)), "")
}

// earlyPrecision: a deferred message seen by a subscriber more than this
// before its due time (its Send's start + delay, never later than the
// gateway's own due time) was delivered early. A subscription delivers a
// message at most notBeforePrecision (10 ms) before it is due.
const earlyPrecision = 10 * time.Millisecond

var (
	noEarly = Promise{Metric: "delivered early", Max: never,
		Why: "no subscriber sees a deferred message before it is due"}
	someDeferred = Promise{Metric: "deferred delivered", Min: 1, Max: math.Inf(1),
		Why: "delayed messages were delivered (else the run proves nothing)"}
)

// s20 is long delays: every message waits 3 s (10 s long) with a timer
// hop of 1 s, so on the timer topic, in steps; a node is SIGTERMed and
// restarted while it holds deferred timer messages (nsqd writes them to
// disk without their timers: they come back at once and must be deferred
// again), then a qgate process is SIGKILLed and restarted (its mover's
// messages in flight come back to the other's after the mover's ack
// deadline). None early, none lost.
func s20() Scenario {
	sc := issue9(Scenario{
		Name:     "S20",
		Title:    "every message delayed 3 s (10 s long) past a 1 s timer hop, a quarter of the rate, SIGTERM 1 of 3 nodes and restart, then SIGKILL a qgate and restart (replicas=2, 2 qgate processes)",
		Replicas: 2, Gateways: 2, Child: true,
		TimerHop: time.Second,
		Setup: func(_ context.Context, h *Harness) error {
			// A quarter of the rate: with --sync-every=1 every step costs
			// nsqd an fsync (see the notes).
			delay := h.d(3*time.Second, 10*time.Second)
			for g, in := range h.inst {
				h.addPublisher(in.queue, fmt.Sprintf("p%d", g+1), h.rate/4/len(h.inst), delay)
			}
			return nil
		},
		Fault: func(ctx context.Context, h *Harness) error {
			if err := h.nodeFault(ctx, "n1", "SIGTERM", "restart", h.d(2*time.Second, 5*time.Second)); err != nil {
				return err
			}
			if err := h.Sleep(ctx, time.Second); err != nil {
				return err
			}
			f := h.Begin("qgate2 SIGKILL")
			if err := h.StopGatewayN(1, true); err != nil {
				return err
			}
			if err := h.Sleep(ctx, time.Second); err != nil {
				return err
			}
			err := h.StartGatewayN(ctx, 1)
			h.Heal(f)
			return err
		},
		Measure:  measureDeferred,
		Promises: []Promise{noLoss, noEarly, someDeferred},
		Notes: []string{"issue 13: long delays through the timer topic",
			"each step of a deferred message costs nsqd a disk write (an fsync with --sync-every=1) when it is due again; late after due grows when the steps outrun the disk",
			fmt.Sprintf("delivered early: seen more than %v before its Send's start + delay", earlyPrecision)},
	})
	sc.Streams = false
	return sc
}

// measureDeferred counts deliveries of deferred messages, those seen
// before they were due, and how late the first delivery of each was.
func measureDeferred(h *Harness, r *Report) {
	var early []string
	first := map[string]time.Duration{}
	for _, d := range h.ledger.Deliveries() {
		v, ok := h.due.Load(d.ID)
		if !ok {
			continue
		}
		late := d.At.Sub(v.(time.Time))
		if late < -earlyPrecision {
			early = append(early, fmt.Sprintf("%s %.3fs early, attempt %d", d.ID, -late.Seconds(), d.Attempt))
		}
		if l, ok := first[d.ID]; !ok || late < l {
			first[d.ID] = late
		}
	}
	lates := make([]float64, 0, len(first))
	for _, l := range first {
		lates = append(lates, l.Seconds())
	}
	slices.Sort(lates)
	r.AddText("delivered early", float64(len(early)), "", fmt.Sprintf("%d %s", len(early), strings.Join(early[:min(len(early), maxListed)], "; ")))
	r.Add("deferred delivered", float64(len(first)), "")
	if n := len(lates); n > 0 {
		r.AddText("late after due", lates[n/2], "s", fmt.Sprintf("median %.3f s, p99 %.3f s, max %.3f s (first delivery of each)",
			lates[n/2], lates[n*99/100], lates[n-1]))
	}
}

// Promises of S21 (issue 11's retries).
var (
	noPublishErrors = Promise{Metric: "publish errors", Max: never,
		Why: "the Publisher rides through a qgate's SIGKILL and SIGTERM: every Publish succeeds"}
	receiveGap = Promise{Metric: "longest receive gap", Max: 2,
		Why: "the Subscriber is receiving again within 2 s of a qgate's loss"}
)

// s21 is the Go client library across gateway faults: one client over
// both qgate processes (round-robin), a Publisher (100 msg/s, client ids)
// and a Subscriber; qgate 2 is SIGKILLed and restarted, then qgate 1 is
// SIGTERMed and restarted. The application sees no publish error, loses
// nothing, and never waits more than 2 s for a delivery.
func s21() Scenario {
	sc := issue9(Scenario{
		Name:        "S21",
		Title:       "Go client library: Publisher and Subscriber over 2 qgate processes, SIGKILL qgate 2 and restart, then SIGTERM qgate 1 and restart (replicas=2)",
		Replicas:    2,
		Gateways:    2,
		Child:       true,
		Subscribers: -1,
		Load:        "the Go client library only: a Publisher at half that rate and 1 Subscriber, over both qgates",
		Setup: func(_ context.Context, h *Harness) error {
			h.AddLibrary(h.rate / 2)
			return nil
		},
		Fault: func(ctx context.Context, h *Harness) error {
			for _, step := range []struct {
				g    int
				kill bool
				name string
			}{{1, true, "qgate2 SIGKILL"}, {0, false, "qgate1 SIGTERM"}} {
				f := h.Begin(step.name)
				if err := h.StopGatewayN(step.g, step.kill); err != nil {
					return err
				}
				if err := h.Sleep(ctx, time.Second); err != nil {
					return err
				}
				if err := h.StartGatewayN(ctx, step.g); err != nil {
					return err
				}
				h.Heal(f)
				if err := h.Sleep(ctx, 2*time.Second); err != nil {
					return err
				}
			}
			return nil
		},
		Promises: []Promise{noLoss, noPublishErrors, receiveGap},
		Notes: []string{"issue 11: the client library's retries and reconnects; the load is the library's only (half the rate)",
			"longest receive gap: the longest time between two deliveries to the library's Subscriber while the load ran"},
	})
	sc.Streams = false
	return sc
}
