// AdminService's backlog tools: GetBacklog, PauseChannel, ResumeChannel,
// EmptyChannel and Redrive.

package service

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qgate/qgate/backends"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
)

// Attributes Redrive adds, and the one it reads for the destination
// (written by the nsq backend's dead-lettering).
const (
	AttrRedrivenFrom    = "qgate-redriven-from"
	AttrRedrivenID      = "qgate-redriven-id"
	AttrRedrivenTime    = "qgate-redriven-time"
	attrDeadLetterTopic = "qgate-dead-letter-topic"
)

// Limits of Redrive.
const (
	DefaultRedriveMessages    = 1000
	MaxRedriveMessages        = 100_000
	DefaultRedriveIdleTimeout = 2 * time.Second
	MaxRedriveIdleTimeout     = time.Minute
	// redriveHeld: the most messages without a destination a Redrive
	// holds before it ends.
	redriveHeld = 100
)

// redriveID is the id a redriven message gets: not its own (the channel it
// was dead-lettered from remembers that id as settled for the dedup
// window, and would drop the copy), but one derived from it and its
// dead letter's publish time, so that a retried redrive of the same dead
// letter is the same message, and a message dead-lettered and redriven
// again gets another.
func redriveID(d *backends.Delivery) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", d.ID, d.PublishTime.UnixNano()))
	return "rd-" + hex.EncodeToString(h[:16])
}

// GetBacklog implements AdminService.GetBacklog.
func (a *Admin) GetBacklog(ctx context.Context, req *qgatev1.GetBacklogRequest) (*qgatev1.GetBacklogResponse, error) {
	if t := req.GetTopic(); t != "" {
		var v violations
		v.checkName("topic", t)
		if err := v.err("get backlog request"); err != nil {
			return nil, err
		}
	}
	nodes := a.pool.Backlog(ctx, req.GetTopic())
	resp := &qgatev1.GetBacklogResponse{}
	sums := map[string]*qgatev1.TopicBacklog{}
	answered := 0
	for _, n := range nodes {
		nb := &qgatev1.NodeBacklog{Node: n.Node}
		if n.Err != nil {
			nb.Error = n.Err.Error()
			resp.Nodes = append(resp.Nodes, nb)
			continue
		}
		answered++
		for _, t := range n.Topics {
			nb.Topics = append(nb.Topics, topicProto(t))
			sum := sums[t.Topic]
			if sum == nil {
				sum = &qgatev1.TopicBacklog{Topic: t.Topic, Paused: true}
				sums[t.Topic] = sum
			}
			addTopic(sum, t)
		}
		resp.Nodes = append(resp.Nodes, nb)
	}
	if answered == 0 && len(nodes) > 0 {
		return nil, status.Errorf(codes.Unavailable, "get backlog: no node answered (%s: %s)", nodes[0].Node, nodes[0].Err)
	}
	for _, name := range slices.Sorted(maps.Keys(sums)) {
		resp.Topics = append(resp.Topics, sums[name])
	}
	return resp, nil
}

func topicProto(t backends.TopicBacklog) *qgatev1.TopicBacklog {
	out := &qgatev1.TopicBacklog{Topic: t.Topic, Depth: t.Depth, MessageCount: t.Messages, Paused: t.Paused}
	for _, c := range t.Channels {
		out.Channels = append(out.Channels, channelProto(c))
	}
	return out
}

func channelProto(c backends.ChannelBacklog) *qgatev1.ChannelBacklog {
	return &qgatev1.ChannelBacklog{Channel: c.Channel, Depth: c.Depth, InFlight: c.InFlight, Deferred: c.Deferred,
		Consumers: c.Consumers, Paused: c.Paused, MessageCount: c.Messages, RequeueCount: c.Requeued, TimeoutCount: c.TimedOut}
}

// addTopic adds one node's figures of a topic to its sum (paused: on
// every node; a sum starts paused).
func addTopic(sum *qgatev1.TopicBacklog, t backends.TopicBacklog) {
	sum.Depth += t.Depth
	sum.MessageCount += t.Messages
	sum.Paused = sum.Paused && t.Paused
	for _, c := range t.Channels {
		i := slices.IndexFunc(sum.Channels, func(x *qgatev1.ChannelBacklog) bool { return x.GetChannel() == c.Channel })
		if i < 0 {
			sum.Channels = append(sum.Channels, &qgatev1.ChannelBacklog{Channel: c.Channel, Paused: true})
			i = len(sum.Channels) - 1
		}
		x := sum.Channels[i]
		x.Depth += c.Depth
		x.InFlight += c.InFlight
		x.Deferred += c.Deferred
		x.Consumers += c.Consumers
		x.Paused = x.Paused && c.Paused
		x.MessageCount += c.Messages
		x.RequeueCount += c.Requeued
		x.TimeoutCount += c.TimedOut
	}
}

// PauseChannel implements AdminService.PauseChannel.
func (a *Admin) PauseChannel(ctx context.Context, req *qgatev1.PauseChannelRequest) (*qgatev1.PauseChannelResponse, error) {
	nodes, err := a.channelOp(ctx, "pause channel", req.GetTopic(), req.GetChannel(), backends.ChannelPause)
	return &qgatev1.PauseChannelResponse{Nodes: nodes}, err
}

// ResumeChannel implements AdminService.ResumeChannel.
func (a *Admin) ResumeChannel(ctx context.Context, req *qgatev1.ResumeChannelRequest) (*qgatev1.ResumeChannelResponse, error) {
	nodes, err := a.channelOp(ctx, "resume channel", req.GetTopic(), req.GetChannel(), backends.ChannelResume)
	return &qgatev1.ResumeChannelResponse{Nodes: nodes}, err
}

// EmptyChannel implements AdminService.EmptyChannel.
func (a *Admin) EmptyChannel(ctx context.Context, req *qgatev1.EmptyChannelRequest) (*qgatev1.EmptyChannelResponse, error) {
	nodes, err := a.channelOp(ctx, "empty channel", req.GetTopic(), req.GetChannel(), backends.ChannelEmpty)
	return &qgatev1.EmptyChannelResponse{Nodes: nodes}, err
}

func (a *Admin) channelOp(ctx context.Context, what, topic, channel string, op backends.ChannelOp) ([]*qgatev1.NodeResult, error) {
	var v violations
	v.checkName("topic", topic)
	v.checkName("channel", channel)
	if err := v.err(what + " request"); err != nil {
		return nil, err
	}
	var out []*qgatev1.NodeResult
	for _, r := range a.pool.ChannelOp(ctx, topic, channel, op) {
		nr := &qgatev1.NodeResult{Node: r.Node}
		if r.Err != nil {
			nr.Error = r.Err.Error()
		}
		out = append(out, nr)
	}
	a.opts.logger.Info("qgate "+what, "topic", topic, "channel", channel, "nodes", len(out))
	return out, nil
}

// Redrive implements AdminService.Redrive.
func (a *Admin) Redrive(ctx context.Context, req *qgatev1.RedriveRequest) (*qgatev1.RedriveResponse, error) {
	var v violations
	v.checkName("topic", req.GetTopic())
	v.checkName("channel", req.GetChannel())
	if to := req.GetToTopic(); to != "" {
		v.checkName("to_topic", to)
	}
	limit := int(cmp.Or(req.GetMaxMessages(), DefaultRedriveMessages))
	if limit > MaxRedriveMessages {
		v.addf("max_messages", "is %d; at most %d is allowed", limit, MaxRedriveMessages)
	}
	idle := v.checkDuration("idle_timeout", req.GetIdleTimeout(), DefaultRedriveIdleTimeout, time.Millisecond, MaxRedriveIdleTimeout)
	if err := v.err("redrive request"); err != nil {
		return nil, err
	}
	// Messages without a destination are held, unsettled, until the end
	// (then handed back), so they are not received again: at most
	// redriveHeld of them.
	sub, err := a.pool.Subscribe(ctx, backends.SubscribeOptions{Topic: req.GetTopic(), Channel: req.GetChannel(),
		MaxInFlight: redriveHeld + 1, AckDeadline: 15 * time.Minute})
	if err != nil {
		return nil, toStatus(a.opts.logger, "redrive", err)
	}
	defer sub.Close() // hands back what was received and not settled
	lim := rate.NewLimiter(rate.Inf, 1)
	if r := req.GetRate(); r > 0 {
		lim = rate.NewLimiter(rate.Limit(r), 1)
	}
	resp := &qgatev1.RedriveResponse{}
	for int(resp.GetMoved()) < limit {
		if err := lim.Wait(ctx); err != nil {
			resp.Error = err.Error()
			break
		}
		rctx, cancel := context.WithTimeout(ctx, idle)
		d, err := sub.Receive(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
				resp.Error = err.Error() // the call's own deadline, or the backend
			}
			break
		}
		to := cmp.Or(req.GetToTopic(), d.Attributes[attrDeadLetterTopic])
		if to == "" || nameProblem(to) != "" {
			if resp.Skipped++; resp.Skipped >= redriveHeld {
				resp.Error = "too many messages without a qgate-dead-letter-topic attribute: name to_topic"
				break
			}
			continue // held until the end: Close hands it back
		}
		m := d.Message
		m.ID, m.ClientID = redriveID(d), true // a retried redrive of it is the same message
		m.PublishTime = time.Now()
		m.Attributes = maps.Clone(d.Attributes)
		if m.Attributes == nil {
			m.Attributes = map[string]string{}
		}
		m.Attributes[AttrRedrivenID] = d.ID
		m.Attributes[AttrRedrivenFrom] = req.GetTopic()
		m.Attributes[AttrRedrivenTime] = m.PublishTime.UTC().Format(time.RFC3339Nano)
		if err := a.pool.Send(ctx, to, []*backends.Message{&m}, backends.SendOptions{Replicas: a.opts.replicas}); err != nil {
			resp.Skipped++
			resp.Error = "write to " + to + ": " + err.Error()
			_ = d.Acker.Nack(0)
			break
		}
		if err := d.Acker.Ack(); err != nil {
			// Written but not acknowledged: it stays and will be redriven
			// again, as the same message (its id).
			resp.Error = "ack: " + err.Error()
			break
		}
		resp.Moved++
	}
	a.opts.logger.Info("qgate redrive", "topic", req.GetTopic(), "channel", req.GetChannel(), "to_topic", req.GetToTopic(),
		"moved", resp.GetMoved(), "skipped", resp.GetSkipped(), "error", resp.GetError())
	return resp, nil
}
