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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
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

	mu   sync.Mutex
	last map[string][]Node // per lookupd: its last successful answer
}

// New returns a Poller of the nsqlookupd HTTP addresses addrs (host:port or
// http://host:port). interval 0 takes DefaultInterval; a nil client takes a
// client of its own with a timeout of min(interval, 5s); a nil logger takes
// slog.Default().
func New(addrs []string, interval time.Duration, client *http.Client, logger *slog.Logger) (*Poller, error) {
	if len(addrs) == 0 {
		return nil, errors.New("discovery: no nsqlookupd address")
	}
	if interval < 0 {
		return nil, fmt.Errorf("discovery: interval %v: must be positive", interval)
	}
	if interval == 0 {
		interval = DefaultInterval
	}
	p := &Poller{interval: interval, client: client, logger: logger, last: map[string][]Node{}}
	for _, a := range addrs {
		base, err := baseURL(a)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(p.addrs, base) {
			p.addrs = append(p.addrs, base)
		}
	}
	if p.client == nil {
		p.client = &http.Client{Timeout: min(interval, 5*time.Second)}
	}
	if p.logger == nil {
		p.logger = slog.Default()
	}
	return p, nil
}

// baseURL turns host:port or http://host:port into http://host:port.
func baseURL(a string) (string, error) {
	s := strings.TrimSpace(a)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("discovery: nsqlookupd address %q: %w", a, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("discovery: nsqlookupd address %q: scheme must be http or https", a)
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return "", fmt.Errorf("discovery: nsqlookupd address %q: want host:port", a)
	}
	return u.Scheme + "://" + u.Host, nil
}

// Poll asks every nsqlookupd once and returns the current set of nodes,
// sorted by TCPAddr. It fails only if no nsqlookupd answered and none has
// answered before.
func (p *Poller) Poll(ctx context.Context) ([]Node, error) {
	type answer struct {
		nodes []Node
		err   error
	}
	answers := make([]answer, len(p.addrs))
	var wg sync.WaitGroup
	for i, base := range p.addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i].nodes, answers[i].err = p.fetch(ctx, base)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for i, a := range answers {
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		p.last[p.addrs[i]] = a.nodes
	}
	if len(p.last) == 0 {
		return nil, errors.Join(errs...)
	}
	for _, err := range errs {
		p.logger.Warn("nsqlookupd poll failed; keeping its last nodes", "err", err)
	}
	seen := map[string]bool{}
	var nodes []Node
	for _, base := range p.addrs {
		for _, n := range p.last[base] {
			if !seen[n.TCPAddr] {
				seen[n.TCPAddr] = true
				nodes = append(nodes, n)
			}
		}
	}
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.TCPAddr, b.TCPAddr) })
	return nodes, nil
}

// lookupdNodes is nsqlookupd's /nodes answer. Before nsq 1.0 it was wrapped
// in {"data": ...}; both shapes are read.
type lookupdNodes struct {
	Producers []producer `json:"producers"`
	Data      *struct {
		Producers []producer `json:"producers"`
	} `json:"data"`
}

type producer struct {
	BroadcastAddress string `json:"broadcast_address"`
	Hostname         string `json:"hostname"`
	TCPPort          int    `json:"tcp_port"`
	HTTPPort         int    `json:"http_port"`
	Version          string `json:"version"`
}

// fetch asks one nsqlookupd for its nodes.
func (p *Poller) fetch(ctx context.Context, base string) ([]Node, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/nodes", nil)
	if err != nil {
		return nil, fmt.Errorf("discovery: %s: %w", base, err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discovery: %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return nil, fmt.Errorf("discovery: %s/nodes: status %d: %q", base, resp.StatusCode, body)
	}
	var ans lookupdNodes
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&ans); err != nil {
		return nil, fmt.Errorf("discovery: %s/nodes: %w", base, err)
	}
	prods := ans.Producers
	if ans.Data != nil {
		prods = ans.Data.Producers
	}
	nodes := make([]Node, 0, len(prods))
	for _, pr := range prods {
		if pr.BroadcastAddress == "" || pr.TCPPort <= 0 || pr.HTTPPort <= 0 {
			p.logger.Warn("nsqlookupd lists a node without addresses; skipped", "lookupd", base, "node", pr)
			continue
		}
		nodes = append(nodes, Node{
			TCPAddr:  net.JoinHostPort(pr.BroadcastAddress, strconv.Itoa(pr.TCPPort)),
			HTTPAddr: net.JoinHostPort(pr.BroadcastAddress, strconv.Itoa(pr.HTTPPort)),
			Hostname: pr.Hostname,
			Version:  pr.Version,
		})
	}
	return nodes, nil
}

// Run polls at once and then every interval until ctx is done, and calls fn
// with the whole set of nodes after the first successful poll and whenever
// the set changes. fn is called from Run's goroutine, one call at a time.
// Run returns ctx's error.
func (p *Poller) Run(ctx context.Context, fn func(nodes []Node)) error {
	var prev []Node
	reported := false
	ticker := time.NewTicker(p.interval)
	defer ticker.Stop()
	for {
		nodes, err := p.Poll(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			p.logger.Warn("nsqlookupd poll failed", "err", err)
		case !reported || !slices.Equal(prev, nodes):
			prev, reported = nodes, true
			fn(slices.Clone(nodes)) // fn may keep or change its copy
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}
