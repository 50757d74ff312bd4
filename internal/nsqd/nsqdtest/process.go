package nsqdtest

import (
	"context"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/nsqd"
)

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

// Process is nsqd running as a child process: a testing.TB wrapper over
// internal/nsqd. Its methods fail the test on error and must be called
// from the test goroutine, except TCPAddr, HTTPAddr, DataDir, Pid, Output
// and Running, which are safe anywhere.
type Process struct {
	t testing.TB
	p *nsqd.Process
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
	p, err := nsqd.StartProcess(context.Background(), nsqd.ProcessOptions{
		Binary:  NSQDBinary(t),
		DataDir: cfg.dataDir,
		Args:    cfg.args,
	})
	if err != nil {
		t.Fatalf("nsqdtest: %v", err)
	}
	proc := &Process{t: t, p: p}
	t.Cleanup(proc.cleanup)
	return proc
}

// TCPAddr is nsqd's TCP address; it stays the same across Restart.
func (p *Process) TCPAddr() string { return p.p.TCPAddr() }

// HTTPAddr is nsqd's HTTP address; it stays the same across Restart.
func (p *Process) HTTPAddr() string { return p.p.HTTPAddr() }

// DataDir is nsqd's data directory; it stays the same across Restart.
func (p *Process) DataDir() string { return p.p.DataDir() }

// Pid is the current process id (it changes on Restart).
func (p *Process) Pid() int { return p.p.Pid() }

// Output is everything the process (and its earlier runs) wrote so far.
func (p *Process) Output() string { return p.p.Output() }

// Running reports whether the process has not exited (it may be stopped).
func (p *Process) Running() bool { return p.p.Running() }

// Kill sends SIGKILL and waits for the process to exit: nothing is flushed,
// messages still in nsqd's memory queues are lost.
func (p *Process) Kill() {
	p.t.Helper()
	p.check(p.p.Kill())
}

// Term sends SIGTERM (after SIGCONT if stopped) and waits for nsqd's clean
// exit, which flushes its queues to disk.
func (p *Process) Term() {
	p.t.Helper()
	p.check(p.p.Term())
}

// Stop freezes the process with SIGSTOP: connections stay open but nothing
// answers, as with a hung node.
func (p *Process) Stop() {
	p.t.Helper()
	p.check(p.p.Stop())
}

// Cont resumes a process frozen by Stop. It does nothing otherwise.
func (p *Process) Cont() {
	p.t.Helper()
	p.check(p.p.Cont())
}

// Restart starts nsqd again on the same ports and data directory, after
// Kill or Term; a process still running is terminated first. It returns
// once /ping answers.
func (p *Process) Restart() {
	p.t.Helper()
	p.check(p.p.Restart(context.Background()))
}

func (p *Process) check(err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("nsqdtest: %v", err)
	}
}

// cleanup kills the process (continuing it first, so the kill is not held
// up) and logs its output when the test failed or runs verbose.
func (p *Process) cleanup() {
	if err := p.p.Close(); err != nil {
		p.t.Errorf("nsqdtest: %v", err)
	}
	if p.t.Failed() || testing.Verbose() {
		p.t.Logf("nsqd output (tcp %s, http %s):\n%s", p.TCPAddr(), p.HTTPAddr(), p.Output())
	}
}

// NSQDBinary returns the path of an nsqd binary built from the nsq module
// version this module requires (nsqd.BuildBinary): built once per test
// binary and cached in the OS temp directory, keyed by Go and nsq versions,
// so that test binaries of other packages reuse it.
func NSQDBinary(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := nsqd.BuildBinary(ctx)
	if err != nil {
		t.Fatalf("nsqdtest: %v", err)
	}
	return bin
}
