package nsqtest

import (
	"context"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/nsqproc"
)

// The /stats types live in nsqproc, which commands may import too.
type (
	// NodeStats is nsqd's GET /stats?format=json.
	NodeStats = nsqproc.NodeStats
	// TopicStats is one topic of NodeStats.
	TopicStats = nsqproc.TopicStats
	// ChannelStats is one channel of a topic.
	ChannelStats = nsqproc.ChannelStats
	// ClientStats is one client connection.
	ClientStats = nsqproc.ClientStats
	// PubCount is how many messages a producer published to a topic.
	PubCount = nsqproc.PubCount
)

// FetchStats fetches and parses http://httpAddr/stats?format=json.
func FetchStats(ctx context.Context, httpAddr string) (*NodeStats, error) {
	return nsqproc.FetchStats(ctx, httpAddr)
}

// Stats fetches and parses http://httpAddr/stats?format=json, failing the
// test on error.
func Stats(t testing.TB, httpAddr string) *NodeStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := FetchStats(ctx, httpAddr)
	if err != nil {
		t.Fatalf("nsqtest: %v", err)
	}
	return s
}
