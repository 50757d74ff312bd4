package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
	"github.com/qgate/qgate/internal/syncbuf"
)

// startServe runs `qgate serve args...` in this process on a free port and
// returns its address and a func that stops it as SIGTERM would and
// returns its exit status. Cleanup stops it too.
func startServe(t *testing.T, args ...string) (addr string, stop func() int) {
	t.Helper()
	s := startServeEnv(t, nil, args...)
	return s.addr, s.stop
}

// served is a `qgate serve` running in the test process.
type served struct {
	addr, metricsAddr string
	stop              func() int
	reload            chan os.Signal // as SIGHUP
}

// startServeEnv is startServe with an environment (getenv may be nil). The
// metrics listener is on, on a free port.
func startServeEnv(t *testing.T, getenv func(string) string, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	metricsReady := make(chan string, 1)
	s := &served{reload: make(chan os.Signal, 1)}
	e := &env{stdin: strings.NewReader(""), stdout: nsqdtest.LogWriter(t), stderr: nsqdtest.LogWriter(t),
		ready: func(a string) { ready <- a }, metricsReady: func(a string) { metricsReady <- a },
		getenv: getenv, reload: s.reload}
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, e, append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
			"--shutdown-timeout", "5s"}, args...))
	}()
	s.stop = sync.OnceValue(func() int {
		cancel()
		select {
		case code := <-exited:
			return code
		case <-time.After(30 * time.Second):
			t.Error("serve did not exit within 30s of its shutdown")
			return -1
		}
	})
	t.Cleanup(func() { s.stop() })
	select {
	case s.addr = <-ready:
		select {
		case s.metricsAddr = <-metricsReady:
		default: // --metrics-addr off
		}
		return s
	case code := <-exited:
		t.Fatalf("serve exited with status %d before serving", code)
	case <-time.After(60 * time.Second):
		t.Fatal("serve not ready after 60s")
	}
	return nil
}

// cli runs a client command in this process and returns its status and
// output.
func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, &env{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr}, args)
	return code, stdout.String(), stderr.String()
}

func dialTest(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// listServices asks server reflection for the service names.
func listServices(t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// TestServeEmbeddedDefault runs serve as a newcomer does, with no node
// flags (three in-process nsqd nodes), and drives it with grpc and the CLI.
func TestServeEmbeddedDefault(t *testing.T) {
	addr, stop := startServe(t)
	conn := dialTest(t, addr)

	services := listServices(t, conn)
	for _, want := range []string{"qgate.v1.QueueService", "qgate.v1.AdminService", "grpc.health.v1.Health"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %v, missing %s", services, want)
		}
	}
	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: got %v, %v; want SERVING", resp, err)
	}

	t.Run("send and subscribe", func(t *testing.T) {
		code, out, errOut := cli(t, "", "send", "--addr", addr, "--topic", "cli", "--attr", "k=v", "hello", "world")
		if code != 0 || len(strings.Fields(out)) != 2 {
			t.Fatalf("send: status %d, stdout %q, stderr %q; want 0 and two ids", code, out, errOut)
		}
		code, out, errOut = cli(t, "third\n\nfourth\n", "send", "--addr", addr, "--topic", "cli", "--batch", "1")
		if code != 0 || len(strings.Fields(out)) != 2 {
			t.Fatalf("send from stdin: status %d, stdout %q, stderr %q; want 0 and two ids", code, out, errOut)
		}
		code, out, errOut = cli(t, "", "subscribe", "--addr", addr, "--topic", "cli", "--channel", "c", "--count", "4")
		got := strings.Fields(out)
		slices.Sort(got)
		if code != 0 || !slices.Equal(got, []string{"fourth", "hello", "third", "world"}) {
			t.Errorf("subscribe: status %d, stdout %q, stderr %q; want the four bodies", code, out, errOut)
		}
		// Acked: a second subscriber on the channel gets nothing more.
		cli(t, "", "send", "--addr", addr, "--topic", "cli", "--attr", "k=v", "last")
		code, out, _ = cli(t, "", "subscribe", "--addr", addr, "--topic", "cli", "--channel", "c", "--count", "1", "--json")
		if code != 0 || !strings.Contains(out, `"body":"bGFzdA=="`) || !strings.Contains(out, `"k":"v"`) || !strings.Contains(out, `"attempt":1`) {
			t.Errorf("subscribe --json: status %d, stdout %q; want the last message, first attempt, with its attribute", code, out)
		}
	})

	t.Run("send --id and --id-prefix", func(t *testing.T) {
		code, out, errOut := cli(t, "", "send", "--addr", addr, "--topic", "cliid", "--id", "order:1", "x")
		if code != 0 || strings.TrimSpace(out) != "order:1" {
			t.Errorf("send --id: status %d, stdout %q, stderr %q; want the id", code, out, errOut)
		}
		code, out, errOut = cli(t, "a\nb\n", "send", "--addr", addr, "--topic", "cliid", "--id-prefix", "imp")
		if code != 0 || !slices.Equal(strings.Fields(out), []string{"imp-1", "imp-2"}) {
			t.Errorf("send --id-prefix: status %d, stdout %q, stderr %q; want imp-1 imp-2", code, out, errOut)
		}
		if code, _, errOut := cli(t, "", "send", "--addr", addr, "--topic", "cliid", "--id", "a b", "x"); code == 0 || !strings.Contains(errOut, "bad message id") {
			t.Errorf("send --id 'a b': status %d, stderr %q; want the client's bad message id", code, errOut)
		}
		if code, _, _ := cli(t, "", "send", "--addr", addr, "--topic", "cliid", "--id", "k", "x", "y"); code != 2 {
			t.Errorf("send --id with two messages: status %d, want 2 (usage)", code)
		}
	})

	t.Run("subscribe --batch", func(t *testing.T) {
		code, out, errOut := cli(t, "", "send", "--addr", addr, "--topic", "clib", "a", "b", "c", "d", "e")
		if code != 0 || len(strings.Fields(out)) != 5 {
			t.Fatalf("send: status %d, stdout %q, stderr %q; want 0 and five ids", code, out, errOut)
		}
		// Three printed and acked; any more in the batch go back when it stops.
		code, out, errOut = cli(t, "", "subscribe", "--addr", addr, "--topic", "clib", "--channel", "c", "--batch", "10", "--count", "3")
		got := strings.Fields(out)
		if code != 0 || len(got) != 3 {
			t.Fatalf("subscribe --batch: status %d, stdout %q, stderr %q; want three bodies", code, out, errOut)
		}
		code, out, errOut = cli(t, "", "subscribe", "--addr", addr, "--topic", "clib", "--channel", "c", "--batch", "10", "--count", "2")
		got = append(got, strings.Fields(out)...)
		slices.Sort(got)
		if code != 0 || !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
			t.Errorf("subscribe --batch, twice: status %d, stdout %q, stderr %q; bodies %q, want each of a..e once", code, out, errOut, got)
		}
	})

	t.Run("subscribe --batch, 1 MB messages", func(t *testing.T) {
		// 20 deliveries of 1 MB in one response would pass gRPC's 4 MiB
		// receive limit: the server keeps each response within its byte
		// budget (1 MiB by default).
		client := qgatev1.NewQueueServiceClient(conn)
		body := bytes.Repeat([]byte("y"), 1_000_000)
		for range 20 {
			if _, err := client.Send(context.Background(), &qgatev1.SendRequest{Topic: "cli1mb",
				Messages: []*qgatev1.Message{{Body: body}}}); err != nil {
				t.Fatal(err)
			}
		}
		code, out, errOut := cli(t, "", "subscribe", "--addr", addr, "--topic", "cli1mb", "--channel", "c",
			"--batch", "20", "--max-in-flight", "20", "--count", "20")
		if lines := strings.Count(out, "\n"); code != 0 || lines != 20 || len(out) != 20*1_000_001 {
			t.Errorf("subscribe --batch 20 --max-in-flight 20: status %d, %d lines, %d bytes, stderr %q; want 0 and 20 bodies",
				code, lines, len(out), errOut)
		}
	})

	t.Run("nodes", func(t *testing.T) {
		code, out, errOut := cli(t, "", "nodes", "--addr", addr)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") {
			t.Fatalf("nodes: status %d, stdout %q, stderr %q; want a header and 3 rows", code, out, errOut)
		}
		for i, line := range lines[1:] {
			f := strings.Fields(line)
			if f[0] != fmt.Sprintf("nsqd-%d", i) || f[3] != "up" {
				t.Errorf("nodes row %d: %q; want nsqd-%d up", i, line, i)
			}
		}
	})

	t.Run("backlog, channel, redrive, filter, ttl", func(t *testing.T) {
		// A message dead-lettered (max attempts 1, nacked), seen in the
		// backlog, redriven back; a filter keeps one of two; a ttl shows.
		client := qgatev1.NewQueueServiceClient(conn)
		sctx, cancel := context.WithTimeout(t.Context(), time.Minute) // no Recv waits forever
		defer cancel()
		stream, err := client.Subscribe(sctx)
		if err != nil {
			t.Fatal(err)
		}
		open := &qgatev1.SubscribeRequest_Open{Topic: "clidl", Channel: "c", MaxAttempts: 1}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // opened
			t.Fatal(err)
		}
		if code, _, errOut := cli(t, "", "send", "--addr", addr, "--topic", "clidl", "poison"); code != 0 {
			t.Fatalf("send: %d %s", code, errOut)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		nack := &qgatev1.SubscribeRequest_Nack{AckIds: []string{resp.GetDelivery().GetAckId()}}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Nack_{Nack: nack}}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			code, out, errOut := cli(t, "", "backlog", "--addr", addr, "--topic", "clidl.dead")
			if code != 0 {
				t.Fatalf("backlog: status %d, stderr %q", code, errOut)
			}
			if strings.Contains(out, "TOPIC") && strings.Contains(out, "clidl.dead") && strings.Fields(strings.Split(out, "\n")[1])[2] != "0" {
				break // the dead letter, in the topic (no channel yet)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no dead letter in the backlog:\n%s", out)
			}
		}
		code, out, errOut := cli(t, "", "redrive", "--addr", addr, "--topic", "clidl.dead", "--channel", "keep", "--idle", "500ms")
		if code != 0 || strings.TrimSpace(out) != "moved 1, skipped 0" {
			t.Fatalf("redrive: status %d, stdout %q, stderr %q", code, out, errOut)
		}
		resp, err = stream.Recv()
		if err != nil || string(resp.GetDelivery().GetBody()) != "poison" {
			t.Fatalf("after redrive: %v, %v; want the message again", resp, err)
		}
		if code, out, _ := cli(t, "", "channel", "pause", "--addr", addr, "--topic", "clidl", "--channel", "c"); code != 0 || strings.Count(out, ": ok") != 3 {
			t.Errorf("channel pause: status %d, stdout %q; want ok from 3 nodes", code, out)
		}
		if code, _, _ := cli(t, "", "channel", "frobnicate", "--addr", addr, "--topic", "clidl", "--channel", "c"); code != 2 {
			t.Errorf("channel frobnicate: status %d, want 2", code)
		}
		cli(t, "", "send", "--addr", addr, "--topic", "clif", "--attr", "kind=order", "--ttl", "1h", "keep")
		cli(t, "", "send", "--addr", addr, "--topic", "clif", "--attr", "kind=refund", "drop")
		cli(t, "", "send", "--addr", addr, "--topic", "clif", "--attr", "kind=order", "keep2")
		code, out, errOut = cli(t, "", "subscribe", "--addr", addr, "--topic", "clif", "--channel", "orders",
			"--filter", `attributes.kind == "order"`, "--count", "2", "--json")
		if code != 0 || strings.Contains(out, "ZHJvcA==") || !strings.Contains(out, "expireTime") {
			t.Errorf("subscribe --filter: status %d, stdout %q, stderr %q; want the two orders, one with an expiry", code, out, errOut)
		}
		// Delivery at a time (one past: at once), a delay beyond the timer
		// hop (accepted: it waits on the timer topic), both at once refused.
		past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		if code, _, errOut := cli(t, "", "send", "--addr", addr, "--topic", "clat", "--deliver-at", past, "now"); code != 0 {
			t.Errorf("send --deliver-at: status %d, stderr %q", code, errOut)
		}
		if code, _, errOut := cli(t, "", "send", "--addr", addr, "--topic", "clat", "--delay", "72h", "later"); code != 0 {
			t.Errorf("send --delay 72h: status %d, stderr %q", code, errOut)
		}
		if code, _, _ := cli(t, "", "send", "--addr", addr, "--topic", "clat", "--delay", "1s", "--deliver-at", past, "x"); code != 2 {
			t.Errorf("send --delay with --deliver-at: status %d, want 2", code)
		}
		code, out, errOut = cli(t, "", "subscribe", "--addr", addr, "--topic", "clat", "--channel", "c",
			"--min-backoff", "100ms", "--max-backoff", "1s", "--count", "1")
		if code != 0 || strings.TrimSpace(out) != "now" {
			t.Errorf("subscribe with a retry policy: status %d, stdout %q, stderr %q; want the message sent for the past", code, out, errOut)
		}
	})

	if code := stop(); code != 0 {
		t.Errorf("serve exit status %d after shutdown, want 0", code)
	}
}

// TestNodesWatch follows the pool with `qgate nodes --watch` while a node
// is drained and undrained through the admin API.
func TestNodesWatch(t *testing.T) {
	addr, _ := startServe(t)
	admin := qgatev1.NewAdminServiceClient(dialTest(t, addr))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncbuf.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, &env{stdin: strings.NewReader(""), stdout: &out, stderr: nsqdtest.LogWriter(t)},
			[]string{"nodes", "--addr", addr, "--watch"})
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("nodes --watch printed no %q within 20s:\n%s", what, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("nsqd-2") // the table
	// The watch starts after the table; a change made before it would be
	// part of its initial state and not printed. So drain and undrain until
	// both changes show.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "nsqd-1 draining -> up") {
		if time.Now().After(deadline) {
			t.Fatalf("nodes --watch printed no drain and undrain within 20s:\n%s", out.String())
		}
		if _, err := admin.DrainNode(ctx, &qgatev1.DrainNodeRequest{Name: "nsqd-1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.UndrainNode(ctx, &qgatev1.UndrainNodeRequest{Name: "nsqd-1"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitFor("nsqd-1 up -> draining")
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("nodes --watch exit status %d after interrupt, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Error("nodes --watch did not exit after interrupt")
	}
}

// TestServeLongDelay: through qgate serve with a short --timer-hop, a
// message sent with a delay of several hops waits on the timer topic and
// is delivered once it is due, not before; --timer-topic off limits
// delays to the hop.
func TestServeLongDelay(t *testing.T) {
	addr, stop := startServe(t, "--timer-hop", "100ms")
	defer stop()
	start := time.Now()
	if code, _, errOut := cli(t, "", "send", "--addr", addr, "--topic", "late", "--delay", "1s", "hello"); code != 0 {
		t.Fatalf("send --delay 1s: status %d, stderr %q", code, errOut)
	}
	code, out, errOut := cli(t, "", "subscribe", "--addr", addr, "--topic", "late", "--channel", "c", "--count", "1", "--json")
	if code != 0 || !strings.Contains(out, `"attempt":1`) {
		t.Fatalf("subscribe: status %d, stdout %q, stderr %q; want the message, attempt 1", code, out, errOut)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("delivered %v after the send, before its 1s delay", took)
	}

	addr2, stop2 := startServe(t, "--timer-topic", "off", "--timer-hop", "100ms")
	defer stop2()
	code, _, errOut = cli(t, "", "send", "--addr", addr2, "--topic", "late", "--delay", "1s", "x")
	if code == 0 || !strings.Contains(errOut, "at most 100ms") {
		t.Errorf("send --delay 1s with the timer topic off: status %d, stderr %q; want refused, at most 100ms", code, errOut)
	}
}
