package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientsNode is the Node.js client test's directory.
var clientsNode = filepath.Join("..", "..", "clients", "node")

// TestNodeClient runs clients/node/client_test.mjs (Node.js, @grpc/grpc-js
// loading proto/ directly) against `qgate serve` in this process, auth on. It
// skips only when node or npm is missing; it installs the pinned packages
// (npm ci) when clients/node/node_modules is missing.
func TestNodeClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(clientsNode, "node_modules", "@grpc", "grpc-js")); err != nil {
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = clientsNode
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	const secret = "node-client-secret-0123456789"
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	writeTokensConfig(t, path, fmt.Sprintf(`{name: node, secret: %q, send: ["node_*"], subscribe: ["node_*"]}`, secret))
	g := startServeEnv(t, nil, "--config", path, "--replicas", "1")

	cmd := exec.CommandContext(ctx, node, "client_test.mjs")
	cmd.Dir = clientsNode
	cmd.Env = append(os.Environ(), "QGATE_ADDR="+g.addr, "QGATE_TOKEN="+secret)
	out, err := cmd.CombinedOutput()
	t.Logf("node client_test.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("node client test failed: %v", err)
	}

	// The script's calls show in the gateway's metrics.
	_, page := get(t, http.DefaultClient, "http://"+g.metricsAddr+"/metrics")
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Subscribe",grpc_service="qgate.v1.QueueService",grpc_type="bidi_stream"} 1`,
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Send",grpc_service="qgate.v1.QueueService",grpc_type="unary"} 1`,
		`qgate_redeliveries_total{channel="node",topic="node_sub_`,
		`qgate_nacks_total{channel="node",topic="node_sub_`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
