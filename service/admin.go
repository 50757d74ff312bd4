package service

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Pool is what Admin needs from a node pool (backends/nsq.Pool has it).
type Pool interface {
	// Nodes returns every node, in group then priority order.
	Nodes() []backends.NodeStatus
	// Watch returns the current state of every node (Previous equal to the
	// state), then every change, until ctx is done or the pool closes.
	Watch(ctx context.Context) <-chan backends.NodeEvent
	// SetDraining sets or clears a node's draining flag and returns the node
	// after the change; backends.ErrNotFound for an unknown name.
	SetDraining(name string, draining bool) (backends.NodeStatus, error)
	// Backlog returns what every node holds for topic ("": every topic),
	// in the order of Nodes.
	Backlog(ctx context.Context, topic string) []backends.NodeBacklog
	// ChannelOp carries out op on a channel on every node.
	ChannelOp(ctx context.Context, topic, channel string, op backends.ChannelOp) []backends.NodeResult
	// Send and Subscribe are the backend's, for Redrive.
	Send(ctx context.Context, topic string, msgs []*backends.Message, opts backends.SendOptions) error
	Subscribe(ctx context.Context, opts backends.SubscribeOptions) (backends.Subscription, error)
}

// Admin implements qgate.v1.AdminService over a Pool.
type Admin struct {
	qgatev1.UnimplementedAdminServiceServer

	pool Pool
	opts options

	shutOnce sync.Once
	done     chan struct{} // closed by BeginShutdown
}

var _ qgatev1.AdminServiceServer = (*Admin)(nil)

// NewAdmin returns an Admin for p. Of the options WithLogger and
// WithDefaultReplicas (the copies Redrive writes) apply.
func NewAdmin(p Pool, opts ...Option) *Admin {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Admin{pool: p, opts: o, done: make(chan struct{})}
}

// BeginShutdown ends every WatchNodes stream with UNAVAILABLE and makes new
// ones fail at once, so that an open watch does not hold a graceful stop.
// It returns at once; safe to call more than once.
func (a *Admin) BeginShutdown() {
	a.shutOnce.Do(func() { close(a.done) })
}

// ListNodes implements AdminService.ListNodes.
func (a *Admin) ListNodes(context.Context, *qgatev1.ListNodesRequest) (*qgatev1.ListNodesResponse, error) {
	nodes := a.pool.Nodes()
	out := make([]*qgatev1.Node, len(nodes))
	for i := range nodes {
		out[i] = nodeProto(&nodes[i])
	}
	return &qgatev1.ListNodesResponse{Nodes: out}, nil
}

// WatchNodes implements AdminService.WatchNodes. The pool's first events,
// one per node with Previous equal to its state, are reported as initial;
// the first event that is a change (or names a node a second time) ends
// them.
func (a *Admin) WatchNodes(_ *qgatev1.WatchNodesRequest, stream grpc.ServerStreamingServer[qgatev1.WatchNodesResponse]) error {
	select {
	case <-a.done:
		return errShutdown
	default:
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	events := a.pool.Watch(ctx)
	initial := true
	seen := make(map[string]bool)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := ctx.Err(); err != nil {
					return status.FromContextError(err).Err()
				}
				return toStatus(a.opts.logger, "watch nodes", backends.ErrClosed)
			}
			if initial && (ev.Previous != ev.Node.State || seen[ev.Node.Name]) {
				initial, seen = false, nil
			}
			resp := &qgatev1.WatchNodesResponse{Node: nodeProto(&ev.Node), Initial: initial}
			if initial {
				seen[ev.Node.Name] = true
			} else {
				resp.PreviousState = stateProto(ev.Previous)
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-a.done:
			return errShutdown
		}
	}
}

// DrainNode implements AdminService.DrainNode.
func (a *Admin) DrainNode(_ context.Context, req *qgatev1.DrainNodeRequest) (*qgatev1.DrainNodeResponse, error) {
	n, err := a.setDraining("drain node", req.GetName(), true)
	if err != nil {
		return nil, err
	}
	return &qgatev1.DrainNodeResponse{Node: n}, nil
}

// UndrainNode implements AdminService.UndrainNode.
func (a *Admin) UndrainNode(_ context.Context, req *qgatev1.UndrainNodeRequest) (*qgatev1.UndrainNodeResponse, error) {
	n, err := a.setDraining("undrain node", req.GetName(), false)
	if err != nil {
		return nil, err
	}
	return &qgatev1.UndrainNodeResponse{Node: n}, nil
}

func (a *Admin) setDraining(op, name string, draining bool) (*qgatev1.Node, error) {
	if name == "" {
		var v violations
		v.add("name", "is required")
		return nil, v.err(op + " request")
	}
	n, err := a.pool.SetDraining(name, draining)
	if err != nil {
		return nil, toStatus(a.opts.logger, op+" "+name, err)
	}
	return nodeProto(&n), nil
}

// nodeProto converts a node snapshot to its API form.
func nodeProto(n *backends.NodeStatus) *qgatev1.Node {
	out := &qgatev1.Node{
		Name:        n.Name,
		TcpAddress:  n.TCPAddr,
		HttpAddress: n.HTTPAddr,
		Group:       n.Group,
		Priority:    uint32(max(n.Priority, 0)),
		Role:        qgatev1.NodeRole_NODE_ROLE_BACKUP,
		State:       stateProto(n.State),
		StateSince:  timeProto(n.Since),
		LastCheck:   timeProto(n.LastCheck),
		LastError:   n.LastError,
		Depth:       n.Depth,
		InFlight:    n.InFlight,
		Active:      n.Active,
		OutReason:   outReasonProto(n.OutReason),
		OutUntil:    timeProto(n.OutUntil),
		Ejections:   uint32(max(n.Ejections, 0)),
	}
	if n.Priority <= 0 {
		out.Role = qgatev1.NodeRole_NODE_ROLE_PRIMARY
	}
	if !n.LastCheck.IsZero() {
		out.LastCheckLatency = durationpb.New(n.CheckLatency)
	}
	return out
}

// outReasonProto converts why a node is out to its API form.
func outReasonProto(r backends.OutReason) qgatev1.OutReason {
	switch r {
	case backends.OutDataPath:
		return qgatev1.OutReason_OUT_REASON_DATA_PATH
	case backends.OutHealthCheck:
		return qgatev1.OutReason_OUT_REASON_HEALTH_CHECK
	case backends.OutDrain:
		return qgatev1.OutReason_OUT_REASON_DRAIN
	}
	return qgatev1.OutReason_OUT_REASON_UNSPECIFIED
}

func timeProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func stateProto(s backends.NodeState) qgatev1.NodeState {
	switch s {
	case backends.NodeUnknown:
		return qgatev1.NodeState_NODE_STATE_UNKNOWN
	case backends.NodeUp:
		return qgatev1.NodeState_NODE_STATE_UP
	case backends.NodeDown:
		return qgatev1.NodeState_NODE_STATE_DOWN
	case backends.NodeDraining:
		return qgatev1.NodeState_NODE_STATE_DRAINING
	}
	return qgatev1.NodeState_NODE_STATE_UNSPECIFIED
}
