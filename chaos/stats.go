package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// nodeStats is the part of nsqd's /stats?format=json the harness reads:
// message counts per topic and the client connections (a reconnect shows
// up as a new remote address and connect time).
type nodeStats struct {
	Topics []struct {
		Name         string `json:"topic_name"`
		MessageCount uint64 `json:"message_count"`
		Channels     []struct {
			Name          string        `json:"channel_name"`
			Depth         int64         `json:"depth"`
			InFlightCount int64         `json:"in_flight_count"`
			DeferredCount int64         `json:"deferred_count"`
			Clients       []clientStats `json:"clients"`
		} `json:"channels"`
	} `json:"topics"`
	Producers []clientStats `json:"producers"`
}

type clientStats struct {
	RemoteAddress string `json:"remote_address"`
	ConnectTime   int64  `json:"connect_ts"`
}

// fetchStats reads one node's /stats.
func fetchStats(ctx context.Context, httpAddr string) (*nodeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/stats?format=json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("chaos: stats %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("chaos: stats %s: %s", httpAddr, resp.Status)
	}
	var s nodeStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("chaos: stats %s: %w", httpAddr, err)
	}
	return &s, nil
}

// messages is the topic's message count on the node.
func (s *nodeStats) messages(topic string) uint64 {
	for _, t := range s.Topics {
		if t.Name == topic {
			return t.MessageCount
		}
	}
	return 0
}

// conns is the set of the node's client connections.
func (s *nodeStats) conns() map[clientStats]bool {
	m := make(map[clientStats]bool)
	for _, c := range s.Producers {
		m[c] = true
	}
	for _, t := range s.Topics {
		for _, ch := range t.Channels {
			for _, c := range ch.Clients {
				m[c] = true
			}
		}
	}
	return m
}

// left is what the topic's channel still holds on the node (ready, in
// flight and deferred), and how many consumers it has.
func (s *nodeStats) left(topic, channel string) (msgs int64, consumers int) {
	for _, t := range s.Topics {
		if t.Name != topic {
			continue
		}
		for _, c := range t.Channels {
			if c.Name == channel {
				return c.Depth + c.InFlightCount + c.DeferredCount, len(c.Clients)
			}
		}
	}
	return 0, 0
}
