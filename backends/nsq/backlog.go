// Operators' views and operations on every node through nsqd's HTTP API:
// the backlog of topics and channels, and channel pause, resume and empty
// (AdminService).

package nsq

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/qgate/qgate/backends"
)

// nsqdTopicStats is the part of nsqd's /stats?format=json that Backlog
// reads.
type nsqdTopicStats struct {
	Topics []struct {
		Name         string `json:"topic_name"`
		Depth        int64  `json:"depth"`
		MessageCount uint64 `json:"message_count"`
		Paused       bool   `json:"paused"`
		Channels     []struct {
			Name          string `json:"channel_name"`
			Depth         int64  `json:"depth"`
			InFlightCount int64  `json:"in_flight_count"`
			DeferredCount int64  `json:"deferred_count"`
			MessageCount  uint64 `json:"message_count"`
			RequeueCount  uint64 `json:"requeue_count"`
			TimeoutCount  uint64 `json:"timeout_count"`
			ClientCount   int64  `json:"client_count"`
			Paused        bool   `json:"paused"`
		} `json:"channels"`
	} `json:"topics"`
}

// Backlog returns what every node holds for topic ("" for every topic),
// in the order of Nodes; a node that does not answer within the check
// timeout (or ctx) has Err set.
func (p *Pool) Backlog(ctx context.Context, topic string) []backends.NodeBacklog {
	nodes := p.Nodes()
	out := make([]backends.NodeBacklog, len(nodes))
	p.onEveryNode(ctx, nodes, func(ctx context.Context, i int) {
		out[i].Node = nodes[i].Name
		out[i].Topics, out[i].Err = p.nodeBacklog(ctx, nodes[i].HTTPAddr, topic)
	})
	return out
}

func (p *Pool) nodeBacklog(ctx context.Context, httpAddr, topic string) ([]backends.TopicBacklog, error) {
	q := url.Values{"format": {"json"}, "include_clients": {"false"}, "include_mem": {"false"}}
	if topic != "" {
		q.Set("topic", topic)
	}
	u := "http://" + httpAddr + "/stats?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nsq: stats %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &nsqdStatusError{url: u, status: resp.Status, code: resp.StatusCode}
	}
	var raw nsqdTopicStats
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, fmt.Errorf("nsq: stats %s: %w", httpAddr, err)
	}
	var out []backends.TopicBacklog
	for _, t := range raw.Topics {
		if topic != "" && t.Name != topic {
			continue
		}
		tb := backends.TopicBacklog{Topic: t.Name, Depth: t.Depth, Messages: t.MessageCount, Paused: t.Paused}
		for _, c := range t.Channels {
			tb.Channels = append(tb.Channels, backends.ChannelBacklog{Channel: c.Name, Depth: c.Depth,
				InFlight: c.InFlightCount, Deferred: c.DeferredCount, Consumers: c.ClientCount, Paused: c.Paused,
				Messages: c.MessageCount, Requeued: c.RequeueCount, TimedOut: c.TimeoutCount})
		}
		out = append(out, tb)
	}
	return out, nil
}

// ChannelOp carries out op on topic/channel on every node, in the order of
// Nodes. A node where the channel does not exist answers with an error
// (nsqd's 404).
func (p *Pool) ChannelOp(ctx context.Context, topic, channel string, op backends.ChannelOp) []backends.NodeResult {
	var path string
	switch op {
	case backends.ChannelPause:
		path = "/channel/pause"
	case backends.ChannelResume:
		path = "/channel/unpause"
	case backends.ChannelEmpty:
		path = "/channel/empty"
	default:
		panic(fmt.Sprintf("nsq: channel op %d", op)) // the caller's bug
	}
	nodes := p.Nodes()
	out := make([]backends.NodeResult, len(nodes))
	p.onEveryNode(ctx, nodes, func(ctx context.Context, i int) {
		out[i].Node = nodes[i].Name
		out[i].Err = p.nsqdPost(ctx, nodes[i].HTTPAddr, path, topic, channel)
	})
	return out
}

// onEveryNode calls f for each of nodes at once, each with ctx bounded by
// the check timeout, and returns when every call has.
func (p *Pool) onEveryNode(ctx context.Context, nodes []backends.NodeStatus, f func(ctx context.Context, i int)) {
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, p.cfg.Check.Timeout)
			defer cancel()
			f(ctx, i)
		})
	}
	wg.Wait()
}
