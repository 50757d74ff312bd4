package nsqd_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

func start(t *testing.T, opts nsqd.ProcessOptions) *nsqd.Process {
	t.Helper()
	if opts.Binary == "" {
		opts.Binary = nsqdtest.NSQDBinary(t)
	}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	p, err := nsqd.StartProcess(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("nsqd output:\n%s", p.Output())
		}
	})
	return p
}

func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	return nsqd.Ping(ctx, http.DefaultClient, addr)
}

func TestLifecycle(t *testing.T) {
	p := start(t, nsqd.ProcessOptions{})
	if err := ping(p.HTTPAddr()); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	pid := p.Pid()

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if !p.Stopped() || !p.Running() {
		t.Errorf("after Stop: stopped %v running %v, want true true", p.Stopped(), p.Running())
	}
	if err := ping(p.HTTPAddr()); err == nil {
		t.Error("a frozen nsqd answered /ping")
	}
	if err := p.Cont(); err != nil {
		t.Fatal(err)
	}
	if err := ping(p.HTTPAddr()); err != nil {
		t.Errorf("ping after Cont: %v", err)
	}

	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("running after Kill")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	if err := p.Stop(); err == nil {
		t.Error("Stop of an exited process: no error")
	}
	if err := p.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.Pid() == pid {
		t.Error("same pid after Restart")
	}
	if err := ping(p.HTTPAddr()); err != nil {
		t.Errorf("ping after Restart: %v", err)
	}

	// Term of a frozen process continues it first.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Term(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("running after Term")
	}
	if err := p.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ping(p.HTTPAddr()); err != nil {
		t.Errorf("ping after second Restart: %v", err)
	}
}

func TestGivenAddrs(t *testing.T) {
	tcp, err := nsqd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, err := nsqd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, nsqd.ProcessOptions{TCPAddr: tcp, HTTPAddr: httpAddr, Args: []string{"--mem-queue-size=0"}})
	if p.TCPAddr() != tcp || p.HTTPAddr() != httpAddr {
		t.Errorf("addrs %s %s, want %s %s", p.TCPAddr(), p.HTTPAddr(), tcp, httpAddr)
	}
	c, err := net.DialTimeout("tcp", tcp, time.Second)
	if err != nil {
		t.Fatalf("dial tcp: %v", err)
	}
	c.Close()
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := nsqd.StartProcess(ctx, nsqd.ProcessOptions{DataDir: t.TempDir()}); err == nil {
		t.Error("no binary: no error")
	}
	if _, err := nsqd.StartProcess(ctx, nsqd.ProcessOptions{Binary: "nsqd"}); err == nil {
		t.Error("no data dir: no error")
	}
	// A bad flag makes nsqd exit at once: Start reports it with the output.
	_, err := nsqd.StartProcess(ctx, nsqd.ProcessOptions{Binary: nsqdtest.NSQDBinary(t), DataDir: t.TempDir(), Args: []string{"--no-such-flag"}})
	if err == nil {
		t.Fatal("bad flag: no error")
	}
	// A taken port given explicitly is not silently replaced.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = nsqd.StartProcess(ctx, nsqd.ProcessOptions{Binary: nsqdtest.NSQDBinary(t), DataDir: t.TempDir(), TCPAddr: l.Addr().String(), HTTPAddr: l.Addr().String()})
	if err == nil {
		t.Fatal("taken port: no error")
	}
}
