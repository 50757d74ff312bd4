package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/syncbuf"
)

// envRunMain makes the test binary run main instead of the tests: the
// README's `./qgate` lines run as real processes without a separate build.
const envRunMain = "QGATE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// cliBlockStart is the first line of the README's block of qgate commands.
const cliBlockStart = "go build -o qgate ./cmd/qgate\n"

// readmeBlocks returns, in the README's order, the ```sh blocks that call
// grpcurl and the block of qgate commands.
func readmeBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?ms)^```sh\n(.*?)^```")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if strings.Contains(m[1], "grpcurl") || strings.HasPrefix(m[1], cliBlockStart) {
			blocks = append(blocks, m[1])
		}
	}
	return blocks
}

// readmeChecks are what the output of a README block or qgate command
// line must contain, chosen by what it calls.
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
	{"qgate send --topic orders", []string{"\n"}, nil},
	{"qgate subscribe --topic orders --channel readme", []string{"first order\n", "second order\n"}, nil},
	{"qgate nodes", []string{"NAME", "nsqd-0", "nsqd-2"}, nil},
}

// TestReadmeExamples runs the README's examples, as written and in their
// order, against one in-process qgate on the embedded default, so the
// README cannot drift from the API nor from what a reader sees who runs
// them one after the other: the grpcurl calls, then the qgate commands,
// one line at a time. Only the address is changed (the test's server
// listens on a free port), grpcurl runs without `go tool` (see
// grpcurlPath), and the test binary stands in for the built qgate.
// WatchNodes streams until interrupted and is left out; the qgate lines
// that run "until Ctrl-C" get SIGINT once they have shown what they follow.
func TestReadmeExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpcurl")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 6 || !strings.HasPrefix(blocks[len(blocks)-1], cliBlockStart) {
		t.Fatalf("found %d README blocks, the qgate commands last: %v; the parser or the README changed", len(blocks), len(blocks) > 0)
	}
	grpcurl := grpcurlPath(t, root)
	addr, _ := startServe(t)
	qgate := qgateWrapper(t, addr)
	checked := map[string]bool{}
	check := func(what, call, out string) {
		for _, c := range readmeChecks {
			if !strings.Contains(call, c.call) {
				continue
			}
			checked[c.call] = true
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("README %s: output lacks %q\n%s\noutput:\n%s", what, w, call, out)
				}
			}
			for _, n := range c.not {
				if strings.Contains(out, n) {
					t.Errorf("README %s: output has %q\n%s\noutput:\n%s", what, n, call, out)
				}
			}
		}
	}
	for i, block := range blocks {
		if strings.Contains(block, "WatchNodes") {
			continue
		}
		if strings.HasPrefix(block, cliBlockStart) {
			for _, line := range strings.Split(strings.TrimPrefix(block, cliBlockStart), "\n") {
				if strings.TrimSpace(line) == "" {
					continue
				}
				if !strings.HasPrefix(line, "./qgate ") && !strings.Contains(line, "| ./qgate ") {
					t.Fatalf("README qgate block: line %q does not run ./qgate; teach the test", line)
				}
				out := runReadmeLine(t, root, addr, strings.ReplaceAll(line, "./qgate ", qgate+" "))
				check("line", line, out)
			}
			continue
		}
		script := strings.ReplaceAll(block, "127.0.0.1:7070", addr)
		script = strings.ReplaceAll(script, grpcurlTool, grpcurl)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("README block %d failed: %v\n%s\noutput:\n%s", i, err, block, out.String())
		}
		check(fmt.Sprint("block ", i), block, out.String())
	}
	for _, c := range readmeChecks {
		if !checked[c.call] {
			t.Errorf("no README example calls %s", c.call)
		}
	}
}

// grpcurlTool is how the README runs grpcurl.
const grpcurlTool = "go tool -modfile=tools/go.mod grpcurl"

// grpcurlPath builds grpcurl as `go tool` does and returns its path. The
// README's lines run it directly: `go tool` checks that the tool is up to
// date at every run, which on a loaded machine took seconds, longer than
// the pause before the Subscribe example's ack (the delivery had not
// arrived yet, the ack failed, and the message stayed on the channel).
func grpcurlPath(t *testing.T, root string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", "-modfile=tools/go.mod", "grpcurl")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("building grpcurl: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// qgateWrapper writes a script that runs the test binary as qgate, with
// --addr addr for the commands that talk to a qgate, and returns its path.
func qgateWrapper(t *testing.T, addr string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "qgate")
	script := fmt.Sprintf(`#!/bin/sh
cmd=$1; shift
case $cmd in send|subscribe|nodes) set -- "$cmd" --addr %q "$@";; *) set -- "$cmd" "$@";; esac
%s=1 exec %q "$@"
`, addr, envRunMain, self)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// runReadmeLine runs one line of the README's qgate block with bash and
// returns its output. A line that runs "until Ctrl-C" gets SIGINT once it
// has printed what it follows: the table for nodes --watch; for a
// subscription, a probe message sent to its topic until it shows (it
// follows only what is sent after it opened).
func runReadmeLine(t *testing.T, root, addr, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", line)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, "until Ctrl-C") {
		show := func() {}
		want := "nsqd-2"
		if m := regexp.MustCompile(`subscribe --topic (\S+)`).FindStringSubmatch(line); m != nil {
			client := qgatev1.NewQueueServiceClient(dialTest(t, addr))
			probe := []byte("readme-probe")
			want = base64.StdEncoding.EncodeToString(probe) // --json prints bodies in base64
			show = func() {
				_, err := client.Send(ctx, &qgatev1.SendRequest{Topic: m[1], Messages: []*qgatev1.Message{{Body: probe}}})
				if err != nil {
					t.Errorf("probe send: %v", err)
				}
			}
		}
		for !strings.Contains(out.String(), want) {
			if ctx.Err() != nil {
				t.Fatalf("README line did not show %q within a minute:\n%s\noutput:\n%s", want, line, out.String())
			}
			show()
			time.Sleep(100 * time.Millisecond)
		}
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("still running after a minute (%w)", err)
		}
		t.Fatalf("README line failed: %v\n%s\noutput:\n%s", err, line, out.String())
	}
	return out.String()
}
