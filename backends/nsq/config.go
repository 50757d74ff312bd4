package nsq

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends/nsq/health"
)

// Mode names a preset of the pool's group layout.
type Mode string

// The three HA modes. They are presets of one model: a pool of groups, each
// group an ordered list of members (priority order, first = primary).
const (
	// ModeCluster: every node is its own group; sends spread over all up nodes.
	ModeCluster Mode = "cluster"
	// ModeFailover: one group; sends go to the highest-priority up member.
	ModeFailover Mode = "failover"
	// ModeHA: several groups of primary + backups; sends spread over groups,
	// fail over inside a group, spill to other groups when a group is down.
	ModeHA Mode = "ha"
)

// NodeConfig names one nsqd.
type NodeConfig struct {
	// Name is unique in the pool; defaults to TCPAddr.
	Name string
	// TCPAddr is nsqd's TCP address (host:port), for publishing and consuming.
	TCPAddr string
	// HTTPAddr is nsqd's HTTP address (host:port), for /ping and /stats.
	HTTPAddr string
}

// GroupConfig is an ordered list of members: the first is the primary.
type GroupConfig struct {
	Name  string
	Nodes []NodeConfig
}

// Config configures a Pool. Zero values take the documented defaults.
type Config struct {
	// Groups lists the pool's groups. Required, at least one node.
	Groups []GroupConfig
	// Check configures active health checks, one of the two signals of a
	// node's health.
	Check health.Config
	// Eject configures the other signal, the data path: how many failed
	// sends in a row eject a node, for how long, and how many nodes may be
	// out for it at once (see health.EjectConfig).
	Eject health.EjectConfig
	// FailbackHold is how long a higher-priority member must stay up before
	// sends fail back to it. Default 5s.
	FailbackHold time.Duration
	// DialTimeout bounds connecting to a node. Default 1s.
	DialTimeout time.Duration
	// WriteTimeout bounds writing one command to a node. Default 1s.
	WriteTimeout time.Duration
	// AttemptTimeout bounds one send attempt on one node (the call's own
	// deadline bounds it too), so one frozen node cannot eat a whole Send
	// deadline: an attempt that times out ejects the node and the Send moves
	// on. It does not apply when no other node is usable: the Send then
	// waits for its only node until the call's deadline (at most 30s), so a
	// slow moment of the last node is not turned into an outage. Default 1s.
	//
	// It is the upper bound of an adaptive timeout: once a node has
	// answered enough sends, an attempt on it times out after
	// attemptP99Multiple (10) times the p99 of its recent answer times,
	// within [AttemptTimeoutMin, AttemptTimeout], so a node that stops
	// answering costs a Send about ten of its usual latencies, not a second.
	AttemptTimeout time.Duration
	// AttemptTimeoutMin is the lower bound of the adaptive attempt timeout.
	// Default 250ms: on a loaded 2-core host, healthy local nodes stalled
	// past 100ms often enough to be retried elsewhere and ejected (see
	// docs/gray-failures.md). Set it to AttemptTimeout for a fixed timeout.
	AttemptTimeoutMin time.Duration
	// LookupdHTTPAddrs, if set, discovers nodes from nsqlookupd (cluster mode):
	// nodes it lists join the pool, nodes it stops listing leave.
	LookupdHTTPAddrs []string
	// LookupdPollInterval is how often nsqlookupd is polled. Default 5s.
	LookupdPollInterval time.Duration
	// DedupWindow is how long the pool remembers, per topic and channel,
	// the id of a replicated message (sent with Replicas > 1) or of a
	// message with a client-chosen id (Message.ClientID) that was acked
	// there, by this pool or (through AckTopic) by another qgate, so that a
	// later copy is finished without being delivered again. It must cover
	// StandbyDelay plus the skew between the copies' arrivals: near zero for
	// subscribers that keep up, up to the age of the older backlog when one
	// node's channel is far behind another's; for client ids, also the
	// time within which clients retry a Send. Default 10m.
	DedupWindow time.Duration
	// DedupMaxIDs bounds the ids remembered per topic and channel (the
	// oldest are forgotten first): about 100 bytes each. Default 200000
	// (~20 MB at most per channel, only while replicated or client-id
	// messages flow). At a channel's ack rate r, the window is in effect
	// min(DedupWindow, DedupMaxIDs / r): 200000 ids cover 10 minutes up to
	// ~333 acks/s, 20 s at 10000/s.
	DedupMaxIDs int
	// StandbyDelay is when the standby copies of a replicated send become
	// deliverable: its send time (plus its delay) plus StandbyDelay. A
	// standby whose message was acked on its channel by then is finished
	// without delivery; otherwise (the first copy was lost with its node,
	// or is still unacked) it is delivered. Longer means fewer duplicates
	// from slow consumers, later recovery of what a dead node held, and more
	// deferred messages held by nsqd (rate × StandbyDelay). At most 1h
	// (nsqd's --max-req-timeout). Default 30s.
	StandbyDelay time.Duration
	// ClaimSettle is the least time a copy that arrives in a backlog (its
	// twin may be live at another gateway) waits before it is delivered,
	// while other instances share the ack topic: a claim another gateway
	// made at the same moment arrives meanwhile, and the earlier claim
	// delivers (see "One delivery per message"). The wait is twice the
	// measured delay of the ack topic when that is longer, at most an
	// eighth of StandbyDelay. Default 250ms; negative: no wait (two
	// gateways draining one backlog may then each deliver a copy).
	ClaimSettle time.Duration
	// MinReplicas is the fewest copies a replicated send may write when
	// fewer usable nodes than asked for exist (fewer: ErrUnavailable). 0
	// (the default) means every copy asked for: an acknowledged replicated
	// send is on that many nodes, and a pool with too few usable nodes
	// refuses replicated sends. 1 keeps taking sends on whatever is left
	// (counted as under-replicated), at the price of what a second failure
	// would lose.
	MinReplicas int
	// AckTopic, if set, is the NSQ topic through which qgate instances
	// sharing the pool's nodes tell each other which replicated messages
	// were acked on which channel (AckRecord), so that standby copies are
	// finished wherever they surface. Each pool reads it on a channel of its
	// own (named after InstanceID), deleted when the pool closes; the
	// channels of instances gone for AckChannelExpiry are deleted by the
	// others. Empty: acks are shared only between this pool's subscriptions.
	AckTopic string
	// TimerTopic, if set, is the NSQ topic that holds messages sent with a
	// delay longer than TimerHop until they are due (see "Long delays" in
	// the package documentation): the pool reads it on TimerChannel, shared
	// by every instance, and writes each message to its topic, on the node
	// that held it, when it is due. Empty: Send refuses such delays
	// (ErrRejected) and MaxDelay is TimerHop.
	TimerTopic string
	// TimerHop is the longest time nsqd defers a message in one step (DPUB
	// or REQ): nsqd's --max-req-timeout, which it must not exceed. A longer
	// delay waits on TimerTopic in steps of at most TimerHop. Default 1h
	// (nsqd's default); at least 10ms.
	TimerHop time.Duration
	// InstanceID names this pool among those sharing AckTopic. Default: a
	// random id.
	InstanceID string
	// Logger receives the pool's logs. Default slog.Default().
	Logger *slog.Logger
	// Observer, if set, is told of every write to a node, every retry on
	// another node and every dead letter (for metrics).
	Observer Observer
	// TLS, if set, makes every connection to nsqd (producers and consumers)
	// use TLS with this configuration (nsqd's --tls-cert/--tls-key; the
	// certificate must name the address the pool dials). Health checks and
	// channel creation use nsqd's plain HTTP port: run nsqd with
	// --tls-required=tcp-https, not true (which refuses plain HTTP).
	TLS *tls.Config
	// AuthSecret, if set, is sent with AUTH on every connection to nsqd
	// (nsqd's --auth-http-address). Use it with TLS: nsqd sees it in clear
	// otherwise.
	AuthSecret string

	// wrapHTTP, if set, wraps the transport of the pool's calls to nsqd's
	// HTTP API: tests count those calls and make one time out.
	wrapHTTP func(http.RoundTripper) http.RoundTripper
}

// Observer is told of the pool's writes. Its methods are called on the
// send path, from many goroutines at once: they must be safe for
// concurrent use and must not block. *metrics.Metrics implements it.
type Observer interface {
	// SendAttempt reports one write of msgs messages to node (one copy of
	// a replicated send, one attempt of a retried one): err nil means the
	// node acknowledged it.
	SendAttempt(node, topic string, msgs int, err error)
	// SendRetry reports that a failed write of topic is tried again on
	// another node.
	SendRetry(topic string)
	// DeadLettered reports a message of topic/channel written to its
	// dead-letter topic.
	DeadLettered(topic, channel string)
}

// EjectionObserver is told of nodes going out of the send path. The pool
// calls it if its Observer implements it (*metrics.Metrics does); same
// rules as Observer.
type EjectionObserver interface {
	// NodeOut reports that node went out, for reason "data_path" (ejected
	// for failed sends) or "health_check" (its /ping checks failed).
	NodeOut(node, reason string)
	// EjectionCapped reports a data-path ejection of node that the pool
	// refused: the max ejection share of nodes was out already, or node
	// was the last usable one.
	EjectionCapped(node string)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) SendAttempt(string, string, int, error) {}
func (nopObserver) SendRetry(string)                       {}
func (nopObserver) DeadLettered(string, string)            {}

// Defaults of Config.
const (
	DefaultFailbackHold        = 5 * time.Second
	DefaultDialTimeout         = time.Second
	DefaultWriteTimeout        = time.Second
	DefaultAttemptTimeout      = time.Second
	DefaultAttemptTimeoutMin   = 250 * time.Millisecond
	DefaultLookupdPollInterval = 5 * time.Second
	DefaultDedupWindow         = 10 * time.Minute
	DefaultDedupMaxIDs         = 200_000
	DefaultStandbyDelay        = 30 * time.Second
	DefaultClaimSettle         = 250 * time.Millisecond
	// DefaultAckTopic is the ack topic qgate serve uses.
	DefaultAckTopic = "qgate.acks"
	// DefaultTimerTopic is the timer topic qgate serve uses.
	DefaultTimerTopic = "qgate.timer"
	// DefaultTimerHop is nsqd's default --max-req-timeout.
	DefaultTimerHop = time.Hour
	// TimerChannel is the channel on which every pool reads TimerTopic.
	TimerChannel = "qgate"
	// MaxLongDelay is the longest delay a pool with a TimerTopic takes.
	MaxLongDelay = 366 * 24 * time.Hour
)

// GroupsForMode lays out nodes as the groups of a mode preset: cluster makes
// one group per node, failover one group of all nodes in the given order.
// ModeHA needs explicit groups (a config file) and is an error here.
func GroupsForMode(mode Mode, nodes []NodeConfig) ([]GroupConfig, error) {
	if len(nodes) == 0 {
		return nil, errors.New("nsq: no nodes")
	}
	switch mode {
	case ModeCluster, "":
		groups := make([]GroupConfig, len(nodes))
		for i, n := range nodes {
			groups[i] = GroupConfig{Name: nodeName(n), Nodes: []NodeConfig{n}}
		}
		return groups, nil
	case ModeFailover:
		return []GroupConfig{{Name: "failover", Nodes: append([]NodeConfig(nil), nodes...)}}, nil
	case ModeHA:
		return nil, errors.New("nsq: mode ha needs explicit groups (a config file)")
	}
	return nil, fmt.Errorf("nsq: unknown mode %q (want cluster, failover or ha)", mode)
}

func nodeName(n NodeConfig) string {
	if n.Name != "" {
		return n.Name
	}
	return n.TCPAddr
}

// withDefaults returns cfg with defaults filled in and node names set.
func (cfg Config) withDefaults() Config {
	cfg.Check = cfg.Check.WithDefaults()
	cfg.FailbackHold = cmp.Or(cfg.FailbackHold, DefaultFailbackHold)
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, DefaultDialTimeout)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, DefaultWriteTimeout)
	cfg.AttemptTimeout = cmp.Or(cfg.AttemptTimeout, DefaultAttemptTimeout)
	if cfg.AttemptTimeoutMin == 0 {
		cfg.AttemptTimeoutMin = min(DefaultAttemptTimeoutMin, cfg.AttemptTimeout)
	}
	cfg.Eject = cfg.Eject.WithDefaults()
	cfg.LookupdPollInterval = cmp.Or(cfg.LookupdPollInterval, DefaultLookupdPollInterval)
	cfg.DedupWindow = cmp.Or(cfg.DedupWindow, DefaultDedupWindow)
	cfg.DedupMaxIDs = cmp.Or(cfg.DedupMaxIDs, DefaultDedupMaxIDs)
	cfg.StandbyDelay = cmp.Or(cfg.StandbyDelay, DefaultStandbyDelay)
	cfg.ClaimSettle = cmp.Or(cfg.ClaimSettle, DefaultClaimSettle)
	cfg.TimerHop = cmp.Or(cfg.TimerHop, DefaultTimerHop)
	if cfg.InstanceID == "" {
		cfg.InstanceID = randomID()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	groups := make([]GroupConfig, len(cfg.Groups))
	for i, g := range cfg.Groups {
		g.Nodes = append([]NodeConfig(nil), g.Nodes...)
		for j := range g.Nodes {
			g.Nodes[j].Name = nodeName(g.Nodes[j])
		}
		if g.Name == "" {
			g.Name = fmt.Sprintf("group%d", i)
		}
		groups[i] = g
	}
	cfg.Groups = groups
	return cfg
}

// validate reports every problem of cfg (after defaults), naming the field.
func (cfg Config) validate() error {
	var errs []error
	if err := cfg.Check.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("check: %w", err))
	}
	if err := cfg.Eject.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("eject: %w", err))
	}
	if cfg.AttemptTimeoutMin > cfg.AttemptTimeout {
		errs = append(errs, fmt.Errorf("attempt timeout min %v: must not exceed the attempt timeout %v",
			cfg.AttemptTimeoutMin, cfg.AttemptTimeout))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"failback hold", cfg.FailbackHold}, {"dial timeout", cfg.DialTimeout},
		{"write timeout", cfg.WriteTimeout}, {"attempt timeout", cfg.AttemptTimeout},
		{"attempt timeout min", cfg.AttemptTimeoutMin},
		{"lookupd poll interval", cfg.LookupdPollInterval}, {"dedup window", cfg.DedupWindow},
	} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", f.name, f.d))
		}
	}
	if cfg.WriteTimeout > 0 && cfg.WriteTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("write timeout %v: must be at least 100ms", cfg.WriteTimeout))
	}
	if cfg.StandbyDelay < 0 || cfg.StandbyDelay > maxRequeueDelay {
		errs = append(errs, fmt.Errorf("standby delay %v: must be between 0 and %v", cfg.StandbyDelay, maxRequeueDelay))
	}
	if cfg.MinReplicas < 0 {
		errs = append(errs, fmt.Errorf("min replicas %d: must not be negative", cfg.MinReplicas))
	}
	if cfg.AckTopic != "" && !gonsq.IsValidTopicName(cfg.AckTopic) {
		errs = append(errs, fmt.Errorf("ack topic %q: not a valid NSQ topic name", cfg.AckTopic))
	}
	if cfg.TimerTopic != "" && !gonsq.IsValidTopicName(cfg.TimerTopic) {
		errs = append(errs, fmt.Errorf("timer topic %q: not a valid NSQ topic name", cfg.TimerTopic))
	}
	if cfg.TimerHop < 10*time.Millisecond || cfg.TimerHop > maxRequeueDelay {
		errs = append(errs, fmt.Errorf("timer hop %v: must be between 10ms and %v", cfg.TimerHop, maxRequeueDelay))
	}
	if !gonsq.IsValidChannelName(ackChannel(cfg.InstanceID)) {
		errs = append(errs, fmt.Errorf("instance id %q: makes no valid NSQ channel name", cfg.InstanceID))
	}
	if cfg.DedupMaxIDs < 0 {
		errs = append(errs, fmt.Errorf("dedup max ids %d: must not be negative", cfg.DedupMaxIDs))
	}
	if len(cfg.Groups) == 0 && len(cfg.LookupdHTTPAddrs) == 0 {
		errs = append(errs, errors.New("groups: at least one node is required"))
	}
	names := make(map[string]bool)
	groupNames := make(map[string]bool)
	for i, g := range cfg.Groups {
		if groupNames[g.Name] {
			errs = append(errs, fmt.Errorf("groups[%d]: duplicate group name %q", i, g.Name))
		}
		groupNames[g.Name] = true
		if len(g.Nodes) == 0 {
			errs = append(errs, fmt.Errorf("groups[%d] (%s): no nodes", i, g.Name))
		}
		for j, n := range g.Nodes {
			field := fmt.Sprintf("groups[%d].nodes[%d]", i, j)
			if _, _, err := net.SplitHostPort(n.TCPAddr); err != nil {
				errs = append(errs, fmt.Errorf("%s: tcp address %q: %w", field, n.TCPAddr, err))
			}
			if _, _, err := net.SplitHostPort(n.HTTPAddr); err != nil {
				errs = append(errs, fmt.Errorf("%s: http address %q: %w", field, n.HTTPAddr, err))
			}
			if names[n.Name] {
				errs = append(errs, fmt.Errorf("%s: duplicate node name %q", field, n.Name))
			}
			names[n.Name] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nsq: invalid config: %w", err)
	}
	return nil
}
