// Package config loads qgate's configuration file, YAML (.yaml, .yml), into
// a File that converts to the NSQ pool's configuration.
//
// # Format
//
// Keys are snake_case; durations are strings such as "500ms" or "5s"; sizes
// are integers in bytes. The layout (see docs/examples for each mode):
//
//	listen: 127.0.0.1:7070        # gRPC listen address
//	mode: ha                      # cluster | failover | ha
//	nodes:                        # cluster, failover: a flat list of members
//	  - {name: a, tcp: 10.0.0.1:4150, http: 10.0.0.1:4151}
//	embedded: 3                   # cluster, failover: instead of nodes, nsqd
//	                              #   nodes run inside qgate (for trying it)
//	groups:                       # ha (or any mode): groups of members,
//	  - name: g1                  #   first member = primary
//	    members:
//	      - {name: a1, tcp: 10.0.0.1:4150, http: 10.0.0.1:4151}
//	check: {interval: 1s, timeout: 500ms, jitter: 0.1, fall: 2, rise: 2}
//	failback_hold: 5s
//	dial_timeout: 1s
//	write_timeout: 1s
//	attempt_timeout: 1s           # upper bound of the adaptive attempt timeout
//	attempt_timeout_min: 250ms    # its lower bound
//	replicas: 2                   # copies of a Send that asks for none (1-3)
//	min_replicas: 0               # fewest copies when fewer nodes are usable; 0: all
//	standby_delay: 30s            # when standby copies become deliverable
//	ack_topic: qgate.acks         # shared acks between instances; "off": none
//	timer_topic: qgate.timer      # holds delays over timer_hop; "off": delays up to timer_hop
//	timer_hop: 1h                 # nsqd's --max-req-timeout
//	eject: {consecutive: 2, base: 5s, max: 1m, decay: 30s, max_percent: 50}
//	lookupd: {addrs: [http://10.0.0.9:4161], poll_interval: 5s}
//	limits: {max_body_bytes: 1048576, max_batch_messages: 1000, max_batch_bytes: 5242880}
//
// A file has either nodes, groups or embedded (or, in cluster mode, none of
// them when lookupd discovers the nodes). A file without any of them is an
// error, not the embedded nodes: a production file that lost its nodes
// must not start throwaway ones. A member's http address defaults to its
// tcp host with the tcp port + 1, as nsqd's defaults are 4150 and 4151; its
// name defaults to its tcp address; names and tcp addresses are unique in
// the file. A group's name defaults to group-<n>, n counting from 1.
//
// Every key is optional except mode and the nodes (nodes, groups, embedded
// or lookupd). Leaving a key out takes the default of the component that
// reads it (health.Config, nsq.Config, the service's limits); a value given
// must be valid: durations and counts positive, jitter from 0 to 1, where 0
// means no jitter. Discovery (lookupd) is for mode cluster, where it may
// replace nodes.
//
// # Errors
//
// Loading is strict: an unknown key, a value of the wrong type and an
// invalid value are all errors, and every error names the file, the line and
// the field, as in
//
//	config.yaml:12: groups[1].members[0].tcp: missing port in address
//
// Load returns all errors found (errors.Join of *FieldError, in line
// order, at most one per field). An error about a field carries the line of
// its key; a syntax error the line the YAML parser reports (for an unclosed
// [ or { that can be the line where it opened), and none for the few that
// yaml.v3 reports without one, such as an unknown anchor.
//
// # Operations
//
// The operations keys (all optional):
//
//	metrics_listen: 127.0.0.1:7071  # /metrics, /healthz, /readyz; "off": none
//	tls:                            # the gRPC and metrics listeners
//	  cert: server.crt
//	  key: server.key
//	  client_ca: clients-ca.crt     # mutual TLS: clients need a certificate from this CA
//	nsqd:                           # the connections to nsqd
//	  tls: true                     # implied by tls_ca or tls_cert
//	  tls_ca: nsqd-ca.crt           # default: the system's roots
//	  tls_cert: qgate.crt           # client certificate, if nsqd asks for one
//	  tls_key: qgate.key
//	  auth_secret_file: nsqd.secret # or auth_secret: "…" (nsqd --auth-http-address)
//	auth:
//	  tokens:
//	    - name: orders-service      # in logs and limits; unique
//	      secret_file: orders.secret  # or secret: "…" or secret_env: VAR; 16 bytes or more
//	      send: ["orders", "orders.*"]  # anchored globs over the whole topic name
//	      subscribe: ["orders"]
//	      admin: false              # AdminService
//	limits: {max_streams: 1000, max_subscriptions_per_token: 100, rate_per_token: 500, rate_burst: 1000}
//
// Relative file names are relative to the config file's directory. Secret
// files are read at load time (a trailing newline is dropped); secret_env
// names an environment variable read at load time. Token checks mirror
// package auth's: a name, one secret source, unique names and secrets,
// valid patterns.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
)

// File is a loaded configuration file. Durations are already parsed; zero
// values mean "use the default" of the component that reads them.
type File struct {
	// Path is the file loaded (not a key of the file).
	Path string

	// Listen is the gRPC listen address, host:port. Default: the server's.
	Listen string
	// Mode is cluster, failover or ha. Required.
	Mode nsq.Mode
	// Nodes is a flat member list (cluster, failover).
	Nodes []Member
	// Groups lists groups of members (ha, or any mode).
	Groups []Group
	// Embedded is how many nsqd nodes to run inside the process instead
	// of Nodes and Groups (cluster, failover); 0: none. The caller starts
	// them: PoolConfig has no groups.
	Embedded int
	// Check configures active health checks.
	Check health.Config
	// Eject configures data-path ejections (the eject section).
	Eject health.EjectConfig
	// FailbackHold, DialTimeout, WriteTimeout, AttemptTimeout,
	// AttemptTimeoutMin: see nsq.Config.
	FailbackHold      time.Duration
	DialTimeout       time.Duration
	WriteTimeout      time.Duration
	AttemptTimeout    time.Duration
	AttemptTimeoutMin time.Duration
	// Replicas is the copies of a Send that asks for none (1 to
	// service.MaxReplicas); 0: the server's default.
	Replicas int
	// MinReplicas, StandbyDelay: see nsq.Config. AckTopic is the topic of
	// shared acks (see nsq.Config), AckTopicOff for none, "" for the
	// default.
	MinReplicas  int
	StandbyDelay time.Duration
	AckTopic     string
	// TimerTopic and TimerHop: see nsq.Config; TimerTopicOff for none, ""
	// for the default.
	TimerTopic string
	TimerHop   time.Duration
	// Lookupd configures nsqlookupd discovery.
	Lookupd Lookupd
	// Limits bounds requests.
	Limits Limits
	// MetricsListen is the metrics HTTP listen address, host:port, or
	// "off". Default: the metrics package's.
	MetricsListen string
	// TLS is the TLS of the gRPC and metrics listeners; zero: plaintext.
	TLS TLS
	// NSQD configures the connections to nsqd: TLS and the AUTH secret.
	NSQD NSQD
	// Auth holds the bearer tokens; none: auth off.
	Auth Auth
}

// AckTopicOff as ack_topic turns the sharing of acks off.
const AckTopicOff = "off"

// TimerTopicOff as timer_topic turns long delays off.
const TimerTopicOff = "off"

// MaxEmbedded is the most embedded nodes a file may ask for: they are for
// trying qgate on one machine, each a whole nsqd in the process.
const MaxEmbedded = 9

// Member is one nsqd of the file.
type Member struct {
	Name     string
	TCPAddr  string
	HTTPAddr string
}

// Group is an ordered list of members; the first is the primary.
type Group struct {
	Name    string
	Members []Member
}

// Lookupd configures discovery through nsqlookupd.
type Lookupd struct {
	// Addrs are nsqlookupd HTTP addresses (host:port or http://host:port).
	Addrs []string
	// PollInterval is how often they are polled; 0 takes the default.
	PollInterval time.Duration
}

// Limits bounds requests. For the first three 0 takes the service's
// default; for the per-connection and per-token limits 0 means no limit.
type Limits struct {
	MaxBodyBytes     int64
	MaxBatchMessages int
	MaxBatchBytes    int64

	// MaxStreams bounds the concurrent streams of one client connection.
	MaxStreams uint32
	// MaxSubscriptionsPerToken bounds the open Subscribe streams of a token.
	MaxSubscriptionsPerToken int
	// RatePerToken is the requests per second a token may make; RateBurst
	// how many at once (0: the rate, rounded up).
	RatePerToken float64
	RateBurst    int
}

// FieldError is one error of a file: where, which field, what.
type FieldError struct {
	File  string // path as given to Load
	Line  int    // 1-based; 0 if unknown
	Field string // path such as groups[1].members[0].tcp; empty for syntax errors
	Msg   string
}

// Error formats e as file:line: field: msg.
func (e *FieldError) Error() string {
	s := e.File
	if e.Line > 0 {
		s += fmt.Sprintf(":%d", e.Line)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Msg
}

// Load reads, parses and validates the file at path; its extension chooses
// the format. Errors are described in the package documentation.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load of data as if read from a file named name.
func Parse(name string, data []byte) (*File, error) {
	switch ext := strings.ToLower(filepath.Ext(name)); ext {
	case ".yaml", ".yml":
	case ".toml":
		return nil, fmt.Errorf("config: %s: TOML is not supported; write the same keys in YAML (.yaml, .yml)", name)
	default:
		return nil, fmt.Errorf("config: %s: unknown format %q (want .yaml or .yml)", name, ext)
	}
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: name, lines: map[string]int{}, bad: map[string]bool{}}
	var raw rawFile
	d.decode(root, max(root.Line, 1), reflect.ValueOf(&raw).Elem(), "")
	c := &checker{decoder: d, rootLine: max(root.Line, 1)}
	f := c.file(&raw)
	f.Path = name
	if len(d.errs) > 0 {
		return nil, joinSorted(d.errs)
	}
	return f, nil
}

// joinSorted joins errors in line order (stable for equal lines).
func joinSorted(errs []*FieldError) error {
	slices.SortStableFunc(errs, func(a, b *FieldError) int { return cmp.Compare(a.Line, b.Line) })
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// PoolConfig converts f to the NSQ pool's configuration: groups laid out for
// f.Mode (nodes through nsq.GroupsForMode), checks, timeouts and lookupd.
// With discovery alone (mode cluster, no nodes) or embedded nodes Groups is
// empty. The caller sets Logger.
func (f *File) PoolConfig() (nsq.Config, error) {
	cfg := nsq.Config{
		Check:               f.Check,
		FailbackHold:        f.FailbackHold,
		DialTimeout:         f.DialTimeout,
		WriteTimeout:        f.WriteTimeout,
		AttemptTimeout:      f.AttemptTimeout,
		AttemptTimeoutMin:   f.AttemptTimeoutMin,
		MinReplicas:         f.MinReplicas,
		StandbyDelay:        f.StandbyDelay,
		AckTopic:            f.AckTopic,
		TimerTopic:          f.TimerTopic,
		TimerHop:            f.TimerHop,
		Eject:               f.Eject,
		LookupdHTTPAddrs:    slices.Clone(f.Lookupd.Addrs),
		LookupdPollInterval: f.Lookupd.PollInterval,
	}
	switch {
	case len(f.Groups) > 0:
		for _, g := range f.Groups {
			gc := nsq.GroupConfig{Name: g.Name}
			for _, m := range g.Members {
				gc.Nodes = append(gc.Nodes, m.nodeConfig())
			}
			cfg.Groups = append(cfg.Groups, gc)
		}
	case len(f.Nodes) > 0:
		nodes := make([]nsq.NodeConfig, len(f.Nodes))
		for i, m := range f.Nodes {
			nodes[i] = m.nodeConfig()
		}
		groups, err := nsq.GroupsForMode(f.Mode, nodes)
		if err != nil {
			return nsq.Config{}, fmt.Errorf("config: %s: %w", f.Path, err)
		}
		cfg.Groups = groups
	}
	return cfg, nil
}

func (m Member) nodeConfig() nsq.NodeConfig {
	return nsq.NodeConfig{Name: m.Name, TCPAddr: m.TCPAddr, HTTPAddr: m.HTTPAddr}
}
