package bench

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Config configures a benchmark run. Zero values take the defaults.
type Config struct {
	// Workloads names the workloads to run, in order (see Workloads).
	// Default: every workload.
	Workloads []string
	// Duration is the measured time of one side of one round of a send
	// workload. Default DefaultDuration.
	Duration time.Duration
	// Warmup runs before each measured Duration and is not counted.
	// Default Duration/10, at most 500ms.
	Warmup time.Duration
	// Rounds is how many A/B rounds each workload runs. Default 3.
	Rounds int
	// Size is the message body size in bytes. Default 100.
	Size int
	// Backlog is how many messages a drain workload prepares and drains
	// per side and round. Default DefaultBacklog.
	Backlog int
	// Nodes is how many in-process nsqd nodes to start when NSQD is empty.
	// Default 1.
	Nodes int
	// NSQD lists running nsqd nodes to use instead of in-process ones.
	NSQD []NodeAddr
	// Addr is the address of a running qgate to measure instead of an
	// in-process one. It must use the nodes in NSQD.
	Addr string
	// QgatePID, with Addr, is the process id of that qgate: its CPU time
	// is added to the measured CPU and the memory mode samples its RSS.
	QgatePID int
	// CPUPIDs are more processes (nsqd processes given by NSQD) whose CPU
	// time is counted with this process's, for both sides.
	CPUPIDs []int
	// Ephemeral makes send workloads write to ephemeral topics, whose
	// overflow nsqd drops instead of writing it to disk: the memory-only
	// best case of nsqd, where the hop's cost weighs most. By default they
	// write to normal topics, as applications do; with nobody consuming,
	// nsqd writes what exceeds its memory queue (10000 messages) to disk.
	Ephemeral bool
	// MemDuration is how long the memory mode runs. Default 10s.
	MemDuration time.Duration
	// MemRate is the memory mode's send rate in messages per second.
	// Default 20000.
	MemRate int
	// MemInFlight is the max in flight of the memory mode's stalled
	// subscribers. Default 2500, the API's maximum.
	MemInFlight int
	// SubBatch is the max_batch of qgate's drain subscriptions (side B): the
	// most deliveries one SubscribeResponse carries. 0, the default, means
	// the workload's max in flight; 1 means one delivery per response, as a
	// client that does not set max_batch gets.
	SubBatch int
	// TTL, if above 0, is the ttl of every message qgate's side sends (the
	// cost of expiry: the envelope's expire_at and the checks).
	TTL time.Duration
	// ClientIDs gives every message qgate's side sends a client-chosen id,
	// unique (the cost of idempotent sends: the id's validation, the
	// envelope's mark, and the subscriptions' deduplication by it).
	ClientIDs bool
	// Filter, if set, is the filter of qgate's drain subscriptions: a CEL
	// expression that should accept every message, so the drain measures
	// the cost of evaluating it.
	Filter string
	// CPUProfileDir, if set, receives a CPU profile of the first round of
	// each side of each workload: <dir>/<workload>-<A|B>.pprof.
	CPUProfileDir string
	// Logger receives the logs of the in-process nodes and qgate. nil
	// discards them.
	Logger *slog.Logger
}

// NodeAddr is the address of a running nsqd.
type NodeAddr struct {
	TCP  string `json:"tcp"`
	HTTP string `json:"http"`
}

// Defaults of Config.
const (
	DefaultDuration    = 3 * time.Second
	DefaultRounds      = 3
	DefaultSize        = 100
	DefaultBacklog     = 200_000
	DefaultMemDuration = 10 * time.Second
	DefaultMemRate     = 20_000
	DefaultMemInFlight = 2500
)

func (c Config) withDefaults() Config {
	if len(c.Workloads) == 0 {
		c.Workloads = WorkloadNames()
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Warmup <= 0 {
		c.Warmup = min(c.Duration/10, 500*time.Millisecond)
	}
	if c.Rounds <= 0 {
		c.Rounds = DefaultRounds
	}
	if c.Size <= 0 {
		c.Size = DefaultSize
	}
	if c.Backlog <= 0 {
		c.Backlog = DefaultBacklog
	}
	if c.Nodes <= 0 {
		c.Nodes = 1
	}
	if c.MemDuration <= 0 {
		c.MemDuration = DefaultMemDuration
	}
	if c.MemRate <= 0 {
		c.MemRate = DefaultMemRate
	}
	if c.MemInFlight <= 0 {
		c.MemInFlight = DefaultMemInFlight
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	known := WorkloadNames()
	for _, w := range c.Workloads {
		if !slices.Contains(known, w) {
			return fmt.Errorf("bench: unknown workload %q (known: %s)", w, strings.Join(known, ", "))
		}
	}
	if c.Addr != "" && len(c.NSQD) == 0 {
		return fmt.Errorf("bench: --addr %s needs --nsqd: the nodes that qgate uses, for the direct side", c.Addr)
	}
	if c.QgatePID != 0 && c.Addr == "" {
		return fmt.Errorf("bench: --qgate-pid needs --addr")
	}
	return nil
}

// parseNodes parses "tcp[/http],..." into node addresses; a missing HTTP
// address is the TCP port plus one (nsqd's 4150/4151 convention).
func parseNodes(s string) ([]NodeAddr, error) {
	var out []NodeAddr
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		tcp, http, ok := strings.Cut(f, "/")
		if !ok {
			var err error
			if http, err = nextPort(tcp); err != nil {
				return nil, err
			}
		}
		out = append(out, NodeAddr{TCP: tcp, HTTP: http})
	}
	return out, nil
}
