package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qgate/qgate/backends/nsq"
)

func TestParseNodes(t *testing.T) {
	tests := []struct {
		in      string
		want    []nsq.NodeConfig
		wantErr string
	}{
		{in: "10.0.0.1:4150", want: []nsq.NodeConfig{{TCPAddr: "10.0.0.1:4150", HTTPAddr: "10.0.0.1:4151"}}},
		{in: "a:4150,b:5000/b:8080", want: []nsq.NodeConfig{
			{TCPAddr: "a:4150", HTTPAddr: "a:4151"}, {TCPAddr: "b:5000", HTTPAddr: "b:8080"}}},
		{in: "[::1]:4150", want: []nsq.NodeConfig{{TCPAddr: "[::1]:4150", HTTPAddr: "[::1]:4151"}}},
		{in: "nohost", wantErr: "missing port"},
		{in: "a:65535", wantErr: "give it as tcp/http"},
		{in: "a:4150/b", wantErr: "http address"},
		{in: "a:0", wantErr: "bad port"},
		{in: "", wantErr: "no nodes"},
	}
	for _, tt := range tests {
		var l listFlag
		_ = l.Set(tt.in)
		got, err := parseNodes(l)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseNodes(%q): got error %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("parseNodes(%q): got %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestSettingsFlagsOverrideConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	yaml := `listen: 127.0.0.1:9000
mode: failover
nodes:
  - {name: p, tcp: 10.0.0.1:4150}
  - {name: b, tcp: 10.0.0.2:4150}
check: {interval: 3s, fall: 5}
limits: {max_batch_messages: 10}
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newServeFlags()
	if err := f.fs.Parse([]string{"--config", path, "--fall", "7", "--listen", ":7070"}); err != nil {
		t.Fatal(err)
	}
	s, err := f.settings()
	if err != nil {
		t.Fatal(err)
	}
	c := s.poolCfg.Check
	switch {
	case s.listen != ":7070":
		t.Errorf("listen %q: the flag should win", s.listen)
	case c.Fall != 7 || c.Interval != 3*time.Second || c.Rise != 2:
		t.Errorf("check %+v: want fall 7 (flag), interval 3s (file), rise 2 (default)", c)
	case len(s.poolCfg.Groups) != 1 || len(s.poolCfg.Groups[0].Nodes) != 2 || s.embedded:
		t.Errorf("groups %+v: want the file's one failover group of 2", s.poolCfg.Groups)
	case s.limits.MaxBatchMessages != 10 || s.limits.MaxBodyBytes != 1<<20:
		t.Errorf("limits %+v: want 10 messages (file) and 1 MiB bodies (default)", s.limits)
	}

	// --nsqd replaces the file's nodes, laid out in the file's mode.
	f = newServeFlags()
	_ = f.fs.Parse([]string{"--config", path, "--nsqd", "x:4150,y:4150"})
	if s, err = f.settings(); err != nil {
		t.Fatal(err)
	}
	if g := s.poolCfg.Groups; len(g) != 1 || g[0].Nodes[0].TCPAddr != "x:4150" || g[0].Nodes[1].HTTPAddr != "y:4151" {
		t.Errorf("groups %+v: want one failover group x, y", g)
	}
}

// TestSettingsReplication: the file's replication keys apply, and flags
// given win over them.
func TestSettingsReplication(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	yaml := "mode: cluster\nembedded: 3\nreplicas: 3\nmin_replicas: 2\nstandby_delay: 45s\nack_topic: \"off\"\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newServeFlags()
	if err := f.fs.Parse([]string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	s, err := f.settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.replicas != 3 || !s.replicasSet || s.poolCfg.MinReplicas != 2 || s.poolCfg.StandbyDelay != 45*time.Second || s.poolCfg.AckTopic != "" {
		t.Errorf("replicas %d (set %v), pool %+v: want the file's 3, min 2, standby 45s, acks off",
			s.replicas, s.replicasSet, s.poolCfg)
	}
	f = newServeFlags()
	if err := f.fs.Parse([]string{"--config", path, "--replicas", "2", "--min-replicas", "1", "--standby-delay", "10s", "--ack-topic", "x.acks"}); err != nil {
		t.Fatal(err)
	}
	if s, err = f.settings(); err != nil {
		t.Fatal(err)
	}
	if s.replicas != 2 || s.poolCfg.MinReplicas != 1 || s.poolCfg.StandbyDelay != 10*time.Second || s.poolCfg.AckTopic != "x.acks" {
		t.Errorf("replicas %d, pool min %d standby %v acks %q: want the flags' 2, 1, 10s, x.acks",
			s.replicas, s.poolCfg.MinReplicas, s.poolCfg.StandbyDelay, s.poolCfg.AckTopic)
	}
	// No file, no flags: the defaults, replicas not given.
	f = newServeFlags()
	_ = f.fs.Parse(nil)
	if s, err = f.settings(); err != nil {
		t.Fatal(err)
	}
	if s.replicas != 2 || s.replicasSet || s.poolCfg.StandbyDelay != nsq.DefaultStandbyDelay || s.poolCfg.AckTopic != nsq.DefaultAckTopic {
		t.Errorf("defaults: replicas %d (set %v), standby %v, acks %q", s.replicas, s.replicasSet, s.poolCfg.StandbyDelay, s.poolCfg.AckTopic)
	}
}

func TestSettingsEmbeddedDefault(t *testing.T) {
	f := newServeFlags()
	_ = f.fs.Parse(nil)
	s, err := f.settings()
	if err != nil {
		t.Fatal(err)
	}
	if !s.embedded || s.listen != "127.0.0.1:7070" || s.mode != nsq.ModeCluster {
		t.Errorf("no flags: got embedded %v, listen %q, mode %q; want embedded cluster on 127.0.0.1:7070", s.embedded, s.listen, s.mode)
	}
	// A config file asks for embedded nodes with embedded: n; --nsqd
	// overrides it as it overrides nodes.
	path := filepath.Join(t.TempDir(), "qgate.yaml")
	if err := os.WriteFile(path, []byte("mode: failover\nembedded: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f = newServeFlags()
	_ = f.fs.Parse([]string{"--config", path})
	if s, err = f.settings(); err != nil || !s.embedded || s.embeddedNodes != 2 || s.mode != nsq.ModeFailover {
		t.Errorf("embedded: 2: got %+v, %v; want 2 embedded nodes in mode failover", s, err)
	}
	f = newServeFlags()
	_ = f.fs.Parse([]string{"--config", path, "--nsqd", "x:4150"})
	if s, err = f.settings(); err != nil || s.embedded || len(s.poolCfg.Groups) != 1 {
		t.Errorf("embedded: 2 and --nsqd: got %+v, %v; want the flag's node", s, err)
	}

	f = newServeFlags()
	_ = f.fs.Parse([]string{"--mode", "ha", "--nsqd", "a:1"})
	if _, err := f.settings(); err == nil || !strings.Contains(err.Error(), "explicit groups") {
		t.Errorf("--mode ha with --nsqd: got %v, want an error asking for groups", err)
	}
}

// TestHelp checks that every command explains itself on --help, and that
// bad usage exits with status 2.
func TestHelp(t *testing.T) {
	for _, c := range commands {
		code, out, _ := cli(t, "", c.name, "--help")
		if code != 0 || !strings.Contains(out, "Usage:") || !strings.Contains(out, "-addr") && c.name != "serve" {
			t.Errorf("%s --help: status %d, output %q", c.name, code, out)
		}
	}
	code, out, _ := cli(t, "", "serve", "--help")
	for _, want := range []string{"Example:", "-nsqd", "-listen", "127.0.0.1:7070", "-shutdown-timeout", "port + 1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := cli(t, "", "help"); code != 0 || !strings.Contains(out, "subscribe") {
		t.Errorf("help: status %d, output %q", code, out)
	}
	for _, args := range [][]string{{"nope"}, {"send", "--bogus"}, {"send", "x"}, {"subscribe", "--topic", "t"}} {
		if code, _, _ := cli(t, "", args...); code != 2 {
			t.Errorf("%v: status %d, want 2", args, code)
		}
	}
}

func TestSendUnreachable(t *testing.T) {
	code, _, errOut := cli(t, "", "send", "--addr", "127.0.0.1:1", "--timeout", "1s", "--topic", "t", "m")
	if code != 1 || !strings.Contains(errOut, "qgate send:") {
		t.Errorf("send to nowhere: status %d, stderr %q; want 1 and an error", code, errOut)
	}
}

func TestSendProgress(t *testing.T) {
	var buf bytes.Buffer
	s := &sender{progress: &buf}
	s.report(false) // starts the clock
	s.sent = 10
	s.report(true)
	if buf.Len() != 0 {
		t.Fatalf("a short send printed progress: %q", buf.String())
	}
	s.start = time.Now().Add(-2 * time.Second)
	s.shown = s.start
	s.sent = 4000
	s.report(false)
	s.report(false) // not due again yet
	s.sent = 5000
	s.report(true)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "qgate send: 4000 messages sent (") ||
		!strings.HasPrefix(lines[1], "qgate send: 5000 messages sent (") {
		t.Errorf("progress lines: %q; want one at 4000 and a final one at 5000", lines)
	}
}

func TestSettingsOpsFlagsOverrideConfig(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"s.crt", "s.key"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "qgate.yaml")
	yaml := `mode: cluster
nodes: [{tcp: 10.0.0.1:4150}]
metrics_listen: 0.0.0.0:9100
tls: {cert: s.crt, key: s.key}
nsqd: {auth_secret: file-secret}
limits: {max_streams: 10, rate_per_token: 5}
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newServeFlags()
	if err := f.fs.Parse([]string{"--config", path, "--rate-per-token", "7", "--nsqd-tls-ca", "ca.crt", "--nsqd-auth-secret", "flag-secret"}); err != nil {
		t.Fatal(err)
	}
	s, err := f.settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.metricsAddr != "0.0.0.0:9100" || s.tls.CertFile != filepath.Join(dir, "s.crt") {
		t.Errorf("metrics %q, tls %+v: want the file's", s.metricsAddr, s.tls)
	}
	if s.opsLimits.MaxConcurrentStreams != 10 || s.opsLimits.Rate != 7 {
		t.Errorf("limits %+v: want max streams 10 from the file, rate 7 from the flag", s.opsLimits)
	}
	if !s.nsqd.TLS || s.nsqd.TLSCAFile != "ca.crt" || s.nsqd.AuthSecret != "flag-secret" {
		t.Errorf("nsqd %+v: want TLS with the flag's CA and secret", s.nsqd)
	}
}
