package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeBlocks returns the ```sh blocks of the README that call grpcurl.
func readmeBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?ms)^```sh\n(.*?)^```")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if strings.Contains(m[1], "grpcurl") {
			blocks = append(blocks, m[1])
		}
	}
	return blocks
}

// readmeChecks are what the output of a README block must contain, chosen
// by what the block calls.
var readmeChecks = []struct {
	call string
	want []string
	not  []string
}{
	{" list", []string{"qgate.v1.QueueService", "qgate.v1.AdminService", "grpc.health.v1.Health"}, nil},
	{"QueueService/Send", []string{`"messageIds"`}, nil},
	{"QueueService/Subscribe", []string{`"opened"`, `"delivery"`, `"body": "aGVsbG8="`, `"source": "readme"`, `"ackId": "1"`}, []string{"ackError"}},
	{"Health/Check", []string{`"SERVING"`}, nil},
	{"ListNodes", []string{`"nsqd-0"`, `"nsqd-2"`}, nil},
	{"DrainNode", []string{`"NODE_STATE_DRAINING"`, `"NODE_STATE_UP"`}, nil},
}

// TestReadmeGrpcurl runs the README's grpcurl examples, as written, against
// an in-process qgate on the embedded default, so the README cannot drift
// from the API. Only the address is changed (the test's server listens on a
// free port). WatchNodes streams until interrupted and is left out.
func TestReadmeGrpcurl(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 5 {
		t.Fatalf("found %d grpcurl blocks in README.md; the parser or the README changed", len(blocks))
	}
	addr, _ := startServe(t)
	checked := map[string]bool{}
	for i, block := range blocks {
		if strings.Contains(block, "WatchNodes") {
			continue
		}
		script := strings.ReplaceAll(block, "127.0.0.1:7070", addr)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // the first run builds grpcurl
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("README block %d failed: %v\n%s\noutput:\n%s", i, err, block, out.String())
		}
		for _, c := range readmeChecks {
			if !strings.Contains(block, c.call) {
				continue
			}
			checked[c.call] = true
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("README block %d: output lacks %s\n%s\noutput:\n%s", i, w, block, out.String())
				}
			}
			for _, n := range c.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("README block %d: output has %s\n%s\noutput:\n%s", i, n, block, out.String())
				}
			}
		}
	}
	for _, c := range readmeChecks {
		if !checked[c.call] {
			t.Errorf("no README grpcurl block calls %s", c.call)
		}
	}
}
