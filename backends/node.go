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

// OutReason says why a node takes no new sends.
type OutReason int

// Reasons a node is out. A node out for several reasons reports the first
// that applies in this order: drain, data path, health check.
const (
	OutNone OutReason = iota
	// OutDataPath: ejected because sends to it failed or timed out; it stays
	// out until NodeStatus.OutUntil, whatever its health checks say.
	OutDataPath
	// OutHealthCheck: its health checks (/ping) fail.
	OutHealthCheck
	// OutDrain: an operator drained it.
	OutDrain
)

func (r OutReason) String() string {
	switch r {
	case OutNone:
		return "none"
	case OutDataPath:
		return "data_path"
	case OutHealthCheck:
		return "health_check"
	case OutDrain:
		return "drain"
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
	// OutReason says why the node takes no new sends; OutNone while it does.
	OutReason OutReason
	// OutUntil is when a data-path ejection ends (the node is then
	// re-admitted on probation if its checks pass); zero otherwise.
	OutUntil time.Time
	// Ejections is the node's data-path ejection count (decays while
	// clean); above zero it is on probation or ejected.
	Ejections int
}

// NodeEvent reports a change of a node's state.
type NodeEvent struct {
	Node     NodeStatus
	Previous NodeState
}
