package chaos

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/qgate/qgate/backends/nsq"
)

// The scenarios of issue 9 (S13-S17) reproduce what an independent ledger
// found at a44d564 with the README's production advice: three nsqd
// processes with --mem-queue-size=0 --sync-every=1, unary Send and
// SendStream (400 msg/s in the long forms), two subscribers on one
// channel acking at once, health checks every 150 ms.

// issue9 fills in what S13-S17 share.
func issue9(sc Scenario) Scenario {
	if sc.Nodes == 0 {
		sc.Nodes = 3
	}
	sc.NodeArgs = synced
	sc.Streams = true
	sc.LongRate = 400
	sc.CheckInterval = 150 * time.Millisecond
	sc.Promises = append([]Promise{noUnexpected, noMismatch, noFailedSeen}, sc.Promises...)
	return sc
}

// Duplicate budgets of issue 9's goals, in % of acked deliveries.
var (
	dupsNormal = Promise{Metric: "duplicates %", Max: 0.1,
		Why: "in normal operation a message reaches one subscriber of the channel, across qgate instances"}
	dupsKilled = Promise{Metric: "duplicates %", Max: 1,
		Why: "after a node is lost for good, few of its messages are delivered twice"}
	dupsRetried = Promise{Metric: "duplicates %", Max: 1,
		Why: "a retried Send carrying the same client ids is delivered once, a node killed meanwhile or not"}
)

// burstSize is the number of concurrent Sends of a peak.
func (h *Harness) burstSize() int {
	if h.P.Long {
		return 200
	}
	return 100
}

// peakKill SIGKILLs node at the peak of writes (half of a burst acked, the
// rest in flight) and restarts it after 3 s (5 s in the long form).
func peakKill(node string) func(ctx context.Context, h *Harness) error {
	return func(ctx context.Context, h *Harness) error {
		h.Burst(ctx, 0, h.burstSize())
		f := h.Begin("SIGKILL at the peak of writes", node)
		if err := h.Signal(ctx, node, "SIGKILL"); err != nil {
			return err
		}
		if err := h.Sleep(ctx, h.d(3*time.Second, 5*time.Second)); err != nil {
			return err
		}
		if err := h.Signal(ctx, node, "restart"); err != nil {
			return err
		}
		h.Heal(f)
		return h.WaitNodesUp(ctx)
	}
}

// measureLostAtKill says when the lost messages were acked, relative to the
// first fault: the independent ledger found them in the last ~6-70 ms of
// writes the killed node acknowledged.
func measureLostAtKill(h *Harness, r *Report) {
	res := h.ledger.Check()
	if res.LostCount() == 0 || len(h.faults) == 0 {
		return
	}
	at := h.faults[0].At
	lost := make(map[string]bool, len(res.Lost))
	for _, id := range res.Lost {
		lost[id] = true
	}
	// res.Lost is capped for printing only when listed; it holds every id.
	var first, last time.Duration
	n := 0
	for _, s := range h.ledger.Sends() {
		if s.Outcome != Acked || !lost[s.IDs[0]] {
			continue
		}
		d := s.End.Sub(at)
		if n == 0 || d < first {
			first = d
		}
		if n == 0 || d > last {
			last = d
		}
		n++
	}
	r.AddText("lost, acked at", math.NaN(), "", fmt.Sprintf("fault%+.1f ms … fault%+.1f ms (%d sends)", ms(first), ms(last), n))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// s13 is finding 1: one node SIGKILLed at the peak of writes and
// restarted, in cluster or failover mode, with replicas 1 or 2.
func s13(mode nsq.Mode, replicas int) Scenario {
	node, where := "n2", "1 of 3 nodes"
	if mode == nsq.ModeFailover {
		node, where = "n1", "the failover primary (of 3)"
	}
	sc := Scenario{
		Name:     fmt.Sprintf("S13-%s-r%d", mode, replicas),
		Title:    fmt.Sprintf("%s: SIGKILL %s at the peak of writes, restart it (replicas=%d)", mode, where, replicas),
		Mode:     mode,
		Replicas: replicas,
		Fault:    peakKill(node),
		Measure:  measureLostAtKill,
	}
	if replicas >= 2 {
		sc.Promises = []Promise{noLoss}
		sc.Notes = []string{"issue 9 finding 1 with two copies: each acked message is on two nodes, so the killed node's in-memory messages survive as the other copy"}
	} else {
		sc.Notes = []string{"lost is reported, not promised: with one copy, nsqd loses the messages it had taken off its synced disk queue into memory (in flight or on the way to a consumer) when it dies (issue 9 finding 1; nsq #1386, #510)"}
	}
	return issue9(sc)
}

// s14 is finding 3's second half: a node killed for good, two copies,
// two qgate instances with two subscribers each.
func s14() Scenario {
	return issue9(Scenario{
		Name:     "S14",
		Title:    "SIGKILL 1 of 3 nodes at the peak of writes, never restarted (replicas=2, 2 qgates × 2 subscribers)",
		Replicas: 2, Gateways: 2, NeedsReplicas: true, StandbyDelay: nsq.DefaultStandbyDelay,
		Fault: func(ctx context.Context, h *Harness) error {
			h.Burst(ctx, 0, h.burstSize())
			h.Begin("SIGKILL for good", "n2")
			if err := h.Signal(ctx, "n2", "SIGKILL"); err != nil {
				return err
			}
			return h.Sleep(ctx, h.d(3*time.Second, 20*time.Second))
		},
		Promises: []Promise{noLoss, dupsKilled},
		Notes:    []string{"issue 9 finding 3: the killed node's copies of messages whose twin was delivered must not come back, and its in-flight messages must be delivered once from their twin"},
	})
}

// s15 is finding 2: rolling SIGTERM restarts of every node in turn, each
// at the peak of a burst. With replicas 2 (qgate serve's default) lost 0
// is promised; with one copy it is reported: nsqd 1.3.0 was seen to lose a
// message it had flushed to disk on SIGTERM (issue 9 finding 2), which
// only a second copy covers.
func s15(replicas int) Scenario {
	name := "S15"
	var promises []Promise
	notes := []string{"issue 9 finding 2: nsqd flushes memory, in-flight and deferred messages to disk on SIGTERM; the independent ledger still saw one acked message lost in 21 rolling restarts"}
	if replicas >= 2 {
		promises = []Promise{noLoss}
	} else {
		name = "S15-r1"
		notes = append(notes, "lost is reported, not promised: one copy is only as safe as nsqd's own shutdown")
	}
	return issue9(Scenario{
		Name:     name,
		Title:    fmt.Sprintf("rolling SIGTERM restarts of every node in turn at the peak of writes (replicas=%d; 3 rounds in the long form)", replicas),
		Replicas: replicas,
		Fault: func(ctx context.Context, h *Harness) error {
			rounds := 1
			if h.P.Long {
				rounds = 3
			}
			for range rounds {
				for _, n := range h.cluster.names {
					h.Burst(ctx, 0, h.burstSize())
					f := h.Begin("SIGTERM", n)
					if err := h.Signal(ctx, n, "SIGTERM"); err != nil {
						return err
					}
					if err := h.Sleep(ctx, h.d(500*time.Millisecond, 2*time.Second)); err != nil {
						return err
					}
					if err := h.Signal(ctx, n, "restart"); err != nil {
						return err
					}
					h.Heal(f)
					if err := h.WaitNodesUp(ctx); err != nil {
						return err
					}
					if err := h.Sleep(ctx, h.d(500*time.Millisecond, 2*time.Second)); err != nil {
						return err
					}
				}
			}
			return nil
		},
		Promises: promises,
		Notes:    notes,
	})
}

// s16 is finding 3: normal operation, two copies, two qgate instances with
// two subscribers each on one channel.
func s16() Scenario {
	return issue9(Scenario{
		Name:     "S16",
		Title:    "normal operation, no fault: 2 qgates × 2 subscribers on one channel (replicas=2)",
		Replicas: 2, Gateways: 2, NeedsReplicas: true, StandbyDelay: nsq.DefaultStandbyDelay,
		Fault: func(ctx context.Context, h *Harness) error {
			return h.Sleep(ctx, h.d(4*time.Second, 60*time.Second))
		},
		Promises: []Promise{noLoss, dupsNormal},
		Notes:    []string{"issue 9 finding 3: duplicates were dropped only within one subscription, so the two copies of a message reached two subscribers (35-50% of messages twice)"},
	})
}

// s18 is issue 13's idempotent sends: every Send is made twice with the
// same client-chosen ids (a retry), while a node is SIGKILLed at the peak
// of writes and restarted; one qgate, one subscriber. With replicas 2 the
// copies of a message are deduplicated as replicas anyway; replicas 1
// shows the client ids at work (its losses are nsqd's, as in S13-*-r1).
func s18(replicas int) Scenario {
	name := "S18"
	promises := []Promise{noLoss, dupsRetried}
	notes := []string{"issue 13: the retry of a message is the same message (its client id), delivered once",
		"unary Send only: both sends of an id go through one qgate"}
	if replicas < 2 {
		name = "S18-r1"
		promises = []Promise{dupsRetried}
		notes = append(notes, "without client ids every message both sends wrote is delivered twice; lost is reported, not promised (one copy: nsqd loses what it held in memory when killed)")
	}
	sc := issue9(Scenario{
		Name:        name,
		Title:       fmt.Sprintf("every Send made twice with the same client ids (a retry), SIGKILL 1 of 3 nodes at the peak of writes, restart it (replicas=%d, 1 subscriber)", replicas),
		Replicas:    replicas,
		Subscribers: 1,
		Setup: func(_ context.Context, h *Harness) error {
			h.twice = true
			h.AddPublisher("p1", h.rate/2, 0)
			h.AddPublisher("p2", h.rate-h.rate/2, 0)
			for _, p := range h.pubs {
				p.twice = true
			}
			return nil
		},
		Fault:    peakKill("n2"),
		Promises: promises,
		Notes:    notes,
	})
	sc.Streams = false
	return sc
}

// s17 is the seeded random nemesis: node SIGKILL/restart, SIGSTOP/SIGCONT
// and qgate SIGKILL/restart, one at a time, with replicas 2.
func s17() Scenario {
	var steps []string
	return issue9(Scenario{
		Name:     "S17",
		Title:    "seeded random nemesis for 15 s (5 min long): node SIGKILL/restart, SIGSTOP/SIGCONT, qgate SIGKILL/restart (replicas=2, 2 qgate processes × 2 subscribers)",
		Replicas: 2, Gateways: 2, Child: true, Random: true,
		Fault: func(ctx context.Context, h *Harness) error {
			steps = steps[:0]
			rng := rand.New(rand.NewPCG(uint64(h.seed), 0x9e3779b97f4a7c15))
			between := func(lo, hi time.Duration) time.Duration {
				return lo + time.Duration(rng.Int64N(int64(hi-lo)))
			}
			end := time.Now().Add(h.d(15*time.Second, 5*time.Minute))
			for time.Now().Before(end) {
				var err error
				switch rng.IntN(3) {
				case 0:
					n := h.cluster.names[rng.IntN(len(h.cluster.names))]
					down := between(time.Second, 4*time.Second)
					steps = append(steps, fmt.Sprintf("SIGKILL %s %.1fs", n, down.Seconds()))
					err = h.nodeFault(ctx, n, "SIGKILL", "restart", down)
				case 1:
					n := h.cluster.names[rng.IntN(len(h.cluster.names))]
					down := between(time.Second, 3*time.Second)
					steps = append(steps, fmt.Sprintf("SIGSTOP %s %.1fs", n, down.Seconds()))
					err = h.nodeFault(ctx, n, "SIGSTOP", "SIGCONT", down)
				default:
					g := rng.IntN(h.Gateways())
					down := between(500*time.Millisecond, 2*time.Second)
					steps = append(steps, fmt.Sprintf("qgate%d SIGKILL %.1fs", g+1, down.Seconds()))
					f := h.Begin(fmt.Sprintf("qgate%d SIGKILL", g+1))
					if err = h.StopGatewayN(g, true); err == nil {
						if err = h.Sleep(ctx, down); err == nil {
							err = h.StartGatewayN(ctx, g)
						}
					}
					h.Heal(f)
				}
				if err != nil {
					return err
				}
				if err := h.Sleep(ctx, between(500*time.Millisecond, 2*time.Second)); err != nil {
					return err
				}
			}
			return nil
		},
		Measure: func(h *Harness, r *Report) {
			r.AddText("nemesis", float64(len(steps)), "", fmt.Sprintf("%d steps: %s", len(steps), strings.Join(steps, ", ")))
			measureLostByFault(h, r)
		},
		Promises: []Promise{noLoss},
		Notes:    []string{"one fault at a time, each healed before the next; replay a run with --seed"},
	})
}

// nodeFault applies fault to node, waits down, applies heal, and waits
// until the pool sees every node up.
func (h *Harness) nodeFault(ctx context.Context, node, fault, heal string, down time.Duration) error {
	f := h.Begin(fault, node)
	if err := h.Signal(ctx, node, fault); err != nil {
		return err
	}
	if err := h.Sleep(ctx, down); err != nil {
		return err
	}
	if err := h.Signal(ctx, node, heal); err != nil {
		return err
	}
	h.Heal(f)
	return h.WaitNodesUp(ctx)
}

// measureLostByFault attributes each lost message to the last fault that
// began before its send was acked, and to its publisher: where a random
// schedule loses messages, and through which qgate.
func measureLostByFault(h *Harness, r *Report) {
	res := h.ledger.Check()
	if res.LostCount() == 0 || len(h.faults) == 0 {
		return
	}
	lost := make(map[string]bool, len(res.Lost))
	for _, id := range res.Lost {
		lost[id] = true
	}
	start := h.faults[0].At
	byFault := make(map[int]int)
	byPub := make(map[string]int)
	for _, s := range h.ledger.Sends() {
		if s.Outcome != Acked || !lost[s.IDs[0]] {
			continue
		}
		byPub[strings.SplitN(s.IDs[0], "-", 2)[0]]++
		k := -1
		for i, f := range h.faults {
			if f.At.Before(s.End) {
				k = i
			}
		}
		byFault[k]++
	}
	var parts []string
	for i, f := range h.faults {
		if n := byFault[i]; n > 0 {
			what := f.Kind
			if len(f.Nodes) > 0 {
				what += " " + strings.Join(f.Nodes, ",")
			}
			parts = append(parts, fmt.Sprintf("%d after %s at %+.1fs", n, what, f.At.Sub(start).Seconds()))
		}
	}
	if n := byFault[-1]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d before the first fault", n))
	}
	r.AddText("lost, by fault", math.NaN(), "", strings.Join(parts, "; "))
	var pubs []string
	for p, n := range byPub {
		pubs = append(pubs, fmt.Sprintf("%s: %d", p, n))
	}
	slices.Sort(pubs)
	r.AddText("lost, by publisher", math.NaN(), "", strings.Join(pubs, ", "))
}
