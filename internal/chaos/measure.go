// After the load: the drain, the replica check, and the measurements a run
// adds to its report (what the nodes still hold, detection, recovery,
// availability).

package chaos

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/qgate/qgate/backends/nsq"
)

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
// backlog on slow, fsyncing nodes), and gives up when none came and what
// the nodes hold did not shrink for the ack deadline + 10 s (+ the standby
// delay with replicas: stuck) or at the limit (1 min, 5 min long). Past
// the limit it goes on while what the nodes hold keeps shrinking (checked
// every 30 s), up to three times the limit: with per-message fsync a
// node's topic pump can take minutes to move a nemesis's backlog into the
// channel, and a message still queued there is not lost.
func (h *Harness) drain(ctx context.Context) (time.Duration, string) {
	start := time.Now()
	limit := start.Add(h.d(time.Minute, 5*time.Minute))
	hardLimit := start.Add(3 * h.d(time.Minute, 5*time.Minute))
	// Stuck: no delivery for the ack deadline + 10 s; with replicas, plus
	// the standby delay, while standbys of acked messages surface and are
	// finished without a delivery.
	stuck := h.Sc.AckDeadline + 10*time.Second
	if h.replicas() > 1 {
		stuck += h.Sc.StandbyDelay
	}
	lastLeft := int64(-1)
	stuckLeft, stuckSince := int64(-1), start
	for ctx.Err() == nil {
		if now := time.Now(); !now.Before(limit) {
			left, ok := h.nodesLeft(ctx)
			if !ok || now.After(hardLimit) || (lastLeft >= 0 && left >= lastLeft) {
				break
			}
			lastLeft, limit = left, now.Add(30*time.Second) // shrinking: go on
		}
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
		left, ok := h.nodesLeft(ctx)
		if ok && left == 0 {
			return time.Since(start), fmt.Sprintf("nodes empty, nothing delivered for %v", quiet)
		}
		if ok && (stuckLeft < 0 || left < stuckLeft) {
			// The nodes still move messages (standbys and copies of acked
			// messages finished without a delivery): not stuck.
			stuckLeft, stuckSince = left, time.Now()
		}
		if time.Since(stuckSince) >= stuck && idle >= stuck {
			h.drainStuck = true
			return time.Since(start), fmt.Sprintf("nodes not empty (%d messages), nothing delivered and nothing left them for %v", left, stuck)
		}
	}
	left, _ := h.nodesLeft(ctx)
	return time.Since(start), fmt.Sprintf("time limit, nodes not empty (%d messages on them)", left)
}

// nodesLeft returns how many messages the running nodes hold for the
// run's topic and channel: not yet copied to the channel, ready, in flight
// or deferred; ok is false when a node does not answer.
func (h *Harness) nodesLeft(ctx context.Context) (total int64, ok bool) {
	for _, p := range h.cluster.procs {
		if !p.Running() {
			continue
		}
		st, err := fetchStats(ctx, p.HTTPAddr())
		if err != nil {
			return total, false
		}
		n, _ := left(st, h.topic, "chaos")
		if t := st.Topic(h.topic); t != nil {
			n += t.Depth
		}
		// Long delays wait on the timer topic.
		w, _ := left(st, nsq.DefaultTimerTopic, nsq.TimerChannel)
		if t := st.Topic(nsq.DefaultTimerTopic); t != nil {
			w += t.Depth
		}
		total += w
		total += n
	}
	return total, true
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

// addDuplicateExamples shows the first few ids delivered (acked) more than
// once: each delivery's subscriber, time from the first fault (or the
// load's start) and attempt, and how its send ended. That is where to
// start when a duplicate budget breaks.
func (h *Harness) addDuplicateExamples(r *Report, from time.Time) {
	acked := make(map[string][]DeliveryRecord)
	var order []string
	for _, d := range h.ledger.Deliveries() {
		if !d.Acked {
			continue
		}
		if len(acked[d.ID]) == 1 {
			order = append(order, d.ID)
		}
		acked[d.ID] = append(acked[d.ID], d)
	}
	if len(order) == 0 {
		return
	}
	sent := make(map[string]SendRecord)
	for _, s := range h.ledger.Sends() {
		for _, id := range s.IDs {
			if o, ok := sent[id]; !ok || rank(s.Outcome) < rank(o.Outcome) {
				sent[id] = s
			}
		}
	}
	rel := func(t time.Time) string { return fmt.Sprintf("%+.2fs", t.Sub(from).Seconds()) }
	var parts []string
	for _, id := range order[:min(3, len(order))] {
		s := sent[id]
		var ds []string
		for _, d := range acked[id] {
			ds = append(ds, fmt.Sprintf("%s %s attempt %d", d.Subscriber, rel(d.At), d.Attempt))
		}
		parts = append(parts, fmt.Sprintf("%s (send %s %s…%s): %s", id, s.Outcome, rel(s.Start), rel(s.End), strings.Join(ds, ", ")))
	}
	r.AddText("duplicates, first ids", float64(len(order)), "", strings.Join(parts, "; "))
}
