package nsqdtest

import (
	"context"
	"io"
	"net/http"
	"net/url"
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

// Create creates topic on the nsqd at httpAddr and, if channel is not
// empty, topic/channel, through nsqd's HTTP API (see Post).
func Create(t testing.TB, httpAddr, topic, channel string) {
	t.Helper()
	Post(t, httpAddr, "/topic/create", topic, "")
	if channel != "" {
		Post(t, httpAddr, "/channel/create", topic, channel)
	}
}

// Post POSTs to path (e.g. /channel/empty) of the nsqd HTTP API at
// httpAddr with topic and channel, failing the test on error or a status
// other than 200. It allows 10s: a test's setup must not fail because a
// loaded machine answered slowly.
func Post(t testing.TB, httpAddr, path, topic, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "http://" + httpAddr + path + "?" + url.Values{"topic": {topic}, "channel": {channel}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}} // no proxy, nothing shared
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("nsqdtest: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("nsqdtest: %s: %s", u, resp.Status)
	}
}
