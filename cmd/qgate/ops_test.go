package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	qgatev1 "github.com/qgate/qgate/gen/qgate/v1"

	"github.com/qgate/qgate/internal/nsqd"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
	"github.com/qgate/qgate/internal/tlsutil"
	"github.com/qgate/qgate/internal/tlsutil/tlstest"
)

// cliEnv is cli with an environment.
func cliEnv(t *testing.T, getenv func(string) string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: getenv}, args)
	return code, stdout.String(), stderr.String()
}

// envOf is a getenv over a map.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// get fetches url with client and returns the status and body.
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// sample finds the value of the series name{labels...} on a Prometheus
// text page; ok is false if there is none.
func sample(page, name string, labels ...string) (string, bool) {
	for _, line := range strings.Split(page, "\n") {
		rest, found := strings.CutPrefix(line, name)
		if !found || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all {
			f := strings.Fields(line)
			return f[len(f)-1], true
		}
	}
	return "", false
}

// TestServeMetrics sends and subscribes through `qgate serve`, then
// scrapes its metrics listener for qgate's and gRPC's series.
func TestServeMetrics(t *testing.T) {
	s := startServeEnv(t, nil)
	if code, out, errOut := cli(t, "", "send", "--addr", s.addr, "--topic", "met", "a", "b", "c"); code != 0 {
		t.Fatalf("send: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := cli(t, "", "subscribe", "--addr", s.addr, "--topic", "met", "--channel", "c", "--count", "3"); code != 0 {
		t.Fatalf("subscribe: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	base := "http://" + s.metricsAddr
	if code, body := get(t, http.DefaultClient, base+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// The subscription's acks are counted when the stream's handler sees
	// them; the CLI exits once the server ended the stream, so they are in.
	_, page := get(t, http.DefaultClient, base+"/metrics")
	checks := []struct {
		name   string
		labels []string
		want   string
	}{
		{"grpc_server_handled_total", []string{`grpc_code="OK"`, `grpc_method="SendStream"`, `grpc_service="qgate.v1.QueueService"`}, "1"},
		{"grpc_server_started_total", []string{`grpc_method="Subscribe"`, `grpc_type="bidi_stream"`}, "1"},
		{"grpc_server_handled_total", []string{`grpc_code="OK"`, `grpc_method="ListNodes"`}, "0"}, // initialized
		{"qgate_send_duration_seconds_count", []string{`topic="met"`}, "1"},
		{"qgate_deliveries_total", []string{`topic="met"`, `channel="c"`}, "3"},
		{"qgate_acks_total", []string{`topic="met"`, `channel="c"`}, "3"},
		{"qgate_node_state", []string{`node="nsqd-0"`, `state="up"`}, "1"},
		{"qgate_node_state", []string{`node="nsqd-2"`, `state="down"`}, "0"},
		{"qgate_node_active", []string{`node="nsqd-1"`}, "1"},
		{"qgate_send_errors_total", []string{`topic="met"`}, ""}, // none: absent
	}
	var sends int
	for _, n := range []string{"nsqd-0", "nsqd-1", "nsqd-2"} {
		if v, ok := sample(page, "qgate_sends_total", `node="`+n+`"`, `topic="met"`); ok {
			sends += atoi(t, v)
		}
	}
	if sends != 2 {
		t.Errorf("qgate_sends_total{topic=\"met\"} sums to %d over the nodes, want 2 (one batch, two copies: --replicas 2 by default)", sends)
	}
	for _, c := range checks {
		got, ok := sample(page, c.name, c.labels...)
		if ok != (c.want != "") || got != c.want {
			t.Errorf("%s%v = %q (found %v), want %s", c.name, c.labels, got, ok, c.want)
		}
	}
	if t.Failed() {
		t.Logf("metrics page:\n%s", page)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("metric value %q: %v", s, err)
	}
	return n
}

const (
	appSecret   = "app-secret-0123456789"
	adminSecret = "admin-secret-0123456789"
)

// writeAuthConfig writes a config over node with the app token (send and
// subscribe orders.*) and, if withApp is false, without it.
func writeAuthConfig(t *testing.T, path string, node *nsqd.Node, withApp bool) {
	t.Helper()
	app := ""
	if withApp {
		app = fmt.Sprintf(`    - {name: app, secret: %q, send: ["orders.*"], subscribe: ["orders.*"]}
`, appSecret)
	}
	yaml := fmt.Sprintf(`mode: cluster
nodes: [{tcp: %s, http: %s}]
check: {interval: 200ms}
auth:
  tokens:
%s    - {name: ops, secret: %q, admin: true}
`, node.TCPAddr, node.HTTPAddr, app, adminSecret)
	writeConfig(t, path, yaml)
}

// writeConfig replaces the file at path with yaml at once (a rename), so
// a reload never reads half of it.
func writeConfig(t *testing.T, path, yaml string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestServeAuth serves with tokens from a config file and $QGATE_TOKEN and
// runs the auth table through the CLI, then revokes a token with a reload.
func TestServeAuth(t *testing.T) {
	node := nsqdtest.StartNodes(t, 1)[0]
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	writeAuthConfig(t, path, node, true)
	const envSecret = "env-secret-0123456789"
	s := startServeEnv(t, envOf(map[string]string{"QGATE_TOKEN": envSecret}), "--config", path)

	tests := []struct {
		name     string
		getenv   func(string) string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no token", nil, []string{"send", "--topic", "orders.eu", "m"}, 1, "code = Unauthenticated"},
		{"wrong token", nil, []string{"send", "--token", "wrong-secret-0123456789", "--topic", "orders.eu", "m"}, 1, "code = Unauthenticated"},
		{"right token, wrong topic", nil, []string{"send", "--token", appSecret, "--topic", "orders_secret", "m"}, 1, "code = PermissionDenied"},
		{"right token, right topic", nil, []string{"send", "--token", appSecret, "--topic", "orders.eu", "m"}, 0, ""},
		{"token from the env", envOf(map[string]string{"QGATE_TOKEN": appSecret}), []string{"send", "--topic", "orders.eu", "m"}, 0, ""},
		{"subscribe", nil, []string{"subscribe", "--token", appSecret, "--topic", "orders.eu", "--channel", "c", "--count", "2"}, 0, ""},
		{"subscribe, wrong topic", nil, []string{"subscribe", "--token", appSecret, "--topic", "other", "--channel", "c"}, 1, "code = PermissionDenied"},
		{"admin without grant", nil, []string{"nodes", "--token", appSecret}, 1, "code = PermissionDenied"},
		{"admin", nil, []string{"nodes", "--token", adminSecret}, 0, ""},
		{"serve's env token", nil, []string{"nodes", "--token", envSecret}, 0, ""},
	}
	for _, tt := range tests {
		code, out, errOut := cliEnv(t, tt.getenv, append(append([]string{}, tt.args[0], "--addr", s.addr), tt.args[1:]...)...)
		if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
			t.Errorf("%s: status %d, stdout %q, stderr %q; want status %d and %q", tt.name, code, out, errOut, tt.wantCode, tt.wantErr)
		}
	}

	// Health needs no token.
	resp, err := healthpb.NewHealthClient(dialTest(t, s.addr)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without token: %v, %v", resp, err)
	}

	// A reload without the app token revokes it.
	writeAuthConfig(t, path, node, false)
	s.reload <- syscall.SIGHUP
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, errOut := cli(t, "", "send", "--addr", s.addr, "--token", appSecret, "--topic", "orders.eu", "m")
		if code == 1 && strings.Contains(errOut, "code = Unauthenticated") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reload the app token still works: status %d, stderr %q", code, errOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _, errOut := cli(t, "", "nodes", "--addr", s.addr, "--token", adminSecret); code != 0 {
		t.Errorf("admin after the reload: status %d, stderr %q", code, errOut)
	}
}

// TestServeTLS serves TLS, then mutual TLS, on the gRPC and metrics
// listeners, and connects with and without the CA and a client certificate.
func TestServeTLS(t *testing.T) {
	certs := tlstest.Generate(t)
	s := startServeEnv(t, nil, "--tls-cert", certs.Server.CertFile, "--tls-key", certs.Server.KeyFile)
	if code, out, errOut := cli(t, "", "nodes", "--addr", s.addr, "--tls-ca", certs.CA.CertFile); code != 0 {
		t.Errorf("nodes with the CA: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := cli(t, "", "nodes", "--addr", s.addr, "--timeout", "15s"); code == 0 {
		t.Error("nodes over plaintext to a TLS qgate: status 0")
	} else if !strings.Contains(errOut, "code = Unavailable") {
		t.Errorf("nodes over plaintext: stderr %q, want Unavailable", errOut)
	}
	// A generous timeout: under load, reading the system's CAs and the
	// handshake can outlast 2s, and the call then ends before it can say
	// why (seen on a loaded 2-core machine).
	if code, _, errOut := cli(t, "", "nodes", "--addr", s.addr, "--tls", "--timeout", "15s"); code == 0 {
		t.Error("nodes with the system's CAs: status 0, want a certificate error")
	} else if !strings.Contains(errOut, "certificate") {
		t.Errorf("nodes with the system's CAs: stderr %q, want a certificate error", errOut)
	}
	if code, _, errOut := cli(t, "", "nodes", "--addr", s.addr, "--insecure"); code != 0 {
		t.Errorf("nodes --insecure: status %d, stderr %q", code, errOut)
	}
	clientTLS, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: certs.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	if code, _ := get(t, https, "https://"+s.metricsAddr+"/healthz"); code != 200 {
		t.Errorf("https /healthz: %d", code)
	}

	m := startServeEnv(t, nil, "--tls-cert", certs.Server.CertFile, "--tls-key", certs.Server.KeyFile,
		"--tls-client-ca", certs.CA.CertFile)
	withCert := []string{"--tls-ca", certs.CA.CertFile, "--tls-cert", certs.Client.CertFile, "--tls-key", certs.Client.KeyFile}
	if code, _, errOut := cli(t, "", append([]string{"nodes", "--addr", m.addr}, withCert...)...); code != 0 {
		t.Errorf("mTLS nodes with a client certificate: status %d, stderr %q", code, errOut)
	}
	if code, _, _ := cli(t, "", "nodes", "--addr", m.addr, "--tls-ca", certs.CA.CertFile, "--timeout", "2s"); code == 0 {
		t.Error("mTLS nodes without a client certificate: status 0")
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 5 * time.Second}
	if resp, err := noCert.Get("https://" + m.metricsAddr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("mTLS metrics without a client certificate: got an answer")
	}
	withCertTLS, err := tlsutil.Client(tlsutil.ClientFiles{CAFile: certs.CA.CertFile,
		CertFile: certs.Client.CertFile, KeyFile: certs.Client.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, &http.Client{Transport: &http.Transport{TLSClientConfig: withCertTLS}}, "https://"+m.metricsAddr+"/readyz"); code != 200 {
		t.Errorf("mTLS /readyz with a client certificate: %d", code)
	}
}

// TestServeLimits hits the per-token rate limit and the receive size that
// follows the batch byte limit.
func TestServeLimits(t *testing.T) {
	// Each `qgate send` costs two: its SendStream's start and its one
	// request.
	s := startServeEnv(t, nil, "--rate-per-token", "0.01", "--rate-burst", "4",
		"--max-batch-size", "1000", "--max-body-size", "1000")
	for i := range 2 {
		if code, _, errOut := cli(t, "", "send", "--addr", s.addr, "--topic", "lim", "m"); code != 0 {
			t.Fatalf("send %d: status %d, stderr %q", i, code, errOut)
		}
	}
	if code, _, errOut := cli(t, "", "send", "--addr", s.addr, "--topic", "lim", "m"); code != 1 || !strings.Contains(errOut, "code = ResourceExhausted") {
		t.Errorf("send over the rate: status %d, stderr %q; want ResourceExhausted", code, errOut)
	}
	// Health is not limited.
	if _, err := healthpb.NewHealthClient(dialTest(t, s.addr)).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health over the rate: %v", err)
	}

	big := startServeEnv(t, nil, "--max-batch-size", "1000", "--max-body-size", "1000", "--metrics-addr", "off",
		"--max-subscriptions-per-token", "1")
	if big.metricsAddr != "" {
		t.Errorf("--metrics-addr off: metrics on %s", big.metricsAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := qgatev1.NewQueueServiceClient(dialTest(t, big.addr))
	subscribe := func() error {
		stream, err := q.Subscribe(ctx)
		if err != nil {
			return err
		}
		open := &qgatev1.SubscribeRequest_Open{Topic: "lim", Channel: "c"}
		if err := stream.Send(&qgatev1.SubscribeRequest{Kind: &qgatev1.SubscribeRequest_Open_{Open: open}}); err != nil {
			return err
		}
		_, err = stream.Recv() // opened, or the stream's end
		return err
	}
	if err := subscribe(); err != nil {
		t.Fatalf("first subscription: %v", err)
	}
	if err := subscribe(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second subscription with --max-subscriptions-per-token 1: %v, want ResourceExhausted", err)
	}
	code, _, errOut := cli(t, "", "send", "--addr", big.addr, "--topic", "lim", strings.Repeat("x", 200<<10))
	if code != 1 || !strings.Contains(errOut, "code = ResourceExhausted") {
		t.Errorf("send of 200 KiB with a 1000-byte batch limit: status %d, stderr %q; want ResourceExhausted", code, errOut)
	}
}

// TestServeNSQDTLS serves over an nsqd process that requires TLS on TCP and
// checks AUTH secrets with an auth server: the pool connects with the CA
// of --nsqd-tls-ca and the secret of $QGATE_NSQD_AUTH_SECRET.
func TestServeNSQDTLS(t *testing.T) {
	certs := tlstest.Generate(t)
	const secret = "nsqd-secret"
	var mu sync.Mutex
	var seen []string
	authSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		seen = append(seen, q.Get("secret")+" tls="+q.Get("tls"))
		mu.Unlock()
		if q.Get("secret") != secret {
			http.Error(w, "bad secret", http.StatusForbidden)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ttl": 3600, "identity": "qgate",
			"authorizations": []map[string]any{{"topic": ".*", "channels": []string{".*"}, "permissions": []string{"subscribe", "publish"}}}})
	}))
	t.Cleanup(authSrv.Close)
	proc := nsqdtest.StartProcess(t, nsqdtest.Args("--tls-cert="+certs.Server.CertFile, "--tls-key="+certs.Server.KeyFile,
		"--tls-required=tcp-https", "--auth-http-address="+authSrv.Listener.Addr().String()))
	s := startServeEnv(t, envOf(map[string]string{"QGATE_NSQD_AUTH_SECRET": secret}),
		"--nsqd", proc.TCPAddr()+"/"+proc.HTTPAddr(), "--nsqd-tls-ca", certs.CA.CertFile, "--check-interval", "200ms")
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, errOut := cli(t, "", "send", "--addr", s.addr, "--topic", "secure", "hello")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("send over nsqd TLS: status %d, stderr %q", code, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, out, errOut := cli(t, "", "subscribe", "--addr", s.addr, "--topic", "secure", "--channel", "c", "--count", "1")
	if code != 0 || strings.TrimSpace(out) != "hello" {
		t.Errorf("subscribe over nsqd TLS: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Errorf("the auth server saw %d requests, want one per connection (producer and consumer)", len(seen))
	}
	for _, s := range seen {
		if s != secret+" tls=true" {
			t.Errorf("auth request %q, want the secret over TLS", s)
		}
	}
}

// TestServeOpsUsage checks the operations flags that cannot go together.
func TestServeOpsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--tls-cert", "a.crt"},
		{"--tls-client-ca", "ca.crt"},
		{"--nsqd-tls-key", "k"},
		{"--metrics-addr", "7071"},
		{"--rate-per-token", "-1"},
	} {
		code, _, errOut := cli(t, "", append([]string{"serve"}, args...)...)
		if code != 2 || !strings.Contains(errOut, "Run 'qgate serve --help'") {
			t.Errorf("serve %v: status %d, stderr %q; want a usage error", args, code, errOut)
		}
	}
}
