package chaos

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd"
)

// durable makes nsqd write every message to disk at once (no memory
// queue), so a SIGKILL loses only what is in flight or deferred.
var durable = []string{"--mem-queue-size=0"}

// synced is durable plus a metadata sync (and fsync) after every message,
// so a restarted nsqd's diskqueue metadata is never stale.
var synced = []string{"--mem-queue-size=0", "--sync-every=1"}

// diskqueueNote explains S1-durable's losses.
const diskqueueNote = "with --mem-queue-size=0 (metadata synced every 2 s) the restarted nsqd finds stale diskqueue metadata, re-reads old messages (the duplicates), then logs 'readPos > writePos … corruption, skipping to next writeFileNum' and deletes its queue files, including messages acked just after the restart: see 'lost, by send time'"

// never tolerates nothing; used for promises.
const never = 0

var (
	noUnexpected = Promise{Metric: "unexpected", Max: never, Why: "nothing is delivered that was not sent"}
	noMismatch   = Promise{Metric: "id mismatches", Max: never, Why: "a delivery carries the message id Send returned for its body"}
	noLoss       = Promise{Metric: "lost", Max: never, Why: "an acked send is delivered"}
	noFalseDowns = Promise{Metric: "false failovers", Max: never, Why: "no healthy node is marked down"}
	noFailedSeen = Promise{Metric: "failed but delivered", Max: never, Why: "a rejected send writes nothing"}
)

// Scenarios returns every scenario, in order.
func Scenarios() []Scenario {
	return []Scenario{
		s1("S1", "SIGKILL 1 of 3 nodes under load, restart it before draining (replicas=1, default nsqd)", nil),
		s1("S1-durable", "SIGKILL 1 of 3 nodes under load, restart it before draining (replicas=1, --mem-queue-size=0)", durable, diskqueueNote),
		s1("S1-synced", "SIGKILL 1 of 3 nodes under load, restart it before draining (replicas=1, --mem-queue-size=0 --sync-every=1)", synced,
			"--sync-every=1 syncs the diskqueue metadata after every message, so the restarted nsqd's recovery has nothing stale to trip on"),
		s1r(1), s1r(2), s1dedup(),
		s2(), s3(), s4(), s5(), s6(), s7(), s8(), s9(), s10(), s11(), s12(),
		s13(nsq.ModeCluster, 1), s13(nsq.ModeCluster, 2), s13(nsq.ModeFailover, 1), s13(nsq.ModeFailover, 2),
		s14(), s15(2), s15(1), s16(), s17(), s18(2), s18(1), s19(), s20(), s21(),
	}
}

// Lookup returns the named scenario (case-insensitive).
func Lookup(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
	}
	return Scenario{}, false
}

// killOne is the schedule of S1: SIGKILL n2, wait, restart it.
func killOne(what string) func(ctx context.Context, h *Harness) error {
	return func(ctx context.Context, h *Harness) error {
		f := h.Begin(what, "n2")
		if err := h.Signal(ctx, "n2", what); err != nil {
			return err
		}
		if err := h.Sleep(ctx, h.d(3*time.Second, 20*time.Second)); err != nil {
			return err
		}
		if err := h.Signal(ctx, "n2", "restart"); err != nil {
			return err
		}
		h.Heal(f)
		return h.WaitNodesUp(ctx)
	}
}

func s1(name, title string, args []string, extra ...string) Scenario {
	notes := append([]string{
		"lost is reported, not promised: with one copy, what lived only in the killed nsqd's memory and was not yet delivered is gone (nsq #510, #1386); the node is restarted before the drain, so what it had on disk comes back",
	}, extra...)
	return Scenario{
		Name: name, Title: title, NodeArgs: args, Replicas: 1,
		Fault:    killOne("SIGKILL"),
		Promises: []Promise{noUnexpected, noMismatch, noFailedSeen},
		Notes:    notes,
	}
}

// slowConsumers is the setup of the replica scenarios: two subscribers
// with 20 in flight each that ack 300 ms after receipt consume about 130
// msg/s of the 200 sent, so a backlog builds on every node and messages are
// in flight when a node dies.
func slowConsumers(_ context.Context, h *Harness) error {
	h.decide = func(*qgatev1.Delivery) (Action, time.Duration) { return AckLater, 300 * time.Millisecond }
	return nil
}

// killForGood SIGKILLs n2 and never restarts it.
func killForGood(ctx context.Context, h *Harness) error {
	h.Begin("SIGKILL", "n2")
	if err := h.Signal(ctx, "n2", "SIGKILL"); err != nil {
		return err
	}
	return h.Sleep(ctx, h.d(3*time.Second, 20*time.Second))
}

// s1r is S1 with a permanent loss of n2 under a backlog, with replicas
// copies of each message.
func s1r(replicas int) Scenario {
	sc := Scenario{
		Name:     fmt.Sprintf("S1-replicas%d", replicas),
		Title:    fmt.Sprintf("SIGKILL 1 of 3 nodes holding a backlog, never restarted (replicas=%d, slow consumers)", replicas),
		Replicas: replicas, MaxInFlight: 20, Setup: slowConsumers, Fault: killForGood,
		Promises: []Promise{noUnexpected, noMismatch, noFailedSeen},
		Notes:    []string{"consumers take ~130 of 200 msg/s, so every node holds a backlog and messages in flight when n2 dies for good"},
	}
	if replicas >= 2 {
		sc.NeedsReplicas = true
		sc.Promises = append(sc.Promises, noLoss)
		sc.Notes = append(sc.Notes, "duplicates are expected: the two copies of a message often reach different subscribers of the channel, and each subscription deduplicates only what it saw")
	} else {
		sc.Notes = append(sc.Notes, "lost is reported, not promised: the control for S1-replicas2 — n2's backlog and in-flight messages die with it")
	}
	return sc
}

// s1dedup checks replicated sends' deduplication: one subscription sees
// both copies of every message and delivers one.
func s1dedup() Scenario {
	return Scenario{
		Name: "S1-replicas2-one", Title: "SIGKILL 1 of 3 nodes under load, never restarted (replicas=2, 1 subscriber)",
		Subscribers: 1, Replicas: 2, NeedsReplicas: true, Fault: killForGood,
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen,
			{Metric: "duplicated before the fault", Max: never, Why: "with no fault, one subscription delivers one copy of a replicated message"}},
		Measure: func(h *Harness, r *Report) {
			at := h.faults[0].At
			n := make(map[string]int)
			dups := 0
			for _, d := range h.ledger.Deliveries() {
				if d.Acked && d.At.Before(at) {
					if n[d.ID]++; n[d.ID] == 2 {
						dups++
					}
				}
			}
			r.Add("duplicated before the fault", float64(dups), "")
		},
		Notes: []string{"one subscription sees both copies of every message and must deliver one"},
	}
}

func s2() Scenario {
	return Scenario{
		Name: "S2", Title: "SIGTERM 1 of 3 nodes under load, restart it",
		Fault:    killOne("SIGTERM"),
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen},
		Notes:    []string{"nsqd flushes memory, in-flight and deferred messages to disk on SIGTERM; the restart delivers them"},
	}
}

func s3() Scenario {
	return Scenario{
		Name: "S3", Title: "SIGSTOP 1 of 3 nodes under load, then SIGCONT",
		Fault: func(ctx context.Context, h *Harness) error {
			f := h.Begin("SIGSTOP", "n2")
			if err := h.Signal(ctx, "n2", "SIGSTOP"); err != nil {
				return err
			}
			if err := h.Sleep(ctx, h.d(4*time.Second, 30*time.Second)); err != nil {
				return err
			}
			if err := h.Signal(ctx, "n2", "SIGCONT"); err != nil {
				return err
			}
			h.Heal(f)
			return h.WaitNodesUp(ctx)
		},
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen,
			{Metric: "detect", Max: 2000, Why: "a frozen node is taken out within 2 s"}},
	}
}

func s4() Scenario {
	return Scenario{
		Name: "S4", Title: "SIGKILL and restart 1 of 3 nodes every ~1.5 s (--mem-queue-size=0 --sync-every=1)",
		NodeArgs: synced,
		Fault: func(ctx context.Context, h *Harness) error {
			cycles := 3
			if h.P.Long {
				cycles = 15
			}
			for range cycles {
				f := h.Begin("SIGKILL", "n2")
				if err := h.Signal(ctx, "n2", "SIGKILL"); err != nil {
					return err
				}
				if err := h.Sleep(ctx, 700*time.Millisecond); err != nil {
					return err
				}
				if err := h.Signal(ctx, "n2", "restart"); err != nil {
					return err
				}
				h.Heal(f)
				if err := h.Sleep(ctx, 800*time.Millisecond); err != nil {
					return err
				}
			}
			return h.WaitNodesUp(ctx)
		},
		Promises: []Promise{noUnexpected, noMismatch, noFailedSeen},
		Notes:    []string{"lost is reported, not promised: each SIGKILL loses the killed node's in-flight messages"},
	}
}

func s5() Scenario {
	return Scenario{
		Name: "S5", Title: "all 3 nodes down (SIGTERM), then back",
		Fault: func(ctx context.Context, h *Harness) error {
			f := h.Begin("SIGTERM", "n1", "n2", "n3")
			for _, n := range []string{"n1", "n2", "n3"} {
				if err := h.Signal(ctx, n, "SIGTERM"); err != nil {
					return err
				}
			}
			if err := h.Sleep(ctx, h.d(3*time.Second, 30*time.Second)); err != nil {
				return err
			}
			for _, n := range []string{"n1", "n2", "n3"} {
				if err := h.Signal(ctx, n, "restart"); err != nil {
					return err
				}
			}
			h.Heal(f)
			return h.WaitNodesUp(ctx)
		},
		Measure: func(h *Harness, r *Report) {
			// How soon after the nodes came back did sends succeed again.
			f := h.faults[0]
			first := time.Time{}
			for _, s := range h.ledger.Sends() {
				if s.Outcome == Acked && s.Start.After(f.Healed) && (first.IsZero() || s.End.Before(first)) {
					first = s.End
				}
			}
			r.AddDuration("sends back after heal", first.Sub(f.Healed), !first.IsZero())
		},
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen,
			{Metric: "sends back after heal", Max: 3000, Why: "sends succeed within 3 s of the nodes' return"}},
		Notes: []string{"sends fail (UNAVAILABLE) while no node is up: that is the expected error window"},
	}
}

func s6() Scenario {
	return Scenario{
		Name: "S6", Title: "failover: SIGTERM the primary of 2, restart it (failback)",
		Nodes: 2, Mode: nsq.ModeFailover,
		Fault: killOne0(),
		Measure: func(h *Harness, r *Report) {
			f := h.faults[0]
			var at time.Time
			for _, e := range h.watch.snapshot() {
				if e.Node == "n1" && e.State == "up" && e.Active && e.At.After(f.Healed) {
					at = e.At
					break
				}
			}
			r.AddDuration("failback", at.Sub(f.Healed), !at.IsZero())
		},
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen},
		Notes:    []string{"failback waits for the pool's failback hold (1 s here) after the primary is up again"},
	}
}

// killOne0 is S6's schedule on the primary n1.
func killOne0() func(ctx context.Context, h *Harness) error {
	return func(ctx context.Context, h *Harness) error {
		f := h.Begin("SIGTERM", "n1")
		if err := h.Signal(ctx, "n1", "SIGTERM"); err != nil {
			return err
		}
		if err := h.Sleep(ctx, h.d(3*time.Second, 20*time.Second)); err != nil {
			return err
		}
		if err := h.Signal(ctx, "n1", "restart"); err != nil {
			return err
		}
		h.Heal(f)
		if err := h.WaitNodesUp(ctx); err != nil {
			return err
		}
		// Load continues past the failback hold so sends go back to n1.
		return h.Sleep(ctx, 1500*time.Millisecond)
	}
}

func s7() Scenario {
	return Scenario{
		Name: "S7", Title: "ha: SIGKILL both nodes of group g1 (of 2 groups × 2), restart them (--mem-queue-size=0 --sync-every=1)",
		Nodes: 4, Mode: nsq.ModeHA, Layout: [][]int{{0, 1}, {2, 3}}, NodeArgs: synced,
		Fault: func(ctx context.Context, h *Harness) error {
			f := h.Begin("SIGKILL", "n1", "n2")
			for _, n := range []string{"n1", "n2"} {
				if err := h.Signal(ctx, n, "SIGKILL"); err != nil {
					return err
				}
			}
			if err := h.Sleep(ctx, h.d(3*time.Second, 20*time.Second)); err != nil {
				return err
			}
			for _, n := range []string{"n1", "n2"} {
				if err := h.Signal(ctx, n, "restart"); err != nil {
					return err
				}
			}
			h.Heal(f)
			return h.WaitNodesUp(ctx)
		},
		Promises: []Promise{noUnexpected, noMismatch, noFailedSeen},
		Notes:    []string{"sends spill to group g2 while g1 is down; lost is reported (in-flight messages of the killed nodes)"},
	}
}

// gatewayRestart stops qgate (gracefully or abruptly) mid-stream and
// starts it again on the same address and nodes after a second.
func gatewayRestart(kill bool) func(ctx context.Context, h *Harness) error {
	kind := "qgate graceful stop"
	if kill {
		kind = "qgate SIGKILL"
	}
	return func(ctx context.Context, h *Harness) error {
		f := h.Begin(kind)
		start := time.Now()
		if err := h.StopGateway(kill); err != nil {
			return err
		}
		h.stopTook = time.Since(start)
		if err := h.Sleep(ctx, time.Second); err != nil {
			return err
		}
		if err := h.StartGateway(ctx); err != nil {
			return err
		}
		h.Heal(f)
		return nil
	}
}

// measureGateway adds the gateway restart figures: how soon sends
// succeeded after the restart, and how late messages handed out before the
// stop were redelivered.
func measureGateway(h *Harness, r *Report) {
	f := h.faults[0]
	first := time.Time{}
	for _, s := range h.ledger.Sends() {
		if s.Outcome == Acked && s.Start.After(f.Healed) && (first.IsZero() || s.End.Before(first)) {
			first = s.End
		}
	}
	r.AddDuration("qgate stop took", h.stopTook, true)
	r.AddDuration("sends back after restart", first.Sub(f.Healed), !first.IsZero())
	// The first redelivery after the stop of each message: messages that
	// were in flight to the stopped qgate, coming back. (Later attempts are
	// duplicates of another kind and not counted here.)
	var worst time.Duration
	n := 0
	seen := make(map[string]bool)
	for _, d := range h.ledger.Deliveries() {
		if d.At.After(f.At) && d.Attempt > 1 && !seen[d.ID] {
			seen[d.ID] = true
			n++
			worst = max(worst, d.At.Sub(f.At))
		}
	}
	r.Add("redelivered after stop", float64(n), "")
	r.AddDuration("redelivery (max, from stop)", worst, n > 0)
	r.AddDuration("redelivery (max, from restart)", worst-f.Healed.Sub(f.At), n > 0)
}

// slowAck acks every delivery 300 ms after receiving it, so that messages
// are in flight when qgate stops.
func slowAck(_ context.Context, h *Harness) error {
	h.decide = func(*qgatev1.Delivery) (Action, time.Duration) { return AckLater, 300 * time.Millisecond }
	return nil
}

func s8() Scenario {
	return Scenario{
		Name: "S8", Title: "qgate graceful stop mid-stream, restarted on the same nodes",
		Setup: slowAck, Fault: gatewayRestart(false), Measure: measureGateway,
		WaitRedelivery: true,
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen,
			{Metric: "qgate stop took", Max: 3000, Why: "a graceful stop ends every stream (WatchNodes after the server's 1 s grace) instead of waiting for the 10 s shutdown timeout"},
			{Metric: "redelivery (max, from restart)", Max: 2000,
				Why: "deliveries handed back at the stop come again right after the restart, not after the ack deadline"}},
		Notes: []string{"subscribers ack 300 ms after receipt, so deliveries are in flight at the stop",
			"a graceful stop ends Subscribe streams and hands their unacked deliveries back at once"},
	}
}

func s9() Scenario {
	return Scenario{
		Name: "S9", Title: "qgate SIGKILL mid-stream (child process), restarted on the same nodes",
		Child: true, Setup: slowAck, Fault: gatewayRestart(true), Measure: measureGateway,
		WaitRedelivery: true,
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen,
			{Metric: "redelivery (max, from stop)", Max: 3000 + 3000 + 2000,
				Why: "unacked deliveries of the killed qgate return within the ack deadline (nsqd msg_timeout, 3 s) + the restart (≤ 3 s) + 2 s"}},
		Notes: []string{"subscribers ack 300 ms after receipt, so deliveries are in flight at the kill",
			"nothing is handed back by a killed qgate: nsqd redelivers after the ack deadline, which the pool sets as the consumer's msg_timeout"},
	}
}

func s10() Scenario {
	var held atomic.Int64
	return Scenario{
		Name: "S10", Title: "a subscriber that never acks, beside two that do",
		AckDeadline: 2 * time.Second,
		Setup: func(ctx context.Context, h *Harness) error {
			held.Store(0)
			stop, err := h.AddSubscriber(ctx, "holder", 20, func(*qgatev1.Delivery) (Action, time.Duration) {
				held.Add(1)
				return Hold, 0
			})
			h.holderStop = stop
			return err
		},
		Fault: func(ctx context.Context, h *Harness) error {
			f := h.Begin("subscriber never acks")
			err := h.Sleep(ctx, h.d(4*time.Second, 30*time.Second))
			// End the holder's stream: what it holds must come back at
			// once, not after the ack deadline.
			h.holderStop()
			h.Heal(f)
			return err
		},
		Measure: func(h *Harness, r *Report) {
			stop := h.faults[0].Healed
			heldThenAcked := 0
			heldIDs := make(map[string]bool)
			atStop := make(map[string]bool) // held when the stream ended
			var handBack time.Duration
			for _, d := range h.ledger.Deliveries() {
				switch {
				case d.Subscriber == "holder":
					heldIDs[d.ID] = true
					if d.At.After(stop.Add(-h.Sc.AckDeadline)) && d.At.Before(stop) {
						atStop[d.ID] = true
					}
				case d.Acked && heldIDs[d.ID]:
					heldThenAcked++
					heldIDs[d.ID] = false
					if atStop[d.ID] && d.At.After(stop) {
						handBack = max(handBack, d.At.Sub(stop))
						atStop[d.ID] = false
					}
				}
			}
			r.Add("held by the non-acker", float64(held.Load()), "")
			r.Add("held, then delivered elsewhere", float64(heldThenAcked), "")
			r.AddDuration("hand-back after stream end (max)", handBack, true)
		},
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen,
			{Metric: "hand-back after stream end (max)", Max: 1000, Why: "a stream that ends hands its unacked messages back at once, not after the 2 s ack deadline"}},
		Notes: []string{"the non-acker holds up to 20 messages; each returns after the 2 s ack deadline, and all return when its stream ends"},
	}
}

func s11() Scenario {
	var before []map[nsqd.ConnKey]bool
	var bad malformed
	return Scenario{
		Name: "S11", Title: "malformed sends mixed into the load",
		Fault: func(ctx context.Context, h *Harness) error {
			var err error
			if before, err = h.conns(ctx); err != nil {
				return err
			}
			f := h.Begin("malformed sends")
			bad = malformed{}
			end := time.Now().Add(h.d(4*time.Second, 30*time.Second))
			for time.Now().Before(end) && ctx.Err() == nil {
				bad.send(ctx, h.queue)
				time.Sleep(10 * time.Millisecond)
			}
			h.Heal(f)
			return nil
		},
		Measure: func(h *Harness, r *Report) {
			after, err := h.conns(context.Background())
			reconnects := math.NaN()
			if err == nil {
				reconnects = 0
				for i := range after {
					for c := range after[i] {
						if !before[i][c] {
							reconnects++
						}
					}
				}
			}
			r.Add("malformed sends", float64(bad.sent), "")
			r.AddText("malformed not rejected", float64(bad.notRejected), "", fmt.Sprintf("%d %v", bad.notRejected, bad.examples))
			r.Add("nsqd reconnects", reconnects, "")
		},
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFalseDowns, noFailedSeen,
			{Metric: "malformed not rejected", Max: never, Why: "bad input gets INVALID_ARGUMENT"},
			{Metric: "nsqd reconnects", Max: never, Why: "bad input never reaches nsqd (which would close the connection)"}},
	}
}

// conns snapshots every node's client connections.
func (h *Harness) conns(ctx context.Context) ([]map[nsqd.ConnKey]bool, error) {
	var out []map[nsqd.ConnKey]bool
	for _, p := range h.cluster.procs {
		st, err := fetchStats(ctx, p.HTTPAddr())
		if err != nil {
			return nil, err
		}
		out = append(out, conns(st))
	}
	return out, nil
}

// malformed sends one bad request of each kind in turn.
type malformed struct {
	sent, notRejected int
	examples          []string
}

func (m *malformed) send(ctx context.Context, q qgatev1.QueueServiceClient) {
	big := make([]byte, 1<<20+1)
	cases := []struct {
		name string
		req  *qgatev1.SendRequest
	}{
		{"bad topic", &qgatev1.SendRequest{Topic: "bad topic!", Messages: []*qgatev1.Message{{Body: []byte("x")}}}},
		{"long topic", &qgatev1.SendRequest{Topic: strings.Repeat("t", 65), Messages: []*qgatev1.Message{{Body: []byte("x")}}}},
		{"empty body", &qgatev1.SendRequest{Topic: "chaos", Messages: []*qgatev1.Message{{}}}},
		{"no messages", &qgatev1.SendRequest{Topic: "chaos"}},
		{"oversized body", &qgatev1.SendRequest{Topic: "chaos", Messages: []*qgatev1.Message{{Body: big}}}},
		{"empty attribute key", &qgatev1.SendRequest{Topic: "chaos", Messages: []*qgatev1.Message{{Body: []byte("x"), Attributes: map[string]string{"": "v"}}}}},
		{"ephemeral edge", &qgatev1.SendRequest{Topic: "#ephemeral", Messages: []*qgatev1.Message{{Body: []byte("x")}}}},
	}
	c := cases[m.sent%len(cases)]
	m.sent++
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := q.Send(sctx, c.req)
	if o, code := classify(err); o != Failed || code != "InvalidArgument" {
		m.notRejected++
		if len(m.examples) < 5 {
			m.examples = append(m.examples, fmt.Sprintf("%s: %s", c.name, code))
		}
	}
}

func s12() Scenario {
	return Scenario{
		Name: "S12", Title: "deferred sends and nacks with delay, then SIGTERM the node holding them",
		Nodes: 2, Mode: nsq.ModeFailover,
		Setup: func(_ context.Context, h *Harness) error {
			h.AddPublisher("p1", h.rate/2, 0)
			h.AddPublisher("deferred", h.rate/2, 3*time.Second)
			// The first delivery of every third immediate message is
			// nacked with a 2 s delay.
			h.decide = func(d *qgatev1.Delivery) (Action, time.Duration) {
				id := string(d.GetBody())
				if d.GetAttempt() == 1 && strings.HasPrefix(id, "p1-") && id[len(id)-1]%3 == 0 {
					h.nacked.Store(id, time.Now().Add(2*time.Second))
					return Nack, 2 * time.Second
				}
				return AckNow, 0
			}
			return nil
		},
		Fault: func(ctx context.Context, h *Harness) error {
			// The failover primary n1 holds every message.
			f := h.Begin("SIGTERM", "n1")
			if err := h.Signal(ctx, "n1", "SIGTERM"); err != nil {
				return err
			}
			if err := h.Sleep(ctx, h.d(2*time.Second, 10*time.Second)); err != nil {
				return err
			}
			if err := h.Signal(ctx, "n1", "restart"); err != nil {
				return err
			}
			h.Heal(f)
			return h.WaitNodesUp(ctx)
		},
		Measure: func(h *Harness, r *Report) {
			early, deferred, nackedEarly := 0, 0, 0
			for _, d := range h.ledger.Deliveries() {
				if v, ok := h.due.Load(d.ID); ok {
					deferred++
					if d.At.Before(v.(time.Time).Add(-100 * time.Millisecond)) {
						early++
					}
				}
				if v, ok := h.nacked.Load(d.ID); ok && d.Attempt > 1 && d.At.Before(v.(time.Time).Add(-100*time.Millisecond)) {
					nackedEarly++
				}
			}
			r.Add("deferred deliveries", float64(deferred), "")
			r.Add("deferred delivered early", float64(early), "")
			r.Add("nack delay cut short", float64(nackedEarly), "")
		},
		Promises: []Promise{noUnexpected, noMismatch, noLoss, noFailedSeen},
		Notes: []string{
			"nsqd writes deferred and in-flight messages to disk on SIGTERM without their delay: after the restart they are delivered at once, so 'early' counts are NSQ behaviour, reported not promised",
		},
	}
}
