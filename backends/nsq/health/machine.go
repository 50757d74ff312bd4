package health

import "github.com/qgate/qgate/backends"

// Machine is the fall/rise state machine of one node, without time or I/O.
// The zero Machine is Unknown with Fall and Rise of 1; set Fall and Rise
// before the first Observe. It is not safe for concurrent use.
type Machine struct {
	// Fall and Rise are the thresholds; values below 1 count as 1.
	Fall, Rise int

	state  backends.NodeState
	passes int // consecutive passed checks
	fails  int // consecutive failed checks (an ejection counts as one)
}

// State returns the current state: NodeUnknown, NodeUp or NodeDown.
func (m *Machine) State() backends.NodeState { return m.state }

// Counts returns the consecutive passed and failed observations; at most
// one of them is non-zero.
func (m *Machine) Counts() (passes, fails int) { return m.passes, m.fails }

// Observe records one check result and returns the state before and after.
// From Unknown the first result decides; Up needs Fall consecutive failures
// to go Down; Down needs Rise consecutive passes to go Up.
func (m *Machine) Observe(ok bool) (old, now backends.NodeState) {
	old = m.state
	if ok {
		m.passes++
		m.fails = 0
	} else {
		m.fails++
		m.passes = 0
	}
	switch {
	case m.state == backends.NodeUnknown && ok:
		m.state = backends.NodeUp
	case m.state == backends.NodeUnknown:
		m.state = backends.NodeDown
	case m.state == backends.NodeUp && m.fails >= max(m.Fall, 1):
		m.state = backends.NodeDown
	case m.state == backends.NodeDown && m.passes >= max(m.Rise, 1):
		m.state = backends.NodeUp
	}
	return old, m.state
}

// Eject marks the node Down at once, whatever its state, and resets the
// rise counter, so it needs Rise passed checks to come back.
func (m *Machine) Eject() (old, now backends.NodeState) {
	old = m.state
	m.state = backends.NodeDown
	m.passes = 0
	m.fails++
	return old, m.state
}
