package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestMainFlags(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{args: []string{"--help"}, code: 0, err: "-scenario names"},
		{args: []string{"--list"}, code: 0, out: "promise: lost ≤ 0"},
		{args: []string{"--list"}, code: 0, out: "promise: acked ≥ 1"},
		{args: []string{"--scenario", "S99"}, code: 2, err: `unknown scenario "S99"`},
		{args: []string{"--no-such-flag"}, code: 2, err: "flag provided but not defined"},
		{args: []string{"extra"}, code: 2, err: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			code := Main(context.Background(), tt.args, &out, &errOut)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errOut.String())
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("stdout %q does not contain %q", out.String(), tt.out)
			}
			if !strings.Contains(errOut.String(), tt.err) {
				t.Errorf("stderr %q does not contain %q", errOut.String(), tt.err)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	seen := make(map[string]bool)
	for _, s := range Scenarios() {
		if seen[s.Name] {
			t.Errorf("duplicate scenario %s", s.Name)
		}
		seen[s.Name] = true
		if got, ok := Lookup(strings.ToLower(s.Name)); !ok || got.Name != s.Name {
			t.Errorf("Lookup(%q) = %q, %v", strings.ToLower(s.Name), got.Name, ok)
		}
		if len(s.Promises) == 0 {
			t.Errorf("%s promises nothing", s.Name)
		}
	}
	for i := 1; i <= 12; i++ {
		if _, ok := Lookup(fmt.Sprintf("S%d", i)); !ok {
			t.Errorf("no scenario S%d", i)
		}
	}
}

// TestMainArgs runs Main with the arguments in QGATE_CHAOS_ARGS (split on
// spaces), for measurements before `qgate chaos` is wired:
//
//	QGATE_CHAOS_ARGS="--scenario S1 --runs 5" go test -run TestMainArgs -v ./internal/chaos
func TestMainArgs(t *testing.T) {
	args := os.Getenv("QGATE_CHAOS_ARGS")
	if args == "" {
		t.Skip("QGATE_CHAOS_ARGS not set")
	}
	code := Main(context.Background(), strings.Fields(args), os.Stdout, os.Stderr)
	if code != 0 {
		t.Errorf("exit %d", code)
	}
}
