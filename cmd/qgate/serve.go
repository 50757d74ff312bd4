package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/config"
	"github.com/qgate/qgate/internal/limits"
	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

const serveAbout = `Runs the qgate gateway: the gRPC API (qgate.v1.QueueService and AdminService,
grpc.health.v1.Health, server reflection) over a health-checked pool of nsqd
nodes.

With no --nsqd and no --lookupd, and no --config, it starts three real nsqd
nodes inside this process (an embedded default for trying qgate and for
tests), with their data under a temporary directory that it logs and removes
on exit; --data-dir keeps the data in a directory of your choice instead.
A config file gets the same with "embedded: 3" in place of nodes (a file
without nodes is an error, not a silent embedded default).

--nsqd lists external nodes as TCP addresses; each node's HTTP address (for
health checks) is its TCP port + 1, nsqd's 4150/4151 defaults, unless given
after a slash: 10.0.0.1:4150/10.0.0.1:8080. Flags override the config file.

Operations: Prometheus metrics, /healthz and /readyz on --metrics-addr
(127.0.0.1:7071; "off" for none). Bearer tokens come from the config file's
auth section and from $QGATE_TOKEN (one token that may do everything); with
none, auth is off. --tls-cert/--tls-key serve TLS on the gRPC and metrics
listeners, --tls-client-ca makes it mutual. SIGHUP reloads the tokens from
the config file (a revoked token's open streams end).

On SIGINT or SIGTERM: health goes NOT_SERVING, subscriptions hand back their
unacked messages and end with UNAVAILABLE, running calls get
--shutdown-timeout to finish, then the pool and the embedded nodes stop.`

const serveExample = `  qgate serve                                   # embedded nodes, 127.0.0.1:7070
  qgate serve --listen :7070 --nsqd 10.0.0.1:4150,10.0.0.2:4150 --mode failover
  qgate serve --config docs/examples/ha.yaml --log-format json
  qgate serve --config docs/examples/embedded.yaml         # embedded nodes, tokens from the file
  qgate serve --config qgate.yaml --tls-cert server.crt --tls-key server.key --metrics-addr :7071`

// serveFlags are serve's flags after parsing.
type serveFlags struct {
	fs                  *flagSet
	listen, configPath  string
	nsqd, lookupd       listFlag
	mode                string
	dataDir             string
	checkInterval       time.Duration
	checkTimeout        time.Duration
	fall, rise          int
	failbackHold        time.Duration
	attemptTimeout      time.Duration
	attemptTimeoutMin   time.Duration
	ejectConsecutive    int
	ejectBase, ejectMax time.Duration
	ejectDecay          time.Duration
	maxEjectionPercent  int
	maxBodySize         int
	maxBatchMessages    int
	maxBatchSize        int
	replicas            int
	minReplicas         int
	standbyDelay        time.Duration
	ackTopic            string
	timerTopic          string
	timerHop            time.Duration
	shutdownTimeout     time.Duration
	logLevel, logFormat string

	metricsAddr                        string
	tlsCert, tlsKey, tlsClientCA       string
	nsqdTLS                            bool
	nsqdTLSCA, nsqdTLSCert, nsqdTLSKey string
	nsqdAuthSecret                     string
	maxStreams                         uint
	maxSubsPerToken                    int
	ratePerToken                       float64
	rateBurst                          int
}

func newServeFlags() *serveFlags {
	f := &serveFlags{fs: newFlagSet("serve", "qgate [serve] [flags]", serveAbout, serveExample)}
	fs := f.fs
	fs.StringVar(&f.listen, "listen", server.DefaultAddr, "gRPC listen address (\":7070\" listens on all interfaces)")
	fs.StringVar(&f.configPath, "config", "", "YAML config file (see docs/examples); flags override it")
	fs.Var(&f.nsqd, "nsqd", "external nsqd nodes, comma-separated `tcp[/http],...` (http defaults to the tcp port + 1)")
	fs.StringVar(&f.mode, "mode", string(nsq.ModeCluster), "pool mode of the nodes: cluster or failover (ha needs groups from --config)")
	fs.Var(&f.lookupd, "lookupd", "nsqlookupd HTTP addresses to discover nodes from (cluster mode), comma-separated `http://host:port,...`")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory of the embedded nodes, kept on exit (default: a temporary directory, removed on exit)")
	fs.DurationVar(&f.checkInterval, "check-interval", time.Second, "interval between health checks of a node")
	fs.DurationVar(&f.checkTimeout, "check-timeout", 500*time.Millisecond, "timeout of one health check")
	fs.IntVar(&f.fall, "fall", 2, "consecutive failed checks that take a node down")
	fs.IntVar(&f.rise, "rise", 2, "consecutive passed checks that bring a node up")
	fs.DurationVar(&f.failbackHold, "failback-hold", nsq.DefaultFailbackHold, "how long a recovered higher-priority node must stay up before sends fail back to it")
	fs.DurationVar(&f.attemptTimeout, "attempt-timeout", nsq.DefaultAttemptTimeout, "most a send waits on one node before it moves to another; the timeout adapts to 10× the node's recent p99 within [--attempt-timeout-min, this]")
	fs.DurationVar(&f.attemptTimeoutMin, "attempt-timeout-min", nsq.DefaultAttemptTimeoutMin, "least a send waits on one node before it moves to another (set it to --attempt-timeout for a fixed timeout)")
	fs.IntVar(&f.ejectConsecutive, "eject-consecutive", health.DefaultConsecutive, "consecutive failed sends (timeouts, connection errors) that eject a node, whatever its health checks say; 1 once re-admitted, until its ejections decay")
	fs.DurationVar(&f.ejectBase, "eject-base", health.DefaultBaseEjection, "how long a node's first data-path ejection lasts; the n-th consecutive one lasts n times this (passing health checks do not end it early; failing ones make it an ordinary down node)")
	fs.DurationVar(&f.ejectMax, "eject-max", health.DefaultMaxEjection, "longest data-path ejection")
	fs.DurationVar(&f.ejectDecay, "eject-decay", health.DefaultEjectionDecay, "every this long without a failed send takes one off a re-admitted node's ejection count")
	fs.IntVar(&f.maxEjectionPercent, "max-ejection-percent", health.DefaultMaxEjectionPercent, "no ejection for failed sends once this percent of the nodes (at least 1) is down, for any reason; never of the last usable node")
	fs.IntVar(&f.maxBodySize, "max-body-size", service.DefaultMaxBodyBytes, "largest message as stored in bytes, qgate's envelope (about 70 bytes plus the attributes) included: equal to the nodes' --max-msg-size (embedded nodes follow it upward)")
	fs.IntVar(&f.maxBatchMessages, "max-batch-messages", service.DefaultMaxBatchMessages, "most messages in one Send")
	fs.IntVar(&f.maxBatchSize, "max-batch-size", service.DefaultMaxBatchBytes, "largest Send batch in bytes (nsqd's --max-body-size; embedded nodes follow it upward); gRPC requests may be 64 KiB larger")
	fs.IntVar(&f.replicas, "replicas", 2, "copies of a Send that does not ask for a number itself, each acknowledged by a different node (distinct groups first; failover: the active node and a backup), so an acknowledged message survives the loss of a node; 1 keeps one copy (at most 3)")
	fs.IntVar(&f.minReplicas, "min-replicas", 0, "fewest copies a replicated Send may write when fewer nodes than it asks for are usable (fewer: UNAVAILABLE); 0: every copy asked for")
	fs.DurationVar(&f.standbyDelay, "standby-delay", nsq.DefaultStandbyDelay, "when a replicated message's standby copies become deliverable (if it was not acked by then): after its send (and delay) plus this")
	fs.StringVar(&f.timerTopic, "timer-topic", nsq.DefaultTimerTopic, "NSQ topic that holds messages sent with a delay longer than --timer-hop until they are due, read by every qgate instance sharing the nodes (\"off\": delays up to --timer-hop only)")
	fs.DurationVar(&f.timerHop, "timer-hop", nsq.DefaultTimerHop, "longest step of nsqd's deferral: nsqd's --max-req-timeout, which it must not exceed")
	fs.StringVar(&f.ackTopic, "ack-topic", nsq.DefaultAckTopic, "NSQ topic through which qgate instances sharing nodes share acks, so a replicated message is delivered once across them (\"off\": not shared)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "how long running calls may take to finish on shutdown")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.metricsAddr, "metrics-addr", metrics.DefaultAddr, "HTTP address of /metrics, /healthz and /readyz (\"off\": no metrics listener)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the gRPC and metrics listeners; with --tls-key, they serve TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "PEM CA certificates: clients must present a certificate they signed (mutual TLS)")
	fs.BoolVar(&f.nsqdTLS, "nsqd-tls", false, "connect to nsqd with TLS (implied by --nsqd-tls-ca and --nsqd-tls-cert; default CAs: the system's)")
	fs.StringVar(&f.nsqdTLSCA, "nsqd-tls-ca", "", "PEM CA certificates of the nsqd certificates")
	fs.StringVar(&f.nsqdTLSCert, "nsqd-tls-cert", "", "PEM client certificate for nsqd (with --nsqd-tls-key)")
	fs.StringVar(&f.nsqdTLSKey, "nsqd-tls-key", "", "PEM key of --nsqd-tls-cert")
	fs.StringVar(&f.nsqdAuthSecret, "nsqd-auth-secret", "", "secret sent with AUTH to nsqd (nsqd --auth-http-address; default $"+envNSQDAuthSecret+")")
	fs.UintVar(&f.maxStreams, "max-streams", 0, "most concurrent streams and calls of one client connection; more wait for a free slot (0: no limit)")
	fs.IntVar(&f.maxSubsPerToken, "max-subscriptions-per-token", 0, "most open Subscribe streams of one token; more get RESOURCE_EXHAUSTED (0: no limit)")
	fs.Float64Var(&f.ratePerToken, "rate-per-token", 0, "requests per second of one token (unary calls, stream starts, SendStream requests); more get RESOURCE_EXHAUSTED (0: no limit)")
	fs.IntVar(&f.rateBurst, "rate-burst", 0, "requests a token may make at once under --rate-per-token (0: the rate, rounded up)")
	return f
}

// set reports whether the flag was given on the command line.
func (f *serveFlags) set(name string) bool {
	given := false
	f.fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	return given
}

// envNSQDAuthSecret is the environment variable of nsqd's AUTH secret.
const envNSQDAuthSecret = "QGATE_NSQD_AUTH_SECRET"

// settings is everything serve needs, from the config file and the flags.
type settings struct {
	listen   string
	poolCfg  nsq.Config // Groups empty: embedded nodes (unless lookupd)
	mode     nsq.Mode
	embedded bool
	// embeddedNodes is how many embedded nodes to start.
	embeddedNodes int
	limits        service.Limits
	// replicas is the copies of a Send that asks for none; replicasSet:
	// given (flag or file), else it follows the node count.
	replicas    int
	replicasSet bool

	configPath  string // reread on reload
	metricsAddr string // "off": none
	tls         config.TLS
	nsqd        config.NSQD
	tokens      []auth.Token // from the file; the env token is added by serve
	opsLimits   limits.Config
}

// settings merges the config file (if any) and the flags given, which win.
func (f *serveFlags) settings() (*settings, error) {
	s := &settings{listen: f.listen, mode: nsq.Mode(f.mode), configPath: f.configPath, metricsAddr: f.metricsAddr,
		embeddedNodes: defaultEmbeddedNodes, replicas: f.replicas, replicasSet: f.set("replicas")}
	if f.configPath != "" {
		file, err := config.Load(f.configPath)
		if err != nil {
			return nil, err
		}
		if s.poolCfg, err = file.PoolConfig(); err != nil {
			return nil, err
		}
		if file.Listen != "" && !f.set("listen") {
			s.listen = file.Listen
		}
		if !f.set("mode") {
			s.mode = file.Mode
		}
		if file.Embedded > 0 {
			s.embeddedNodes = file.Embedded
		}
		if file.Replicas > 0 && !f.set("replicas") {
			s.replicas, s.replicasSet = file.Replicas, true
		}
		s.limits = service.Limits{MaxBodyBytes: int(file.Limits.MaxBodyBytes),
			MaxBatchMessages: file.Limits.MaxBatchMessages, MaxBatchBytes: int(file.Limits.MaxBatchBytes)}
		if file.MetricsListen != "" && !f.set("metrics-addr") {
			s.metricsAddr = file.MetricsListen
		}
		s.tls, s.nsqd, s.tokens = file.TLS, file.NSQD, file.Auth.Tokens
		s.opsLimits = limits.Config{MaxConcurrentStreams: file.Limits.MaxStreams,
			MaxSubscriptionsPerToken: file.Limits.MaxSubscriptionsPerToken,
			Rate:                     file.Limits.RatePerToken, Burst: file.Limits.RateBurst}
	}
	if err := f.applyFlags(s); err != nil {
		return nil, err
	}
	s.embedded = len(s.poolCfg.Groups) == 0 && len(s.poolCfg.LookupdHTTPAddrs) == 0
	return s, nil
}

// applyFlags lets the flags given override s; defaults fill what the config
// file left at zero (the pool and service have the same defaults).
func (f *serveFlags) applyFlags(s *settings) error {
	if f.set("nsqd") {
		nodes, err := parseNodes(f.nsqd)
		if err != nil {
			return err
		}
		if s.poolCfg.Groups, err = nsq.GroupsForMode(s.mode, nodes); err != nil {
			return err
		}
	}
	if f.set("lookupd") {
		s.poolCfg.LookupdHTTPAddrs = f.lookupd
	}
	override := func(name string, dst *time.Duration, v time.Duration) {
		if f.set(name) || *dst == 0 {
			*dst = v
		}
	}
	override("check-interval", &s.poolCfg.Check.Interval, f.checkInterval)
	override("check-timeout", &s.poolCfg.Check.Timeout, f.checkTimeout)
	override("failback-hold", &s.poolCfg.FailbackHold, f.failbackHold)
	override("standby-delay", &s.poolCfg.StandbyDelay, f.standbyDelay)
	if s.poolCfg.AckTopic == "" || f.set("ack-topic") {
		s.poolCfg.AckTopic = f.ackTopic
	}
	if s.poolCfg.AckTopic == "off" {
		s.poolCfg.AckTopic = ""
	}
	if s.poolCfg.TimerTopic == "" || f.set("timer-topic") {
		s.poolCfg.TimerTopic = f.timerTopic
	}
	if s.poolCfg.TimerTopic == "off" {
		s.poolCfg.TimerTopic = ""
	}
	override("timer-hop", &s.poolCfg.TimerHop, f.timerHop)
	override("attempt-timeout", &s.poolCfg.AttemptTimeout, f.attemptTimeout)
	override("attempt-timeout-min", &s.poolCfg.AttemptTimeoutMin, f.attemptTimeoutMin)
	if s.poolCfg.AttemptTimeoutMin > s.poolCfg.AttemptTimeout && !f.set("attempt-timeout-min") {
		s.poolCfg.AttemptTimeoutMin = s.poolCfg.AttemptTimeout // a short fixed timeout asked for
	}
	override("eject-base", &s.poolCfg.Eject.BaseEjection, f.ejectBase)
	override("eject-max", &s.poolCfg.Eject.MaxEjection, f.ejectMax)
	override("eject-decay", &s.poolCfg.Eject.Decay, f.ejectDecay)
	overrideInt := func(name string, dst *int, v int) {
		if f.set(name) || *dst == 0 {
			*dst = v
		}
	}
	overrideInt("fall", &s.poolCfg.Check.Fall, f.fall)
	if f.set("min-replicas") {
		s.poolCfg.MinReplicas = f.minReplicas
	}
	overrideInt("rise", &s.poolCfg.Check.Rise, f.rise)
	overrideInt("eject-consecutive", &s.poolCfg.Eject.Consecutive, f.ejectConsecutive)
	overrideInt("max-ejection-percent", &s.poolCfg.Eject.MaxEjectionPercent, f.maxEjectionPercent)
	overrideInt("max-body-size", &s.limits.MaxBodyBytes, f.maxBodySize)
	overrideInt("max-batch-messages", &s.limits.MaxBatchMessages, f.maxBatchMessages)
	overrideInt("max-batch-size", &s.limits.MaxBatchBytes, f.maxBatchSize)
	f.applyOpsFlags(s)
	return nil
}

// checkOps checks the operations settings that flags and file together
// make; it returns what is wrong, or "".
func (s *settings) checkOps() string {
	switch {
	case (s.tls.CertFile == "") != (s.tls.KeyFile == ""):
		return "--tls-cert and --tls-key go together"
	case s.tls.ClientCAFile != "" && s.tls.CertFile == "":
		return "--tls-client-ca needs --tls-cert and --tls-key"
	case (s.nsqd.TLSCertFile == "") != (s.nsqd.TLSKeyFile == ""):
		return "--nsqd-tls-cert and --nsqd-tls-key go together"
	case s.metricsAddr != "off" && s.metricsAddr != "" && !validAddr(s.metricsAddr):
		return fmt.Sprintf("--metrics-addr %q: want host:port, :port or off", s.metricsAddr)
	}
	return ""
}

// validAddr reports whether addr is host:port (host may be empty).
func validAddr(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

// applyOpsFlags lets the operations flags given override s.
func (f *serveFlags) applyOpsFlags(s *settings) {
	str := func(name string, dst *string, v string) {
		if f.set(name) {
			*dst = v
		}
	}
	str("tls-cert", &s.tls.CertFile, f.tlsCert)
	str("tls-key", &s.tls.KeyFile, f.tlsKey)
	str("tls-client-ca", &s.tls.ClientCAFile, f.tlsClientCA)
	str("nsqd-tls-ca", &s.nsqd.TLSCAFile, f.nsqdTLSCA)
	str("nsqd-tls-cert", &s.nsqd.TLSCertFile, f.nsqdTLSCert)
	str("nsqd-tls-key", &s.nsqd.TLSKeyFile, f.nsqdTLSKey)
	str("nsqd-auth-secret", &s.nsqd.AuthSecret, f.nsqdAuthSecret)
	if f.set("nsqd-tls") {
		s.nsqd.TLS = f.nsqdTLS
	}
	s.nsqd.TLS = s.nsqd.TLS || s.nsqd.TLSCAFile != "" || s.nsqd.TLSCertFile != ""
	if f.set("max-streams") {
		s.opsLimits.MaxConcurrentStreams = uint32(min(f.maxStreams, math.MaxUint32))
	}
	if f.set("max-subscriptions-per-token") {
		s.opsLimits.MaxSubscriptionsPerToken = f.maxSubsPerToken
	}
	if f.set("rate-per-token") {
		s.opsLimits.Rate = f.ratePerToken
	}
	if f.set("rate-burst") {
		s.opsLimits.Burst = f.rateBurst
	}
}

// parseNodes parses --nsqd entries: "host:port" (HTTP on port+1) or
// "tcphost:port/httphost:port".
func parseNodes(list []string) ([]nsq.NodeConfig, error) {
	var nodes []nsq.NodeConfig
	for _, entry := range list {
		tcp, httpAddr, explicit := strings.Cut(entry, "/")
		host, port, err := splitHostPort(tcp)
		if err != nil {
			return nil, fmt.Errorf("--nsqd %q: %w", entry, err)
		}
		if explicit {
			if _, _, err := splitHostPort(httpAddr); err != nil {
				return nil, fmt.Errorf("--nsqd %q: http address: %w", entry, err)
			}
		} else {
			if port == 65535 {
				return nil, fmt.Errorf("--nsqd %q: cannot derive the HTTP port (tcp port + 1); give it as tcp/http", entry)
			}
			httpAddr = joinHostPort(host, port+1)
		}
		nodes = append(nodes, nsq.NodeConfig{TCPAddr: tcp, HTTPAddr: httpAddr})
	}
	if len(nodes) == 0 {
		return nil, errors.New("--nsqd: no nodes given")
	}
	return nodes, nil
}

// newLogger builds the process's logger from --log-level and --log-format.
func newLogger(f *serveFlags, e *env) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", f.logFormat)
}

func runServe(ctx context.Context, e *env, args []string) error {
	f := newServeFlags()
	if err := f.fs.parse(e, args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return f.fs.usageErr(e, "unexpected arguments %q", f.fs.Args())
	}
	if f.replicas < 1 || f.replicas > service.MaxReplicas {
		return f.fs.usageErr(e, "--replicas must be 1 to %d", service.MaxReplicas)
	}
	if f.minReplicas < 0 || f.minReplicas > service.MaxReplicas {
		return f.fs.usageErr(e, "--min-replicas must be 0 to %d", service.MaxReplicas)
	}
	if f.maxSubsPerToken < 0 || f.ratePerToken < 0 || f.rateBurst < 0 {
		return f.fs.usageErr(e, "--max-subscriptions-per-token, --rate-per-token and --rate-burst must not be negative")
	}
	logger, err := newLogger(f, e)
	if err != nil {
		return f.fs.usageErr(e, "%v", err)
	}
	s, err := f.settings()
	if err != nil {
		return err
	}
	if msg := s.checkOps(); msg != "" {
		return f.fs.usageErr(e, "%s", msg)
	}
	if s.nsqd.AuthSecret == "" {
		s.nsqd.AuthSecret = e.env(envNSQDAuthSecret)
	}
	g := &gateway{settings: s, dataDir: f.dataDir, shutdownTimeout: f.shutdownTimeout, log: logger, getenv: e.env}
	if err := g.start(ctx); err != nil {
		g.stop()
		return err
	}
	if e.metricsReady != nil && g.metricsSrv != nil {
		e.metricsReady(g.metricsSrv.Addr().String())
	}
	if e.ready != nil {
		e.ready(g.srv.Addr().String())
	}
	stopReload := g.watchReload(e.reload)
	err = g.srv.Serve(ctx)
	stopReload()
	g.stop()
	return err
}
