package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// nsqdStats is the part of nsqd's /stats?format=json that we read.
type nsqdStats struct {
	Topics []struct {
		Depth    uint64 `json:"depth"`
		Channels []struct {
			Depth         uint64 `json:"depth"`
			InFlightCount uint64 `json:"in_flight_count"`
		} `json:"channels"`
	} `json:"topics"`
}

// Stats fetches nsqd's /stats now, bounded by Config.Timeout and ctx, and
// records it in the Snapshot. Depth sums topic and channel depths (each
// counts memory and disk); InFlight sums the channels' in-flight counts.
func (m *Monitor) Stats(ctx context.Context) (Stats, error) {
	if m.life.Err() != nil {
		return Stats{}, ErrStopped
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	defer context.AfterFunc(m.life, cancel)()
	url := "http://" + m.httpAddr + "/stats?format=json&include_clients=false&include_mem=false"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Stats{}, fmt.Errorf("health: stats %s: %w", m.httpAddr, err)
	}
	resp, err := m.opts.client.Do(req)
	if err != nil {
		return Stats{}, fmt.Errorf("health: stats %s: %w", m.httpAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Stats{}, fmt.Errorf("health: stats %s: status %d", m.httpAddr, resp.StatusCode)
	}
	var raw nsqdStats
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return Stats{}, fmt.Errorf("health: stats %s: %w", m.httpAddr, err)
	}
	st := Stats{Time: time.Now()}
	for _, t := range raw.Topics {
		st.Depth += t.Depth
		for _, c := range t.Channels {
			st.Depth += c.Depth
			st.InFlight += c.InFlightCount
		}
	}
	m.mu.Lock()
	m.snap.Stats = st
	m.mu.Unlock()
	return st, nil
}
