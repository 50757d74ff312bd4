package metrics

import (
	"context"
	"sync"

	"github.com/qgate/qgate/backends"
)

// NodeWatcher is the part of the pool (*nsq.Pool) that node metrics need.
type NodeWatcher interface {
	// Watch sends the current status of every node, then every change of
	// a node's state or Active flag, until ctx is done.
	Watch(ctx context.Context) <-chan backends.NodeEvent
}

// StartNodeWatch keeps qgate_node_state, qgate_node_active,
// qgate_failovers_total and qgate_failbacks_total up to date from w's
// events, in a goroutine of its own. stop ends it and waits for it; the
// goroutine also ends when w closes its channel (the pool closed).
func (m *Metrics) StartNodeWatch(ctx context.Context, w NodeWatcher) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	events := w.Watch(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.ObserveNodes(events)
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// ObserveNodes updates the node metrics from events until the channel is
// closed. StartNodeWatch runs it; call it directly to own the goroutine.
func (m *Metrics) ObserveNodes(events <-chan backends.NodeEvent) {
	t := newNodeTracker()
	for ev := range events {
		m.observeNode(t, ev)
	}
}

// nodeTracker remembers, per group, the priority of the member that takes
// its sends, to tell failovers from failbacks.
type nodeTracker struct {
	active map[string]int // group -> priority of its active member
}

func newNodeTracker() *nodeTracker {
	return &nodeTracker{active: make(map[string]int)}
}

var nodeStates = []backends.NodeState{backends.NodeUnknown, backends.NodeUp, backends.NodeDown, backends.NodeDraining}

func (m *Metrics) observeNode(t *nodeTracker, ev backends.NodeEvent) {
	n := ev.Node
	for _, s := range nodeStates {
		v := 0.0
		if s == n.State {
			v = 1
		}
		m.nodeState.WithLabelValues(n.Name, n.Group, s.String()).Set(v)
	}
	active := 0.0
	if n.Active {
		active = 1
	}
	m.nodeActive.WithLabelValues(n.Name, n.Group).Set(active)
	if !n.Active {
		return
	}
	// A member became its group's active one. The first active member
	// seen (the initial state) is neither a failover nor a failback.
	prev, seen := t.active[n.Group]
	t.active[n.Group] = n.Priority
	switch {
	case !seen || prev == n.Priority:
	case n.Priority > prev:
		m.failovers.WithLabelValues(n.Group).Inc()
	default:
		m.failbacks.WithLabelValues(n.Group).Inc()
	}
}
