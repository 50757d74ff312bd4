package chaos

import "time"

// NodeEvent is a change of a node's state as the pool reported it
// (AdminService.WatchNodes), with the time the harness saw it.
type NodeEvent struct {
	At       time.Time
	Node     string
	State    string // "up", "down", "draining", "unknown"
	Previous string // "" for the initial state
	Active   bool   // the node takes its group's sends
}

// Fault is one injected fault: its kind ("SIGKILL", "SIGSTOP", ...), the
// nodes it hit (names as the pool knows them), when it began and when it
// was healed (zero if never).
type Fault struct {
	Kind   string
	Nodes  []string
	At     time.Time
	Healed time.Time
}

// Timing is how fast the pool noticed a fault and the fault's end.
type Timing struct {
	// Detect is from the fault to the pool marking the last of its nodes
	// down; Detected is false if some node was never marked down.
	Detect   time.Duration
	Detected bool
	// Recover is from the heal to the pool marking the last of its nodes up
	// again; Recovered is false if some node did not come back up.
	Recover   time.Duration
	Recovered bool
}

// Timings measures f against the pool's events.
func Timings(f Fault, events []NodeEvent) Timing {
	var t Timing
	if len(f.Nodes) == 0 {
		return t
	}
	t.Detected, t.Recovered = true, !f.Healed.IsZero()
	for _, n := range f.Nodes {
		down, ok := firstState(events, n, "down", f.At)
		if !ok {
			t.Detected = false
		} else if d := down.Sub(f.At); d > t.Detect {
			t.Detect = d
		}
		if f.Healed.IsZero() {
			continue
		}
		from := f.Healed
		if ok && down.After(from) {
			from = down
		}
		up, ok := firstState(events, n, "up", from)
		if !ok {
			t.Recovered = false
		} else if d := up.Sub(f.Healed); d > t.Recover {
			t.Recover = d
		}
	}
	return t
}

// firstState returns the time of the first event at or after from that
// puts node in state.
func firstState(events []NodeEvent, node, state string, from time.Time) (time.Time, bool) {
	for _, e := range events {
		if e.Node == node && e.State == state && e.Previous != state && !e.At.Before(from) {
			return e.At, true
		}
	}
	return time.Time{}, false
}

// Downs counts transitions to down of nodes that no fault hit: false
// failovers.
func Downs(events []NodeEvent, faults []Fault) int {
	hit := make(map[string]bool)
	for _, f := range faults {
		for _, n := range f.Nodes {
			hit[n] = true
		}
	}
	n := 0
	for _, e := range events {
		if e.State == "down" && e.Previous != "" && e.Previous != "down" && !hit[e.Node] {
			n++
		}
	}
	return n
}
