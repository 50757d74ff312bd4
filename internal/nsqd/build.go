package nsqd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
)

var (
	buildMu   sync.Mutex
	buildPath string
)

// BuildBinary returns the path of an nsqd binary built with `go build
// github.com/nsqio/nsq/apps/nsqd` from the nsq module version the running
// binary was built with. It needs the go command on PATH and the module's
// source (it runs in the current directory's module). The binary is cached
// in the OS temp directory, keyed by Go and nsq versions, so that test
// binaries of other packages and later runs reuse it; within one process it
// is built at most once (a failure is retried on the next call).
func BuildBinary(ctx context.Context) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildPath != "" {
		return buildPath, nil
	}
	p, err := buildNSQD(ctx)
	if err != nil {
		return "", err
	}
	buildPath = p
	return p, nil
}

func buildNSQD(ctx context.Context) (string, error) {
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
		return "", fmt.Errorf("nsqd: build nsqd: %w", err)
	}
	// Build to a private name, then rename: test binaries of several
	// packages may build at the same time, and rename is atomic.
	tmp, err := os.CreateTemp(dir, "nsqd-*.tmp")
	if err != nil {
		return "", fmt.Errorf("nsqd: build nsqd: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// go test puts the go command that runs it first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("nsqd: build nsqd: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp.Name(), "github.com/nsqio/nsq/apps/nsqd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("nsqd: go build github.com/nsqio/nsq/apps/nsqd: %w\n%s", err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", fmt.Errorf("nsqd: build nsqd: %w", err)
	}
	return bin, nil
}
