// Package discovery finds nsqd nodes through nsqlookupd: a Poller asks each
// nsqlookupd's HTTP /nodes on an interval and reports the set of nodes
// registered with any of them, so nodes join and leave a pool without a
// restart.
//
// A node's addresses are its broadcast address (as nsqd registers it, see
// nsqd's --broadcast-address) with its TCP and HTTP ports. When an
// nsqlookupd cannot be reached, the nodes it listed last stay in the set: a
// lookupd outage never empties a pool. A node leaves the set when every
// nsqlookupd that answers stops listing it (nsqlookupd drops a producer when
// its TCP connection closes, or after its inactive timeout).
package discovery

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// DefaultInterval is the poll interval when none is given.
const DefaultInterval = 5 * time.Second

// Node is one nsqd as nsqlookupd lists it.
type Node struct {
	// TCPAddr is host:port for publishing and consuming.
	TCPAddr string
	// HTTPAddr is host:port for /ping and /stats.
	HTTPAddr string
	// Hostname and Version are informational, as nsqd registered them.
	Hostname string
	Version  string
}

// Poller polls nsqlookupd. Its methods are safe for concurrent use.
type Poller struct {
	addrs    []string // base URLs, e.g. http://127.0.0.1:4161
	interval time.Duration
	client   *http.Client
	logger   *slog.Logger
}

// New returns a Poller of the nsqlookupd HTTP addresses addrs (host:port or
// http://host:port). interval 0 takes DefaultInterval; a nil client takes a
// client of its own with a timeout of min(interval, 5s); a nil logger takes
// slog.Default().
func New(addrs []string, interval time.Duration, client *http.Client, logger *slog.Logger) (*Poller, error) {
	panic("TODO")
}

// Poll asks every nsqlookupd once and returns the current set of nodes,
// sorted by TCPAddr. It fails only if no nsqlookupd answered and none has
// answered before.
func (p *Poller) Poll(ctx context.Context) ([]Node, error) { panic("TODO") }

// Run polls at once and then every interval until ctx is done, and calls fn
// with the whole set of nodes after the first successful poll and whenever
// the set changes. fn is called from Run's goroutine, one call at a time.
// Run returns ctx's error.
func (p *Poller) Run(ctx context.Context, fn func(nodes []Node)) error { panic("TODO") }
