package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/internal/auth"
	"github.com/qgate/qgate/internal/metrics"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

// defaultEmbeddedNodes is how many in-process nsqd nodes the embedded
// default runs.
const defaultEmbeddedNodes = 3

// gateway is a running qgate: embedded nodes (if any), the pool, the
// services and the gRPC server. start builds it in that order; stop takes
// it down in reverse and is safe after a failed start.
type gateway struct {
	*settings
	dataDir         string // --data-dir; "" makes a temporary one
	shutdownTimeout time.Duration
	log             *slog.Logger
	getenv          func(string) string

	tempDir         string // removed by stop
	nodes           []*nsqd.Node
	pool            *nsq.Pool
	metrics         *metrics.Metrics
	stopNodeMetrics func()
	metricsSrv      *metrics.Server     // nil: --metrics-addr off
	authn           *auth.Authenticator // nil: auth off
	queue           *service.Queue
	health          *service.Health
	srv             *server.Server
}

// defaultReplicas returns the replicas of a Send that asks for none: the
// --replicas default (2) needs as many nodes, so with fewer configured
// nodes (and no discovery) it is lowered to the node count, with a warning;
// replicas given (--replicas or the file's replicas) are kept as given.
func (g *gateway) defaultReplicas(cfg nsq.Config) int {
	nodes := 0
	for _, gc := range cfg.Groups {
		nodes += len(gc.Nodes)
	}
	if g.replicasSet || len(cfg.LookupdHTTPAddrs) > 0 || nodes >= g.replicas {
		if nodes < g.replicas && len(cfg.LookupdHTTPAddrs) == 0 {
			g.log.Warn("fewer nodes than --replicas: replicated sends fail until enough nodes are added", "nodes", nodes, "replicas", g.replicas)
		}
		return g.replicas
	}
	g.log.Warn("one copy per Send: fewer nodes than the default replicas, so an acknowledged message is lost with its node (add nodes, or set --replicas)",
		"nodes", nodes, "default_replicas", g.replicas)
	return max(nodes, 1)
}

func (g *gateway) start(ctx context.Context) error {
	if g.embedded {
		if err := g.startNodes(ctx); err != nil {
			return err
		}
	}
	g.metrics = metrics.New()
	cfg := g.poolCfg
	cfg.Logger = g.log
	if err := g.nsqdSecurity(&cfg); err != nil {
		return err
	}
	pool, err := nsq.New(cfg)
	if err != nil {
		return err
	}
	g.pool = pool
	g.replicas = g.defaultReplicas(cfg)
	g.stopNodeMetrics = g.metrics.StartNodeWatch(context.Background(), pool)
	// Only the QueueService's backend is instrumented: Admin and Health
	// read the pool itself.
	g.queue = service.New(g.metrics.Backend(pool), service.WithLogger(g.log), service.WithLimits(g.limits),
		service.WithDefaultReplicas(g.replicas))
	if err := g.startServer(); err != nil {
		return err
	}
	g.health = service.StartHealth(g.srv.Health(), pool)
	return g.startMetrics()
}

// startNodes starts the embedded nsqd nodes and lays them out for the mode.
func (g *gateway) startNodes(ctx context.Context) error {
	dir := g.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "qgate-")
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		g.tempDir, dir = tmp, tmp
	}
	// The embedded nodes take whatever the limits let through, so that
	// raising --max-body-size and --max-batch-size alone is enough for them
	// (nodes of one's own need nsqd's --max-msg-size and --max-body-size
	// raised with them). Never below nsqd's defaults: qgate's own writes
	// (ack records, dead letters) count on those.
	def := service.DefaultLimits()
	nodes, err := nsqd.StartNWith(ctx, g.embeddedNodes, dir, nsqd.Options{Logger: g.log,
		MaxMsgSize:  int64(max(g.limits.MaxBodyBytes, def.MaxBodyBytes)),
		MaxBodySize: int64(max(g.limits.MaxBatchBytes, def.MaxBatchBytes))})
	if err != nil {
		return err
	}
	g.nodes = nodes
	ncs := make([]nsq.NodeConfig, len(nodes))
	for i, n := range nodes {
		ncs[i] = nsq.NodeConfig{Name: n.Name, TCPAddr: n.TCPAddr, HTTPAddr: n.HTTPAddr}
	}
	g.poolCfg.Groups, err = nsq.GroupsForMode(g.mode, ncs)
	if err != nil {
		return err
	}
	g.log.Info("started embedded nsqd nodes", "count", len(nodes), "data_dir", dir,
		"kept", g.tempDir == "")
	return nil
}

// stop releases what start acquired, in reverse order. The server has
// already been shut down by Serve (or is shut down here if Serve never
// ran); the queue's streams ended in its OnShutdown hook.
func (g *gateway) stop() {
	if g.srv != nil {
		g.srv.Shutdown()
	}
	if g.health != nil {
		g.health.Stop()
	}
	if g.metricsSrv != nil {
		if err := g.metricsSrv.Close(); err != nil {
			g.log.Warn("closing the metrics listener", "err", err)
		}
	}
	if g.queue != nil {
		ctx, cancel := context.WithTimeout(context.Background(), g.shutdownTimeout)
		if err := g.queue.Shutdown(ctx); err != nil {
			g.log.Warn("streams did not end in time", "err", err)
		}
		cancel()
	}
	if g.stopNodeMetrics != nil {
		g.stopNodeMetrics()
	}
	if g.pool != nil {
		if err := g.pool.Close(); err != nil && !errors.Is(err, context.Canceled) {
			g.log.Warn("closing the pool", "err", err)
		}
	}
	if len(g.nodes) > 0 {
		if err := nsqd.StopAll(g.nodes); err != nil {
			g.log.Warn("stopping embedded nodes", "err", err)
		}
		g.log.Info("stopped embedded nsqd nodes")
	}
	if g.tempDir != "" {
		if err := os.RemoveAll(g.tempDir); err != nil {
			g.log.Warn("removing the data dir", "dir", g.tempDir, "err", err)
		}
	}
}

// splitHostPort splits host:port and checks the port.
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
