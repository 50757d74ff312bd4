package backends

import "time"

// NodeState is the health of a node as a pool sees it.
type NodeState int

// Node states. A node starts Unknown, moves between Up and Down by health
// checks and send failures; Draining is set and cleared by an operator and is
// reported while the node is otherwise Up.
const (
	NodeUnknown NodeState = iota
	NodeUp
	NodeDown
	NodeDraining
)

func (s NodeState) String() string {
	switch s {
	case NodeUnknown:
		return "unknown"
	case NodeUp:
		return "up"
	case NodeDown:
		return "down"
	case NodeDraining:
		return "draining"
	}
	return "invalid"
}

// NodeStatus is a snapshot of one node of a pool, for operators.
type NodeStatus struct {
	Name         string
	TCPAddr      string
	HTTPAddr     string
	Group        string
	Priority     int // 0 = the group's primary
	State        NodeState
	Since        time.Time // when State was entered
	LastCheck    time.Time // zero before the first check
	CheckLatency time.Duration
	LastError    string
	Depth        uint64 // queued messages over all topics and channels, 0 if unknown
	InFlight     uint64
	Active       bool // takes sends of its group now
}

// NodeEvent reports a change of a node's state.
type NodeEvent struct {
	Node     NodeStatus
	Previous NodeState
}
