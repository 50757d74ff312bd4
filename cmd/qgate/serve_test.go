package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestServeConfigFailover serves a failover pool from a config file over
// external nodes, and checks the roles and the active node in `qgate nodes`.
func TestServeConfigFailover(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)
	yaml := fmt.Sprintf(`mode: failover
nodes:
  - {name: primary, tcp: %s, http: %s}
  - {name: backup, tcp: %s, http: %s}
check: {interval: 200ms}
`, nodes[0].TCPAddr, nodes[0].HTTPAddr, nodes[1].TCPAddr, nodes[1].HTTPAddr)
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, _ := startServe(t, "--config", path)

	code, out, errOut := cli(t, "", "nodes", "--addr", addr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("nodes: status %d, stdout %q, stderr %q; want a header and 2 rows", code, out, errOut)
	}
	want := [][]string{{"primary", "primary", "up", "true"}, {"backup", "backup", "up", "false"}}
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		got := []string{f[0], f[2], f[3], f[8]} // name, role, state, active
		if strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("nodes row %d: %q; want name, role, state, active = %v", i, line, want[i])
		}
	}
	code, out, _ = cli(t, "", "send", "--addr", addr, "--topic", "fo", "m")
	if code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("send: status %d, stdout %q", code, out)
	}
	if st := nsqdtest.Stats(t, nodes[0].HTTPAddr).Topic("fo"); st == nil || st.MessageCount != 1 {
		t.Errorf("the primary's topic: %+v; want the message there", st)
	}
}

// TestServeReplicas sends with --replicas 2 over external nodes: each
// message lands on two nodes, and a subscriber sees it once.
func TestServeReplicas(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 3)
	var list []string
	for _, n := range nodes {
		list = append(list, n.TCPAddr+"/"+n.HTTPAddr)
	}
	addr, _ := startServe(t, "--nsqd", strings.Join(list, ","), "--replicas", "2")
	if code, out, errOut := cli(t, "", "send", "--addr", addr, "--topic", "rep", "one"); code != 0 {
		t.Fatalf("send: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	var copies uint64
	for _, n := range nodes {
		if st := nsqdtest.Stats(t, n.HTTPAddr).Topic("rep"); st != nil {
			copies += st.MessageCount
		}
	}
	if copies != 2 {
		t.Errorf("the nodes hold %d copies, want 2", copies)
	}
	code, out, _ := cli(t, "", "send", "--addr", addr, "--topic", "rep", "two")
	if code != 0 {
		t.Fatalf("second send: status %d", code)
	}
	code, out, _ = cli(t, "", "subscribe", "--addr", addr, "--topic", "rep", "--channel", "c", "--count", "2")
	if got := strings.Fields(out); code != 0 || len(got) != 2 || got[0] == got[1] {
		t.Errorf("subscribe: status %d, stdout %q; want one and two, once each", code, out)
	}
	if code, _, _ := cli(t, "", "serve", "--replicas", "4"); code != 2 {
		t.Errorf("serve --replicas 4: status %d, want 2", code)
	}
}

// TestServeConfigEmbedded serves docs/examples/embedded.yaml as the README
// suggests for trying tokens: embedded nodes from a config file, with its
// tokens enforced.
func TestServeConfigEmbedded(t *testing.T) {
	addr, _ := startServe(t, "--config", "../../docs/examples/embedded.yaml")
	const orders, ops = "orders-example-secret", "ops-example-secret-0123"

	code, out, errOut := cli(t, "", "nodes", "--addr", addr, "--token", ops)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 4 {
		t.Fatalf("nodes: status %d, stdout %q, stderr %q; want a header and the file's 3 embedded nodes", code, out, errOut)
	}
	if code, _, errOut := cli(t, "", "send", "--addr", addr, "--token", orders, "--topic", "orders.eu", "m"); code != 0 {
		t.Errorf("send with the orders token: status %d, stderr %q", code, errOut)
	}
	if code, _, errOut := cli(t, "", "send", "--addr", addr, "--token", orders, "--topic", "billing", "m"); code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("send to another topic: status %d, stderr %q; want PermissionDenied", code, errOut)
	}
	if code, _, errOut := cli(t, "", "nodes", "--addr", addr); code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("nodes without a token: status %d, stderr %q; want Unauthenticated", code, errOut)
	}
}
