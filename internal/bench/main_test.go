package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestMainHelpAndBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, &out, &errOut); code != 0 {
		t.Errorf("--help: exit %d, want 0", code)
	}
	for _, want := range []string{"Usage: qgate bench", "send1-c64", "-workloads", "-json", "memory"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
	for _, args := range [][]string{
		{"--workloads", "nope"},
		{"--addr", "127.0.0.1:1"},
		{"--cpu-pids", "x"},
		{"extra"},
	} {
		errOut.Reset()
		if code := Main(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %s)", args, code, errOut.String())
		}
	}
}
