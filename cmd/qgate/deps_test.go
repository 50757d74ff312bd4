package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNoHarnessesLinked checks that the serving binary links neither the
// fault injector (chaos: SIGKILLs processes, go-builds nsqd) nor the
// benchmark; they are cmd/qgate-chaos and cmd/qgate-bench. Nor does it link
// package testing: internal/nsqd is linked for the embedded nodes, its test
// helpers (internal/nsqd/nsqdtest) are not.
func TestNoHarnessesLinked(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command lists the dependencies: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	// The list is the real one: the pool is in it.
	if !slices.Contains(deps, "github.com/qgate/qgate/backends/nsq") {
		t.Fatalf("go list -deps lacks backends/nsq: %q", deps)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/qgate/qgate/internal/chaos") || strings.HasPrefix(d, "github.com/qgate/qgate/internal/bench") ||
			d == "testing" || strings.HasSuffix(d, "/nsqdtest") || strings.HasSuffix(d, "/tlstest") {
			t.Errorf("cmd/qgate depends on %s", d)
		}
	}
}
