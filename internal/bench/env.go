package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qgate/qgate/backends/nsq"
	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

// env is what a run measures against: the nsqd nodes, the qgate (in-process
// or remote) and a client of each kind.
type env struct {
	cfg   Config
	nodes []NodeAddr
	runID string
	cpu   cpuMeter
	http  *http.Client

	// In-process parts, nil when given from outside.
	local   []*nsqd.Node
	dataDir string
	pool    *nsq.Pool
	queue   *service.Queue
	srv     *server.Server
	served  chan error
	stopSrv context.CancelFunc

	addr   string // the qgate gRPC address
	conn   *grpc.ClientConn
	client qgatev1.QueueServiceClient
	// producers holds one direct go-nsq producer per node, shared by the
	// direct side's workers as an application would share them.
	producers []*gonsq.Producer
}

// startEnv starts (or connects to) the nodes and qgate. close releases
// everything it started.
func startEnv(ctx context.Context, cfg Config) (*env, error) {
	e := &env{cfg: cfg, runID: randomID(), http: &http.Client{Timeout: 10 * time.Second}}
	if err := e.start(ctx); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) start(ctx context.Context) error {
	e.nodes = e.cfg.NSQD
	if len(e.nodes) == 0 {
		dir, err := os.MkdirTemp("", "qgate-bench-")
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		e.dataDir = dir
		e.local, err = nsqd.StartN(ctx, e.cfg.Nodes, dir, e.cfg.Logger)
		if err != nil {
			return fmt.Errorf("bench: start nsqd: %w", err)
		}
		for _, n := range e.local {
			e.nodes = append(e.nodes, NodeAddr{TCP: n.TCPAddr, HTTP: n.HTTPAddr})
		}
	}
	e.addr = e.cfg.Addr
	if e.addr == "" {
		if err := e.startQgate(ctx); err != nil {
			return err
		}
	}
	e.cpu = cpuMeter{pids: e.cfg.CPUPIDs}
	if e.cfg.QgatePID != 0 {
		e.cpu.pids = append(e.cpu.pids, e.cfg.QgatePID)
	}
	conn, err := grpc.NewClient("passthrough:///"+e.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(service.DefaultLimits().MaxRequestBytes())))
	if err != nil {
		return fmt.Errorf("bench: dial qgate %s: %w", e.addr, err)
	}
	e.conn = conn
	e.client = qgatev1.NewQueueServiceClient(conn)
	for _, n := range e.nodes {
		p, err := newProducer(n.TCP)
		if err != nil {
			return err
		}
		e.producers = append(e.producers, p)
	}
	return nil
}

// startQgate builds qgate in this process, as `qgate serve` does: a cluster
// pool over the nodes, the queue service and the gRPC server on a free
// loopback port.
func (e *env) startQgate(ctx context.Context) error {
	ncs := make([]nsq.NodeConfig, len(e.nodes))
	for i, n := range e.nodes {
		ncs[i] = nsq.NodeConfig{TCPAddr: n.TCP, HTTPAddr: n.HTTP}
	}
	groups, err := nsq.GroupsForMode(nsq.ModeCluster, ncs)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	e.pool, err = nsq.New(nsq.Config{Groups: groups, Logger: e.cfg.Logger})
	if err != nil {
		return fmt.Errorf("bench: start pool: %w", err)
	}
	for !e.pool.Writable() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	e.queue = service.New(e.pool, service.WithLogger(e.cfg.Logger))
	e.srv, err = server.New(server.Config{
		Addr:           "127.0.0.1:0",
		Logger:         e.cfg.Logger,
		Queue:          e.queue,
		OnShutdown:     []func(){e.queue.BeginShutdown},
		MaxRecvMsgSize: e.queue.Limits().MaxRequestBytes(),
	})
	if err != nil {
		return fmt.Errorf("bench: start qgate: %w", err)
	}
	e.addr = e.srv.Addr().String()
	sctx, cancel := context.WithCancel(context.Background())
	e.stopSrv = cancel
	e.served = make(chan error, 1)
	go func() { e.served <- e.srv.Serve(sctx) }()
	return nil
}

// close stops what start started, in reverse order.
func (e *env) close() {
	for _, p := range e.producers {
		p.Stop()
	}
	if e.conn != nil {
		_ = e.conn.Close()
	}
	if e.srv != nil {
		e.stopSrv()
		<-e.served
	}
	if e.queue != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.queue.Shutdown(ctx)
		cancel()
	}
	if e.pool != nil {
		_ = e.pool.Close()
	}
	if len(e.local) > 0 {
		_ = nsqd.StopAll(e.local)
	}
	if e.dataDir != "" {
		_ = os.RemoveAll(e.dataDir)
	}
}

// qgatePID is the pid whose RSS the memory mode samples.
func (e *env) qgatePID() int { return e.cfg.QgatePID }

// inProcess tells whether qgate runs in this process.
func (e *env) inProcess() bool { return e.srv != nil }

// topic returns a fresh topic name for one side of one round. Send
// workloads use ephemeral topics with Config.Ephemeral.
func (e *env) topic(w *workload, side string, round int, durable bool) string {
	t := fmt.Sprintf("qb-%s-%s-%s%d", e.runID, w.name, side, round)
	if !durable {
		t += "#ephemeral"
	}
	return t
}

// createChannel creates topic and channel on every node, so a backlog
// written before the subscriber connects is queued for that channel.
func (e *env) createChannel(ctx context.Context, topic, channel string) error {
	for _, n := range e.nodes {
		if err := e.post(ctx, n, "/topic/create", url.Values{"topic": {topic}}); err != nil {
			return err
		}
		if err := e.post(ctx, n, "/channel/create", url.Values{"topic": {topic}, "channel": {channel}}); err != nil {
			return err
		}
	}
	return nil
}

// deleteTopic deletes topic on every node, with its queued messages; a
// node that does not have it is fine.
func (e *env) deleteTopic(ctx context.Context, topic string) {
	for _, n := range e.nodes {
		_ = e.post(ctx, n, "/topic/delete", url.Values{"topic": {topic}})
	}
}

func (e *env) post(ctx context.Context, n NodeAddr, path string, q url.Values) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.HTTP+path+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("bench: nsqd %s%s: %w", n.HTTP, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: nsqd %s%s: %s: %s", n.HTTP, path, resp.Status, body)
	}
	return nil
}

// newProducer returns a connected go-nsq producer with logging off.
func newProducer(addr string) (*gonsq.Producer, error) {
	p, err := gonsq.NewProducer(addr, gonsq.NewConfig())
	if err != nil {
		return nil, fmt.Errorf("bench: producer %s: %w", addr, err)
	}
	p.SetLogger(quietLogger, gonsq.LogLevelError)
	if err := p.Ping(); err != nil {
		p.Stop()
		return nil, fmt.Errorf("bench: producer %s: %w", addr, err)
	}
	return p, nil
}

// quietLogger discards go-nsq's logs.
var quietLogger = log.New(io.Discard, "", 0)

// randomID returns 6 random hex characters that keep one run's topics
// apart from another's on shared nodes.
func randomID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// nextPort returns addr with its port plus one.
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("bench: nsqd address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("bench: nsqd address %q: %w", addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

var errNoMessages = errors.New("bench: no message got through")
