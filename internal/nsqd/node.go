package nsqd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	nsqio "github.com/nsqio/nsq/nsqd"
)

// DefaultQueueScanRefreshInterval is Options.QueueScanRefreshInterval's
// default.
const DefaultQueueScanRefreshInterval = time.Second

// Options configure one in-process nsqd. Zero values take nsqd's defaults
// unless documented otherwise.
type Options struct {
	// Name identifies the node in logs. Default: "nsqd-<tcp port>".
	Name string
	// DataDir holds the node's queue files and metadata. Required. It is
	// created if missing; a second node may not use it while the first runs.
	DataDir string
	// Logger receives nsqd's logs, tagged with the node name. nsqd's INFO
	// lines (every connection, topic and channel) are logged at slog Debug,
	// its warnings and errors at Warn and Error. nil discards all logs.
	Logger *slog.Logger
	// ID is nsqd's node id, part of every message id it generates, in
	// [0,1024). Nodes of one pool should differ. 0 picks a random id.
	ID int64
	// TCPAddr and HTTPAddr are the listen addresses. Default "127.0.0.1:0"
	// (a free port); set them to restart a node on the ports it had.
	TCPAddr, HTTPAddr string
	// MemQueueSize is how many messages per topic and channel are kept in
	// memory before spilling to disk. nsqd default 10000.
	MemQueueSize int64
	// MsgTimeout is the default time a consumer has to finish a message
	// before nsqd requeues it. nsqd default 60s.
	MsgTimeout time.Duration
	// MaxMsgTimeout bounds the per-connection msg timeout a client may ask
	// for and TOUCH. nsqd default 15m.
	MaxMsgTimeout time.Duration
	// MaxReqTimeout bounds a REQ delay and a DPUB defer. nsqd default 1h.
	MaxReqTimeout time.Duration
	// MaxMsgSize is the largest message body nsqd accepts, in bytes. nsqd
	// default 1 MiB.
	MaxMsgSize int64
	// MaxBodySize is the largest MPUB command body, in bytes. nsqd default
	// 5 MiB.
	MaxBodySize int64
	// SyncEvery is how many messages are written to disk between fsyncs.
	// nsqd default 2500.
	SyncEvery int64
	// SyncTimeout is the longest time between fsyncs. nsqd default 2s.
	SyncTimeout time.Duration
	// QueueScanRefreshInterval is how often nsqd refreshes the list of
	// channels whose deferred and timed-out messages it scans. A channel
	// created after the last refresh has its nack delays, deferred sends and
	// ack deadlines handled late by up to this long. Default 1s here (nsqd's
	// own default, 5s, makes a new subscription's first redeliveries up to 5s
	// late; the refresh is cheap).
	QueueScanRefreshInterval time.Duration
	// Tune, if set, is called with the nsqd options last, to set anything
	// not covered above. Do not change the addresses or the logger.
	Tune func(*nsqio.Options)
}

// Node is one running in-process nsqd.
type Node struct {
	// Name identifies the node in logs.
	Name string
	// TCPAddr is the address for publishers and consumers (127.0.0.1:port).
	TCPAddr string
	// HTTPAddr is the HTTP API address (/ping, /stats, /pub).
	HTTPAddr string
	// DataDir is the node's data directory.
	DataDir string
	// ID is nsqd's node id.
	ID int64

	nsqd     *nsqio.NSQD
	done     chan struct{} // closed when Main has returned
	mainErr  error         // Main's result; read after done
	log      *slogAdapter
	stopOnce sync.Once
	stopErr  error
}

// Start starts one nsqd and returns once it accepts connections. ctx bounds
// only the start; the node runs until Stop.
func Start(ctx context.Context, opts Options) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.DataDir == "" {
		return nil, errors.New("nsqd: Options.DataDir is required")
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("nsqd: data dir: %w", err)
	}
	nopts := nsqdOptions(opts)
	logger := newSlogAdapter()
	logger.set(opts.Logger, opts.Name) // until the name is known
	nopts.Logger = logger
	n, err := nsqio.New(nopts)
	if err != nil {
		return nil, fmt.Errorf("nsqd: start nsqd in %s: %w", opts.DataDir, err)
	}
	node := &Node{
		Name:     opts.Name,
		TCPAddr:  n.RealTCPAddr().String(),
		HTTPAddr: n.RealHTTPAddr().String(),
		DataDir:  opts.DataDir,
		ID:       nopts.ID,
		nsqd:     n,
		log:      logger,
		done:     make(chan struct{}),
	}
	if node.Name == "" {
		node.Name = "nsqd-" + portOf(node.TCPAddr)
	}
	logger.set(opts.Logger, node.Name)
	// Topics and channels a previous run persisted come back before any
	// client can connect, as apps/nsqd does.
	if err := n.LoadMetadata(); err != nil {
		n.Exit()
		return nil, fmt.Errorf("nsqd: %s: load metadata: %w", node.Name, err)
	}
	if err := n.PersistMetadata(); err != nil {
		n.Exit()
		return nil, fmt.Errorf("nsqd: %s: persist metadata: %w", node.Name, err)
	}
	go node.run(opts.Logger)
	// nsqd's Exit waits on the WaitGroup that Main adds its goroutines to;
	// an Exit before Main's first Add would return early and leave them
	// running (the race detector flags it). Main's servers log that they
	// listen from goroutines it has added, so once both lines are seen,
	// Stop is safe.
	select {
	case <-logger.listening:
		return node, nil
	case <-node.done:
		err := node.mainErr
		if err == nil {
			err = errors.New("exited")
		}
		return nil, fmt.Errorf("nsqd: %s: nsqd stopped during start: %w", node.Name, err)
	case <-ctx.Done():
		node.Stop()
		return nil, ctx.Err()
	}
}

// run owns nsqd's Main. Main returns when a listener stops: after Exit, or
// on its own when a listener fails, in which case the node is shut down so
// its goroutines and data-dir lock do not outlive it.
func (n *Node) run(logger *slog.Logger) {
	defer close(n.done)
	err := n.nsqd.Main()
	n.mainErr = err
	if err != nil && logger != nil {
		logger.Error("nsqd stopped", "node", n.Name, "err", err)
	}
	n.nsqd.Exit() // no-op when Stop already called it
}

// Done is closed when the node has stopped, by Stop or by a failure.
func (n *Node) Done() <-chan struct{} { return n.done }

// Stop shuts the node down: listeners close, queues are flushed to the data
// directory, and Stop waits for every nsqd goroutine. It returns the error
// that made nsqd stop on its own, if any. Safe to call more than once.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		// Exit closes the listeners, which makes Main return, and waits for
		// nsqd's goroutines; then wait for our own.
		n.log.stopping.Store(true)
		n.nsqd.Exit()
		<-n.done
		if n.mainErr != nil {
			n.stopErr = fmt.Errorf("nsqd: %s: %w", n.Name, n.mainErr)
		}
	})
	return n.stopErr
}

// NSQD returns the underlying nsqd, for tests that need more than the
// addresses (topic and channel state).
func (n *Node) NSQD() *nsqio.NSQD { return n.nsqd }

// StartN starts n nodes named nsqd-0 … nsqd-(n-1) with data under
// baseDir/nsqd-<i>, distinct node ids and default options. On error the
// nodes already started are stopped.
func StartN(ctx context.Context, n int, baseDir string, logger *slog.Logger) ([]*Node, error) {
	return StartNWith(ctx, n, baseDir, Options{Logger: logger})
}

// StartNWith is StartN with the options of every node taken from tmpl;
// its Name, DataDir and ID are set per node.
func StartNWith(ctx context.Context, n int, baseDir string, tmpl Options) ([]*Node, error) {
	base := rand.Int64N(1024)
	nodes := make([]*Node, 0, n)
	for i := range n {
		name := fmt.Sprintf("nsqd-%d", i)
		opts := tmpl
		opts.Name, opts.DataDir, opts.ID = name, filepath.Join(baseDir, name), (base+int64(i))%1023+1
		node, err := Start(ctx, opts)
		if err != nil {
			StopAll(nodes)
			return nil, err
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

// StopAll stops nodes concurrently and returns their errors joined.
func StopAll(nodes []*Node) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.Stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// nsqdOptions maps opts onto nsqd's defaults.
func nsqdOptions(opts Options) *nsqio.Options {
	o := nsqio.NewOptions()
	o.TCPAddress = orDefault(opts.TCPAddr, "127.0.0.1:0")
	o.HTTPAddress = orDefault(opts.HTTPAddr, "127.0.0.1:0")
	o.HTTPSAddress = ""
	o.BroadcastAddress = "127.0.0.1"
	o.DataPath = opts.DataDir
	o.LogPrefix = ""
	setLevel(o, opts.Logger)
	o.ID = opts.ID
	if o.ID == 0 {
		o.ID = rand.Int64N(1023) + 1
	}
	setIf(&o.MemQueueSize, opts.MemQueueSize)
	setIf(&o.MsgTimeout, opts.MsgTimeout)
	setIf(&o.MaxMsgTimeout, opts.MaxMsgTimeout)
	setIf(&o.MaxReqTimeout, opts.MaxReqTimeout)
	setIf(&o.MaxMsgSize, opts.MaxMsgSize)
	setIf(&o.MaxBodySize, opts.MaxBodySize)
	setIf(&o.SyncEvery, opts.SyncEvery)
	setIf(&o.SyncTimeout, opts.SyncTimeout)
	o.QueueScanRefreshInterval = DefaultQueueScanRefreshInterval
	setIf(&o.QueueScanRefreshInterval, opts.QueueScanRefreshInterval)
	if opts.Tune != nil {
		opts.Tune(o)
	}
	return o
}

func setIf[T int64 | time.Duration](dst *T, v T) {
	if v != 0 {
		*dst = v
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}
