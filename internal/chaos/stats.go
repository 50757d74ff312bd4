package chaos

import (
	"context"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/qgate/qgate/internal/nsqd"
)

// fetchStats reads one node's /stats, within 2 s.
func fetchStats(ctx context.Context, httpAddr string) (*nsqd.NodeStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return nsqd.FetchStats(ctx, httpAddr)
}

// messages is the topic's message count on the node.
func messages(s *nsqd.NodeStats, topic string) uint64 {
	if t := s.Topic(topic); t != nil {
		return t.MessageCount
	}
	return 0
}

// conns is the set of the node's client connections.
func conns(s *nsqd.NodeStats) map[nsqd.ConnKey]bool {
	m := make(map[nsqd.ConnKey]bool)
	for _, c := range s.Clients() {
		m[c.Key()] = true
	}
	return m
}

// left is what the topic's channel still holds on the node (ready, in
// flight and deferred), and how many consumers it has.
func left(s *nsqd.NodeStats, topic, channel string) (msgs int64, consumers int) {
	if t := s.Topic(topic); t != nil {
		if c := t.Channel(channel); c != nil {
			return c.Depth + int64(c.InFlightCount) + int64(c.DeferredCount), len(c.Clients)
		}
	}
	return 0, 0
}

// loadavg is the machine's load average (1, 5 and 15 minutes) from
// /proc/loadavg, or "unknown": every figure of a run is read against it.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// buildCommit names the commit the running binary was built from, when
// the go command stamped it (go build; not go run or go test).
func buildCommit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "commit unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "commit not stamped in the binary"
	case dirty:
		return "commit " + rev[:min(len(rev), 12)] + " (modified)"
	}
	return "commit " + rev[:min(len(rev), 12)]
}
