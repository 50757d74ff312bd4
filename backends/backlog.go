package backends

// NodeBacklog is what one node of a pool holds (Err set when it did not
// answer).
type NodeBacklog struct {
	Node   string
	Err    error
	Topics []TopicBacklog
}

// TopicBacklog is a topic's messages on a node, or summed over nodes.
type TopicBacklog struct {
	Topic string
	// Depth: messages not yet copied to any channel.
	Depth    int64
	Messages uint64 // received since the node started
	Paused   bool
	Channels []ChannelBacklog
}

// ChannelBacklog is a channel's messages on a node, or summed over nodes.
type ChannelBacklog struct {
	Channel string
	// Depth: queued, ready; InFlight: delivered, unacked; Deferred: due
	// later; Consumers: connections reading it.
	Depth, InFlight, Deferred, Consumers int64
	Paused                               bool
	// Since the node started.
	Messages, Requeued, TimedOut uint64
}

// ChannelOp is an operation on a channel on every node.
type ChannelOp int

// Channel operations.
const (
	// ChannelPause stops deliveries (messages keep queueing).
	ChannelPause ChannelOp = iota + 1
	// ChannelResume starts them again.
	ChannelResume
	// ChannelEmpty deletes the queued messages (not those in flight).
	ChannelEmpty
)

// NodeResult is one node's answer to an operation (Err nil: done).
type NodeResult struct {
	Node string
	Err  error
}
