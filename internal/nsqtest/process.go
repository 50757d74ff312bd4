package nsqtest

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
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/nsqproc"
)

// startTimeout bounds how long a process may take to answer /ping.
const startTimeout = 15 * time.Second

// exitTimeout bounds how long Term, Kill and cleanup wait for an exit.
const exitTimeout = 10 * time.Second

// ProcessOption configures StartProcess.
type ProcessOption func(*processConfig)

type processConfig struct {
	args    []string
	dataDir string
}

// Args adds nsqd command-line flags, such as "--msg-timeout=2s" or
// "--mem-queue-size=0". The address and data-path flags are set by
// StartProcess.
func Args(flags ...string) ProcessOption {
	return func(c *processConfig) { c.args = append(c.args, flags...) }
}

// DataDir sets the process's data directory; default a temporary directory.
func DataDir(dir string) ProcessOption {
	return func(c *processConfig) { c.dataDir = dir }
}

// Process is nsqd running as a child process. Its methods fail the test on
// error and must be called from the test goroutine, except TCPAddr,
// HTTPAddr, Pid and Output, which are safe anywhere.
type Process struct {
	t        testing.TB
	bin      string
	args     []string
	dataDir  string
	tcpAddr  string
	httpAddr string
	out      *syncBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	stopped bool          // SIGSTOPped and not yet continued
}

// StartProcess builds nsqd (once per test binary, cached across binaries)
// and runs it on free loopback ports with a temporary data directory. It
// returns once /ping answers. The process is killed at cleanup; its output
// goes to t.Log if the test failed or under go test -v.
func StartProcess(t testing.TB, opts ...ProcessOption) *Process {
	t.Helper()
	var cfg processConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dataDir == "" {
		cfg.dataDir = t.TempDir()
	}
	p := &Process{t: t, bin: NSQDBinary(t), args: cfg.args, dataDir: cfg.dataDir, out: &syncBuffer{}}
	t.Cleanup(p.cleanup)
	// Ports are picked by listening on :0 and closing; another process can
	// take one before nsqd binds it, so a start that fails on its address is
	// retried on new ports.
	var err error
	for range 5 {
		p.tcpAddr, p.httpAddr = freePort(t), freePort(t)
		if err = p.start(); err == nil {
			return p
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("nsqtest: start nsqd: %v", err)
	return nil
}

// TCPAddr is nsqd's TCP address; it stays the same across Restart.
func (p *Process) TCPAddr() string { return p.tcpAddr }

// HTTPAddr is nsqd's HTTP address; it stays the same across Restart.
func (p *Process) HTTPAddr() string { return p.httpAddr }

// DataDir is nsqd's data directory; it stays the same across Restart.
func (p *Process) DataDir() string { return p.dataDir }

// Pid is the current process id (it changes on Restart).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Output is everything the process (and its earlier runs) wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Running reports whether the process has not exited (it may be stopped).
func (p *Process) Running() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to exit: nothing is flushed,
// messages still in nsqd's memory queues are lost.
func (p *Process) Kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.setStopped(false)
	p.waitExit()
}

// Term sends SIGTERM (after SIGCONT if stopped) and waits for nsqd's clean
// exit, which flushes its queues to disk.
func (p *Process) Term() {
	p.t.Helper()
	p.Cont()
	p.signal(syscall.SIGTERM)
	p.waitExit()
}

// Stop freezes the process with SIGSTOP: connections stay open but nothing
// answers, as with a hung node.
func (p *Process) Stop() {
	p.t.Helper()
	p.signal(syscall.SIGSTOP)
	p.setStopped(true)
	nsqproc.WaitFrozen(p.Pid())
}

// Cont resumes a process frozen by Stop. It does nothing otherwise.
func (p *Process) Cont() {
	p.t.Helper()
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		p.signal(syscall.SIGCONT)
		p.setStopped(false)
	}
}

// Restart starts nsqd again on the same ports and data directory, after
// Kill or Term; a process still running is terminated first. It returns
// once /ping answers.
func (p *Process) Restart() {
	p.t.Helper()
	if p.Running() {
		p.Term()
	}
	// The old listeners are gone, but give the kernel a moment in case the
	// port is briefly held.
	deadline := time.Now().Add(startTimeout)
	for {
		err := p.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			p.t.Fatalf("nsqtest: restart nsqd: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var errAddrInUse = errors.New("address already in use")

// start runs the binary and waits for /ping.
func (p *Process) start() error {
	args := append([]string{
		"--tcp-address=" + p.tcpAddr,
		"--http-address=" + p.httpAddr,
		"--https-address=",
		"--broadcast-address=127.0.0.1",
		"--data-path=" + p.dataDir,
		// Distinct ids keep message ids distinct across nodes; a
		// --node-id in p.args comes later and wins.
		fmt.Sprintf("--node-id=%d", rand.IntN(1023)+1),
	}, p.args...)
	fmt.Fprintf(p.out, "--- nsqd %s\n", strings.Join(args, " "))
	cmd := exec.Command(p.bin, args...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	mark := p.out.Len()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // the exit status is in the output; cmd is reaped here
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited, p.stopped = cmd, exited, false
	p.mu.Unlock()

	err := waitPing(p.httpAddr, exited)
	if err == nil {
		return nil
	}
	cmd.Process.Kill()
	<-exited
	if strings.Contains(p.out.String()[mark:], "address already in use") {
		return fmt.Errorf("%w: %v", errAddrInUse, err)
	}
	return fmt.Errorf("%v; output:\n%s", err, p.out.String()[mark:])
}

// waitPing polls GET /ping until it answers OK, the process exits or
// startTimeout passes.
func waitPing(httpAddr string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get("http://" + httpAddr + "/ping")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "OK" {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("nsqd exited during start")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nsqd not answering /ping after %v", startTimeout)
		}
	}
}

func (p *Process) signal(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("nsqtest: %v to nsqd pid %d: %v", sig, cmd.Process.Pid, err)
	}
}

func (p *Process) setStopped(v bool) {
	p.mu.Lock()
	p.stopped = v
	p.mu.Unlock()
}

func (p *Process) waitExit() {
	p.t.Helper()
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(exitTimeout):
		p.t.Fatalf("nsqtest: nsqd did not exit within %v", exitTimeout)
	}
}

// cleanup kills the process (continuing it first, so the kill is not held
// up) and logs its output when the test failed or runs verbose.
func (p *Process) cleanup() {
	p.mu.Lock()
	cmd, exited, stopped := p.cmd, p.exited, p.stopped
	p.mu.Unlock()
	if cmd != nil {
		if stopped {
			cmd.Process.Signal(syscall.SIGCONT)
		}
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(exitTimeout):
			p.t.Errorf("nsqtest: nsqd pid %d did not exit after SIGKILL", cmd.Process.Pid)
		}
	}
	if p.t.Failed() || testing.Verbose() {
		p.t.Logf("nsqd output (tcp %s, http %s):\n%s", p.tcpAddr, p.httpAddr, p.out.String())
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("nsqtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for the process's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// NSQDBinary returns the path of an nsqd binary built from the nsq module
// version this module requires. It is built once per test binary and cached
// in the OS temp directory, keyed by Go and nsq versions, so that test
// binaries of other packages reuse it.
func NSQDBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildPath, buildErr = buildNSQD() })
	if buildErr != nil {
		t.Fatalf("nsqtest: build nsqd: %v", buildErr)
	}
	return buildPath
}

func buildNSQD() (string, error) {
	nsqVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/nsqio/nsq" {
				nsqVersion = m.Version
			}
		}
	}
	key := fmt.Sprintf("qgate-nsqd-%s-%s-%s-%s", nsqVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	dir := filepath.Join(os.TempDir(), key)
	bin := filepath.Join(dir, "nsqd")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && nsqVersion != "unknown" {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Build to a private name, then rename: test binaries of several
	// packages may build at the same time, and rename is atomic.
	tmp, err := os.CreateTemp(dir, "nsqd-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// go test puts the go command that runs it first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp.Name(), "github.com/nsqio/nsq/apps/nsqd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build github.com/nsqio/nsq/apps/nsqd: %w\n%s", err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
}
