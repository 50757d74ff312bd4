package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
	"github.com/qgate/qgate/internal/server"
	"github.com/qgate/qgate/service"
)

// gatewayConfig is what a qgate of the harness runs with; it is also the
// JSON a gateway child process gets.
type gatewayConfig struct {
	Addr   string
	Groups []nsq.GroupConfig
	// Check interval etc. are short so faults are noticed fast.
	CheckInterval, CheckTimeout time.Duration
	Fall, Rise                  int
	FailbackHold                time.Duration
	AttemptTimeout              time.Duration
	// StandbyDelay and AckTopic: see nsq.Config (one delivery per
	// replicated message across the harness's qgates).
	StandbyDelay time.Duration
	AckTopic     string
	// TimerTopic and TimerHop: see nsq.Config (long delays).
	TimerTopic string
	TimerHop   time.Duration
}

func (gc gatewayConfig) poolConfig(log *slog.Logger) nsq.Config {
	return nsq.Config{
		Groups: gc.Groups,
		Check: health.Config{
			Interval: gc.CheckInterval, Timeout: gc.CheckTimeout,
			Fall: gc.Fall, Rise: gc.Rise,
		},
		FailbackHold:   gc.FailbackHold,
		DialTimeout:    gc.AttemptTimeout,
		WriteTimeout:   gc.AttemptTimeout,
		AttemptTimeout: gc.AttemptTimeout,
		StandbyDelay:   gc.StandbyDelay,
		AckTopic:       gc.AckTopic,
		TimerTopic:     gc.TimerTopic,
		TimerHop:       gc.TimerHop,
		Logger:         log,
	}
}

// gateway is a running qgate.
type gateway interface {
	// addr is the gRPC address.
	addr() string
	// stop shuts down gracefully: streams end, unacked deliveries are
	// handed back, the pool closes.
	stop() error
	// kill stops abruptly: nothing is handed back (a child process gets
	// SIGKILL); an in-process gateway cannot do that and stops gracefully.
	kill() error
}

// inproc is a qgate in this process: the real pool, service and server.
type inproc struct {
	pool   *nsq.Pool
	queue  *service.Queue
	health *service.Health
	srv    *server.Server
	served chan error
	cancel context.CancelFunc
}

// startInproc starts an in-process qgate.
func startInproc(gc gatewayConfig, log *slog.Logger) (*inproc, error) {
	pool, err := nsq.New(gc.poolConfig(log))
	if err != nil {
		return nil, fmt.Errorf("chaos: pool: %w", err)
	}
	q := service.New(pool, service.WithLogger(log))
	admin := service.NewAdmin(pool, service.WithLogger(log))
	srv, err := server.New(server.Config{
		Addr:           gc.Addr,
		Logger:         log,
		Queue:          q,
		Admin:          admin,
		OnShutdown:     []func(){q.BeginShutdown, admin.BeginShutdown},
		MaxRecvMsgSize: q.Limits().MaxRequestBytes(),
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("chaos: server: %w", err)
	}
	g := &inproc{pool: pool, queue: q, srv: srv, served: make(chan error, 1)}
	g.health = service.StartHealth(srv.Health(), pool)
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.served <- srv.Serve(ctx) }()
	return g, nil
}

func (g *inproc) addr() string { return g.srv.Addr().String() }

func (g *inproc) stop() error {
	g.cancel()
	err := <-g.served
	g.health.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = errors.Join(err, g.queue.Shutdown(ctx), g.pool.Close())
	return err
}

func (g *inproc) kill() error { return g.stop() }

// childEnv, when set in a process's environment, makes Main (and the
// package's TestMain) run a gateway child with the JSON config it holds.
const childEnv = "QGATE_CHAOS_GATEWAY"

// child is a qgate in a child process: the test binary or the qgate
// command re-executed with childEnv set.
type child struct {
	cmd    *exec.Cmd
	a      string
	exited chan struct{}
}

// startChild runs command (argv) as a gateway child and waits until it
// serves.
func startChild(ctx context.Context, command []string, gc gatewayConfig, out io.Writer) (*child, error) {
	js, err := json.Marshal(gc)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("chaos: gateway child: %w", err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "chaos-gateway-ready "); ok {
				ready <- a
			}
		}
		_ = cmd.Wait()
		close(c.exited)
	}()
	select {
	case c.a = <-ready:
		return c, nil
	case <-c.exited:
		return nil, errors.New("chaos: gateway child exited before serving")
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	case <-time.After(20 * time.Second):
		c.kill()
		return nil, errors.New("chaos: gateway child not serving after 20s")
	}
}

func (c *child) addr() string { return c.a }

func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	return c.wait()
}

func (c *child) kill() error {
	_ = c.cmd.Process.Kill()
	return c.wait()
}

func (c *child) wait() error {
	select {
	case <-c.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return errors.New("chaos: gateway child did not exit in 15s")
	}
}

// runChild is the body of a gateway child: serve with the config in js
// until SIGTERM or SIGINT (graceful stop), print the ready line on stdout.
func runChild(js string, stdout, stderr io.Writer) int {
	var gc gatewayConfig
	if err := json.Unmarshal([]byte(js), &gc); err != nil {
		fmt.Fprintf(stderr, "chaos gateway: bad %s: %v\n", childEnv, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := startInproc(gc, log)
	if err != nil {
		fmt.Fprintf(stderr, "chaos gateway: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Fprintf(stdout, "chaos-gateway-ready %s\n", g.addr())
	<-ctx.Done()
	if err := g.stop(); err != nil {
		fmt.Fprintf(stderr, "chaos gateway: stop: %v\n", err)
		return 1
	}
	return 0
}
