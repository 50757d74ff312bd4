package nsqd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qgate/qgate/internal/syncbuf"
)

// Defaults of ProcessOptions.
const (
	DefaultStartTimeout = 15 * time.Second
	DefaultExitTimeout  = 10 * time.Second
)

// ErrNotRunning is returned by a signal sent to a process that has exited.
var ErrNotRunning = errors.New("nsqd: process not running")

// errAddrInUse marks a start that failed because a port was taken.
var errAddrInUse = errors.New("address already in use")

// ProcessOptions configure StartProcess.
type ProcessOptions struct {
	// Binary is the path of the nsqd executable. Required.
	Binary string
	// TCPAddr and HTTPAddr are nsqd's listen addresses; empty picks a free
	// loopback port (retried on new ports if another process takes it first).
	TCPAddr, HTTPAddr string
	// DataDir is nsqd's --data-path. Required; it must exist.
	DataDir string
	// Args are more nsqd flags, such as "--mem-queue-size=0" or
	// "--msg-timeout=2s"; they come after the ones Start sets and win.
	Args []string
	// Output, if set, receives nsqd's stdout and stderr as well as Output().
	Output io.Writer
	// StartTimeout bounds the wait for /ping after a start. Default
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// ExitTimeout bounds the wait for an exit after Kill or Term. Default
	// DefaultExitTimeout.
	ExitTimeout time.Duration
}

// Process is nsqd running as a child process.
type Process struct {
	opts     ProcessOptions
	nodeID   int
	tcpAddr  string
	httpAddr string
	out      *syncbuf.Buffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	stopped bool          // SIGSTOPped and not yet continued
}

// StartProcess runs nsqd with opts and returns once it answers /ping, ctx is done
// or ProcessOptions.StartTimeout passes. nsqd gets a random --node-id (kept across
// restarts) so that message ids differ between nodes; an --node-id in
// ProcessOptions.Args wins.
func StartProcess(ctx context.Context, opts ProcessOptions) (*Process, error) {
	if opts.Binary == "" {
		return nil, errors.New("nsqd: no nsqd binary")
	}
	if opts.DataDir == "" {
		return nil, errors.New("nsqd: no data directory")
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.ExitTimeout <= 0 {
		opts.ExitTimeout = DefaultExitTimeout
	}
	p := &Process{opts: opts, nodeID: rand.IntN(1023) + 1, out: &syncbuf.Buffer{}}
	pick := opts.TCPAddr == "" || opts.HTTPAddr == ""
	var err error
	for range 5 {
		p.tcpAddr, p.httpAddr = opts.TCPAddr, opts.HTTPAddr
		if p.tcpAddr == "" {
			if p.tcpAddr, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		if p.httpAddr == "" {
			if p.httpAddr, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		if err = p.start(ctx); err == nil {
			return p, nil
		}
		if !pick || !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return nil, fmt.Errorf("nsqd: start nsqd: %w", err)
}

// TCPAddr is nsqd's TCP address; it stays the same across Restart.
func (p *Process) TCPAddr() string { return p.tcpAddr }

// HTTPAddr is nsqd's HTTP address; it stays the same across Restart.
func (p *Process) HTTPAddr() string { return p.httpAddr }

// DataDir is nsqd's data directory; it stays the same across Restart.
func (p *Process) DataDir() string { return p.opts.DataDir }

// Pid is the current process id (it changes on Restart).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Output is everything the process and its earlier runs wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Running reports whether the process has not exited (it may be stopped).
func (p *Process) Running() bool {
	select {
	case <-p.exitedCh():
		return false
	default:
		return true
	}
}

// Stopped reports whether the process is frozen by Stop.
func (p *Process) Stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// Kill sends SIGKILL and waits for the exit: nothing is flushed. Killing a
// process that has exited does nothing.
func (p *Process) Kill() error {
	if !p.Running() {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	p.setStopped(false)
	return p.waitExit()
}

// Term sends SIGTERM (after SIGCONT if frozen) and waits for nsqd's clean
// exit, which flushes its queues to disk. Terminating a process that has
// exited does nothing.
func (p *Process) Term() error {
	if !p.Running() {
		return nil
	}
	if err := p.Cont(); err != nil {
		return err
	}
	if err := p.signal(syscall.SIGTERM); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	return p.waitExit()
}

// Stop freezes the process with SIGSTOP: connections stay open but nothing
// answers, as with a hung node.
func (p *Process) Stop() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.setStopped(true)
	waitFrozen(p.Pid())
	return nil
}

// waitFrozen waits (at most a second) until the kernel reports pid as
// stopped. kill(SIGSTOP) returns before every thread of the process has
// stopped, so a request in the next moment could still be answered.
func waitFrozen(pid int) {
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			return // not Linux, or gone
		}
		// The state follows the command name, which is in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return
		}
	}
}

// Cont resumes a process frozen by Stop. It does nothing otherwise.
func (p *Process) Cont() error {
	if !p.Stopped() {
		return nil
	}
	if err := p.signal(syscall.SIGCONT); err != nil {
		return err
	}
	p.setStopped(false)
	return nil
}

// Restart starts nsqd again on the same ports, data directory and node id;
// a process still running is terminated first (Term). It returns once /ping
// answers, ctx is done or ProcessOptions.StartTimeout passes.
func (p *Process) Restart(ctx context.Context) error {
	if err := p.Term(); err != nil {
		return err
	}
	// The old listeners are gone, but the kernel may hold a port briefly.
	deadline := time.Now().Add(p.opts.StartTimeout)
	for {
		err := p.start(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return fmt.Errorf("nsqd: restart nsqd: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close kills the process (continuing it first, so the kill is not held up)
// and waits for it. Safe to call more than once.
func (p *Process) Close() error {
	if p.Stopped() {
		_ = p.signal(syscall.SIGCONT)
		p.setStopped(false)
	}
	return p.Kill()
}

// start runs the binary and waits for /ping.
func (p *Process) start(ctx context.Context) error {
	args := append([]string{
		"--tcp-address=" + p.tcpAddr,
		"--http-address=" + p.httpAddr,
		"--https-address=",
		"--broadcast-address=127.0.0.1",
		"--data-path=" + p.opts.DataDir,
		fmt.Sprintf("--node-id=%d", p.nodeID),
	}, p.opts.Args...)
	fmt.Fprintf(p.out, "--- nsqd %s\n", strings.Join(args, " "))
	cmd := exec.Command(p.opts.Binary, args...)
	var w io.Writer = p.out
	if p.opts.Output != nil {
		w = io.MultiWriter(p.out, p.opts.Output)
	}
	cmd.Stdout, cmd.Stderr = w, w
	mark := p.out.Len()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is in the output; cmd is reaped here
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited, p.stopped = cmd, exited, false
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	err := waitPing(ctx, p.httpAddr, exited)
	if err == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	<-exited
	if strings.Contains(p.out.String()[mark:], "address already in use") {
		return fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return fmt.Errorf("%w; output:\n%s", err, p.out.String()[mark:])
}

// waitPing polls GET http://httpAddr/ping until nsqd answers 200 "OK", ctx
// is done or exited is closed.
func waitPing(ctx context.Context, httpAddr string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	for {
		if Ping(ctx, client, httpAddr) == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("nsqd exited during start")
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("nsqd not answering /ping: %w", ctx.Err())
			}
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Ping checks GET http://httpAddr/ping once: nil iff nsqd answers 200 "OK".
func Ping(ctx context.Context, client *http.Client, httpAddr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode != http.StatusOK || string(body) != "OK" {
		return fmt.Errorf("nsqd: ping %s: %s %q", httpAddr, resp.Status, body)
	}
	return nil
}

func (p *Process) exitedCh() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return fmt.Errorf("%w: %v to pid %d", ErrNotRunning, sig, cmd.Process.Pid)
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("%w: %v to pid %d", ErrNotRunning, sig, cmd.Process.Pid)
		}
		return fmt.Errorf("nsqd: %v to nsqd pid %d: %w", sig, cmd.Process.Pid, err)
	}
	return nil
}

func (p *Process) setStopped(v bool) {
	p.mu.Lock()
	p.stopped = v
	p.mu.Unlock()
}

func (p *Process) waitExit() error {
	select {
	case <-p.exitedCh():
		return nil
	case <-time.After(p.opts.ExitTimeout):
		return fmt.Errorf("nsqd: nsqd pid %d did not exit within %v", p.Pid(), p.opts.ExitTimeout)
	}
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("nsqd: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
