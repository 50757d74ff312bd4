package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qgate/qgate/internal/auth"
)

// writeFiles writes name -> content into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpsSections(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"s.crt": "x", "s.key": "x", "ca.crt": "x",
		"orders.secret": "orders-secret-0123456789\n", "nsqd.secret": "nsqd-secret\n"})
	t.Setenv("QGATE_TEST_OPS_SECRET", "env-secret-0123456789")
	yaml := `mode: cluster
nodes: [{tcp: a:4150}]
metrics_listen: 0.0.0.0:7071
tls: {cert: s.crt, key: s.key, client_ca: ca.crt}
nsqd:
  tls_ca: ca.crt
  auth_secret_file: nsqd.secret
auth:
  tokens:
    - name: orders
      secret_file: orders.secret
      send: ["orders", "orders.*"]
      subscribe: [orders]
    - name: ops
      secret_env: QGATE_TEST_OPS_SECRET
      send: ["*"]
      admin: true
limits: {max_streams: 100, max_subscriptions_per_token: 5, rate_per_token: 2.5, rate_burst: 10}
`
	path := filepath.Join(dir, "qgate.yaml")
	writeFiles(t, dir, map[string]string{"qgate.yaml": yaml})
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.MetricsListen != "0.0.0.0:7071" {
		t.Errorf("MetricsListen %q", f.MetricsListen)
	}
	wantTLS := TLS{CertFile: filepath.Join(dir, "s.crt"), KeyFile: filepath.Join(dir, "s.key"), ClientCAFile: filepath.Join(dir, "ca.crt")}
	if f.TLS != wantTLS {
		t.Errorf("TLS %+v, want %+v", f.TLS, wantTLS)
	}
	wantNSQD := NSQD{TLS: true, TLSCAFile: filepath.Join(dir, "ca.crt"), AuthSecret: "nsqd-secret"}
	if f.NSQD != wantNSQD {
		t.Errorf("NSQD %+v, want %+v", f.NSQD, wantNSQD)
	}
	wantTokens := []auth.Token{
		{Name: "orders", Secret: "orders-secret-0123456789", Send: []string{"orders", "orders.*"}, Subscribe: []string{"orders"}},
		{Name: "ops", Secret: "env-secret-0123456789", Send: []string{"*"}, Admin: true},
	}
	if !reflect.DeepEqual(f.Auth.Tokens, wantTokens) {
		t.Errorf("tokens %+v, want %+v", f.Auth.Tokens, wantTokens)
	}
	if _, err := auth.NewStore(f.Auth.Tokens); err != nil {
		t.Errorf("the tokens do not make a store: %v", err)
	}
	wantLimits := Limits{MaxStreams: 100, MaxSubscriptionsPerToken: 5, RatePerToken: 2.5, RateBurst: 10}
	if f.Limits != wantLimits {
		t.Errorf("limits %+v, want %+v", f.Limits, wantLimits)
	}

}

func TestOpsErrors(t *testing.T) {
	yaml := `mode: cluster
nodes: [{tcp: a:4150}]
metrics_listen: nope
tls: {cert: missing.crt}
auth:
  tokens:
    - name: a
      secret: short
      send: ["[x"]
    - name: a
      secret: "0123456789abcdef"
      secret_env: X
    - secret: "0123456789abcdef"
      admin: "yes"
limits: {max_streams: 0, rate_burst: 3}
`
	_, err := Parse(filepath.Join(t.TempDir(), "q.yaml"), []byte(yaml))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"q.yaml:3: metrics_listen: missing port in address",
		"q.yaml:4: tls.cert: ",
		"q.yaml:4: tls.key: missing: the key of tls.cert",
		"q.yaml:8: auth.tokens[0].secret: the secret is shorter than 16 bytes",
		`q.yaml:9: auth.tokens[0].send[0]: pattern "[x": syntax error in pattern`,
		`q.yaml:10: auth.tokens[1].name: token name "a" is also used by auth.tokens[0]`,
		"q.yaml:11: auth.tokens[1].secret: give one of secret, secret_file and secret_env",
		"q.yaml:13: auth.tokens[2].name: missing",
		`q.yaml:14: auth.tokens[2].admin: want true or false, got the string "yes"`,
		"q.yaml:15: limits.max_streams: must be 1 to",
		"q.yaml:15: limits.rate_burst: needs rate_per_token",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
