package nsqdtest

import (
	"context"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/nsqd"
)

// Stats fetches and parses http://httpAddr/stats?format=json
// (nsqd.FetchStats), failing the test on error.
func Stats(t testing.TB, httpAddr string) *nsqd.NodeStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := nsqd.FetchStats(ctx, httpAddr)
	if err != nil {
		t.Fatalf("nsqdtest: %v", err)
	}
	return s
}
