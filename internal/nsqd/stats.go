package nsqd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// NodeStats is nsqd's GET /stats?format=json.
type NodeStats struct {
	Version   string        `json:"version"`
	Health    string        `json:"health"`
	StartTime int64         `json:"start_time"` // Unix seconds
	Topics    []TopicStats  `json:"topics"`
	Producers []ClientStats `json:"producers"` // clients that published
}

// TopicStats is one topic of NodeStats.
type TopicStats struct {
	Name         string         `json:"topic_name"`
	Channels     []ChannelStats `json:"channels"`
	Depth        int64          `json:"depth"` // messages not yet copied to channels (memory + disk)
	BackendDepth int64          `json:"backend_depth"`
	MessageCount uint64         `json:"message_count"` // messages ever published
	MessageBytes uint64         `json:"message_bytes"`
	Paused       bool           `json:"paused"`
}

// ChannelStats is one channel of a topic.
type ChannelStats struct {
	Name          string        `json:"channel_name"`
	Depth         int64         `json:"depth"` // ready messages (memory + disk), not in flight or deferred
	BackendDepth  int64         `json:"backend_depth"`
	InFlightCount int           `json:"in_flight_count"`
	DeferredCount int           `json:"deferred_count"`
	MessageCount  uint64        `json:"message_count"`
	RequeueCount  uint64        `json:"requeue_count"`
	TimeoutCount  uint64        `json:"timeout_count"`
	ClientCount   int           `json:"client_count"`
	Clients       []ClientStats `json:"clients"`
	Paused        bool          `json:"paused"`
}

// ClientStats is one client connection. RemoteAddress and ConnectTime
// identify a connection: a reconnect shows up as a new pair.
type ClientStats struct {
	ClientID      string     `json:"client_id"`
	Hostname      string     `json:"hostname"`
	Version       string     `json:"version"`
	RemoteAddress string     `json:"remote_address"`
	State         int32      `json:"state"`
	ReadyCount    int64      `json:"ready_count"`
	InFlightCount int64      `json:"in_flight_count"`
	MessageCount  uint64     `json:"message_count"`
	FinishCount   uint64     `json:"finish_count"`
	RequeueCount  uint64     `json:"requeue_count"`
	ConnectTime   int64      `json:"connect_ts"` // Unix seconds
	UserAgent     string     `json:"user_agent"`
	PubCounts     []PubCount `json:"pub_counts"`
}

// PubCount is how many messages a producer published to a topic.
type PubCount struct {
	Topic string `json:"topic"`
	Count uint64 `json:"count"`
}

// Topic returns the named topic, or nil.
func (s *NodeStats) Topic(name string) *TopicStats {
	for i := range s.Topics {
		if s.Topics[i].Name == name {
			return &s.Topics[i]
		}
	}
	return nil
}

// Channel returns the named channel, or nil.
func (s *TopicStats) Channel(name string) *ChannelStats {
	for i := range s.Channels {
		if s.Channels[i].Name == name {
			return &s.Channels[i]
		}
	}
	return nil
}

// Clients returns every client connection: producers and every channel's
// consumers, a connection that both publishes and consumes listed once per
// role.
func (s *NodeStats) Clients() []ClientStats {
	all := append([]ClientStats(nil), s.Producers...)
	for _, t := range s.Topics {
		for _, c := range t.Channels {
			all = append(all, c.Clients...)
		}
	}
	return all
}

// FetchStats fetches and parses http://httpAddr/stats?format=json.
func FetchStats(ctx context.Context, httpAddr string) (*NodeStats, error) {
	url := "http://" + httpAddr + "/stats?format=json"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// A connection of its own: an in-process nsqd that was stopped keeps
	// serving HTTP on connections it had accepted (only its listener
	// closes), so a kept-alive connection would read a stopped node's
	// stats after a restart on the same port.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("nsqd: stats %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("nsqd: stats %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("nsqd: stats %s: %s: %s", url, resp.Status, body)
	}
	var s NodeStats
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("nsqd: stats %s: %w", url, err)
	}
	return &s, nil
}

// ConnKey identifies a client connection: a reconnect shows up as a new
// key.
type ConnKey struct {
	RemoteAddress string
	ConnectTime   int64
}

// Key is c's connection key.
func (c *ClientStats) Key() ConnKey { return ConnKey{c.RemoteAddress, c.ConnectTime} }
