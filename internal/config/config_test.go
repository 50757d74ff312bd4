package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/qgate/qgate/backends/nsq"
	"github.com/qgate/qgate/backends/nsq/health"
)

func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../../docs/examples/*")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"cluster.yaml": false, "failover.yaml": false, "ha.yaml": false, "embedded.yaml": false}
	loaded := map[string]*File{}
	for _, path := range files {
		f, err := Load(path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		cfg, err := f.PoolConfig()
		if err != nil {
			t.Errorf("%s: PoolConfig: %v", path, err)
			continue
		}
		if (len(cfg.Groups) == 0) != (f.Embedded > 0) {
			t.Errorf("%s: %d groups and %d embedded nodes; want either", path, len(cfg.Groups), f.Embedded)
		}
		want[filepath.Base(path)] = true
		loaded[filepath.Base(path)] = f
	}
	for name, ok := range want {
		if !ok {
			t.Errorf("docs/examples/%s: missing or does not load", name)
		}
	}
	if f := loaded["failover.yaml"]; f != nil {
		cfg, _ := f.PoolConfig()
		if len(cfg.Groups) != 1 || len(cfg.Groups[0].Nodes) != 2 || cfg.Groups[0].Nodes[1].HTTPAddr != "10.0.0.2:4151" {
			t.Errorf("failover.yaml: groups %+v, want one group of 2 with the backup's derived http address", cfg.Groups)
		}
	}
}

func TestGood(t *testing.T) {
	tests := []struct {
		name, text string
		want       File
	}{
		{"minimal cluster.yaml", `
mode: cluster
nodes:
  - tcp: 127.0.0.1:4150
  - tcp: "[::1]:5150"
`, File{Mode: nsq.ModeCluster, Nodes: []Member{
			{Name: "127.0.0.1:4150", TCPAddr: "127.0.0.1:4150", HTTPAddr: "127.0.0.1:4151"},
			{Name: "[::1]:5150", TCPAddr: "[::1]:5150", HTTPAddr: "[::1]:5151"},
		}}},
		{"everything.yaml", `
listen: ":7070"
mode: failover
nodes:
  - {name: p, tcp: a:1, http: a:2}
  - {name: b, tcp: b:1, http: b:2}
check: {interval: 2s, timeout: 300ms, jitter: 0, fall: 3, rise: 4}
failback_hold: 10s
dial_timeout: 1500ms
write_timeout: 2s
attempt_timeout: 3s
attempt_timeout_min: 200ms
eject: {consecutive: 3, base: 2s, max: 20s, decay: 1m, max_percent: 34}
limits: {max_body_bytes: 100, max_batch_messages: 10, max_batch_bytes: 1000}
`, File{Listen: ":7070", Mode: nsq.ModeFailover,
			Nodes: []Member{{"p", "a:1", "a:2"}, {"b", "b:1", "b:2"}},
			Check: health.Config{Interval: 2 * time.Second, Timeout: 300 * time.Millisecond, Jitter: -1, Fall: 3, Rise: 4},
			Eject: health.EjectConfig{Consecutive: 3, BaseEjection: 2 * time.Second, MaxEjection: 20 * time.Second,
				Decay: time.Minute, MaxEjectionPercent: 34},
			FailbackHold: 10 * time.Second, DialTimeout: 1500 * time.Millisecond, WriteTimeout: 2 * time.Second, AttemptTimeout: 3 * time.Second,
			AttemptTimeoutMin: 200 * time.Millisecond,
			Limits:            Limits{MaxBodyBytes: 100, MaxBatchMessages: 10, MaxBatchBytes: 1000}}},
		{"discovery only.yml", `
mode: cluster
lookupd:
  addrs: [127.0.0.1:4161, "http://10.0.0.1:4161"]
  poll_interval: 2s
`, File{Mode: nsq.ModeCluster, Lookupd: Lookupd{Addrs: []string{"127.0.0.1:4161", "http://10.0.0.1:4161"}, PollInterval: 2 * time.Second}}},
		{"cluster groups of one.yaml", `
mode: cluster
groups:
  - members: [{tcp: a:1}]
  - members: [{tcp: b:1}]
`, File{Mode: nsq.ModeCluster, Groups: []Group{
			{Name: "group-1", Members: []Member{{"a:1", "a:1", "a:2"}}},
			{Name: "group-2", Members: []Member{{"b:1", "b:1", "b:2"}}},
		}}},
		{"embedded.yaml", "mode: failover\nembedded: 2\n", File{Mode: nsq.ModeFailover, Embedded: 2}},
		{"replication.yaml", `
mode: cluster
embedded: 3
replicas: 3
min_replicas: 2
standby_delay: 45s
ack_topic: ops.acks
`, File{Mode: nsq.ModeCluster, Embedded: 3, Replicas: 3, MinReplicas: 2, StandbyDelay: 45 * time.Second, AckTopic: "ops.acks"}},
		{"acks off.yaml", "mode: cluster\nembedded: 3\nreplicas: 1\nack_topic: \"off\"\n",
			File{Mode: nsq.ModeCluster, Embedded: 3, Replicas: 1, AckTopic: AckTopicOff}},
		{"anchors.yaml", `
x-check: &chk {interval: 3s}
mode: cluster
nodes: [{tcp: a:1}]
check: *chk
`, File{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.name, []byte(tt.text))
			if tt.name == "anchors.yaml" {
				// Unknown top-level keys are errors, even as anchor holders.
				if err == nil || !strings.Contains(err.Error(), "x-check: unknown field") {
					t.Errorf("got %v, want an unknown field error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Path = tt.name
			if !reflect.DeepEqual(*f, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *f, tt.want)
			}
		})
	}
}

func TestBad(t *testing.T) {
	// Each case: a file, and the errors it must give as "line: field" (or
	// "line:" alone for syntax errors), in order, plus a message fragment.
	tests := []struct {
		name, text string
		want       []string // "line field" of each error
		msg        string   // in the first error's message
	}{
		{"unknown top-level.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\nmodes: ha\n", []string{"3 modes"}, "unknown field"},
		{"unknown nested.yaml", `mode: ha
groups:
  - name: g1
    members:
      - tcp: a:1
  - name: g2
    members:
      - tcp: b:1
        tpc: c:1
`, []string{"9 groups[1].members[0].tpc"}, "unknown field"},
		{"missing port.yaml", `mode: ha
groups:
  - members: [{tcp: a:1}]
  - members:
      - name: x
        tcp: localhost
`, []string{"6 groups[1].members[0].tcp"}, "missing port in address"},
		{"bad port.yaml", "mode: cluster\nnodes:\n  - tcp: a:99999\n", []string{"3 nodes[0].tcp"}, "invalid port"},
		{"missing tcp.yaml", "mode: cluster\nnodes:\n  - name: a\n    http: a:2\n", []string{"3 nodes[0].tcp"}, "missing"},
		{"missing mode.yaml", "nodes: [{tcp: a:1}]\n", []string{"1 mode"}, "missing"},
		{"bad mode.yaml", "\n\nmode: active\nnodes: [{tcp: a:1}]\n", []string{"3 mode"}, "unknown mode"},
		{"no nodes.yaml", "mode: failover\n", []string{"1 nodes"}, "missing"},
		{"empty nodes.yaml", "mode: failover\nnodes: []\n", []string{"2 nodes"}, "embedded: 3"},
		{"embedded and nodes.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\nembedded: 3\n", []string{"3 embedded"}, "not both"},
		{"embedded ha.yaml", "mode: ha\nembedded: 3\n", []string{"2 embedded"}, "not ha"},
		{"embedded zero.yaml", "mode: cluster\nembedded: 0\n", []string{"2 embedded"}, "must be 1 to 9"},
		{"bad duration.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\ncheck:\n  interval: 5 seconds\n", []string{"4 check.interval"}, "invalid duration"},
		{"number duration.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\nfailback_hold: 5\n", []string{"3 failback_hold"}, "want a duration string"},
		{"replicas.yaml", "mode: cluster\nembedded: 3\nreplicas: 4\n", []string{"3 replicas"}, "must be 1 to 3"},
		{"min replicas.yaml", "mode: cluster\nembedded: 3\nreplicas: 2\nmin_replicas: 3\n", []string{"4 min_replicas"}, "above replicas"},
		{"standby delay.yaml", "mode: cluster\nembedded: 3\nstandby_delay: 0s\n", []string{"3 standby_delay"}, "must be positive"},
		{"ack topic.yaml", "mode: cluster\nembedded: 3\nack_topic: \"a b\"\n", []string{"3 ack_topic"}, "not a valid NSQ topic name"},
		{"zero fall.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\ncheck: {fall: 0}\n", []string{"3 check.fall"}, "at least 1"},
		{"eject max percent.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\neject: {max_percent: 101}\n", []string{"3 eject.max_percent"}, "out of range"},
		{"eject max below base.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\neject: {base: 10s, max: 5s}\n", []string{"3 eject.max"}, "below the base"},
		{"jitter range.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\ncheck:\n  jitter: 1.5\n", []string{"4 check.jitter"}, "out of range"},
		{"wrong type.yaml", "mode: cluster\nnodes:\n  tcp: a:1\n", []string{"2 nodes"}, "want a list"},
		{"string for int.yaml", "mode: cluster\nnodes: [{tcp: a:1}]\nlimits:\n  max_body_bytes: 1MB\n", []string{"4 limits.max_body_bytes"}, "want an integer"},
		{"duplicate name.yaml", "mode: cluster\nnodes:\n  - {name: a, tcp: a:1}\n  - {name: a, tcp: b:1}\n", []string{"4 nodes[1].name"}, "also used by nodes[0]"},
		{"duplicate tcp.yaml", "mode: cluster\nnodes:\n  - {name: a, tcp: a:1}\n  - {name: b, tcp: a:1}\n", []string{"4 nodes[1].tcp"}, "also used by nodes[0]"},
		{"duplicate key.yaml", "mode: cluster\nmode: ha\nnodes: [{tcp: a:1}]\n", []string{"2 mode"}, "duplicate key"},
		{"ha with nodes.yaml", "mode: ha\nnodes: [{tcp: a:1}]\n", []string{"2 nodes"}, "needs groups"},
		{"failover two groups.yaml", "mode: failover\ngroups:\n  - members: [{tcp: a:1}]\n  - members: [{tcp: b:1}]\n", []string{"2 groups"}, "one group"},
		{"cluster backups.yaml", "mode: cluster\ngroups:\n  - members: [{tcp: a:1}, {tcp: b:1}]\n", []string{"3 groups[0].members"}, "one member per group"},
		{"empty group.yaml", "mode: ha\ngroups:\n  - name: g\n", []string{"3 groups[0].members"}, "at least one member"},
		{"lookupd not cluster.yaml", "mode: failover\nnodes: [{tcp: a:1}]\nlookupd:\n  addrs: [x:4161]\n", []string{"3 lookupd"}, "needs mode cluster"},
		{"bad lookupd.yaml", "mode: cluster\nlookupd:\n  addrs:\n    - ftp://x:1\n", []string{"4 lookupd.addrs[0]"}, "scheme"},
		{"bad listen.yaml", "listen: 7070\nmode: cluster\nnodes: [{tcp: a:1}]\n", []string{"1 listen"}, "want a string"},
		{"several errors.yaml", "mode: cluster\nnodes:\n  - tcp: a\n  - tcp: b:1\n    port: 3\ncheck: {rise: -1}\n",
			[]string{"3 nodes[0].tcp", "5 nodes[1].port", "6 check.rise"}, "missing port"},
		// Quoted keys are decoded by the YAML parser, escapes included.
		{"escaped keys.yaml", "\"mo\\x64e\": cluster\nnodes:\n  - {\"tc\\x70\": a:1, \"ht\\\"p\": a:2}\n", []string{`3 nodes[0].ht"p`}, "unknown field"},
		{"syntax.yaml", "mode: cluster\nnodes:\n  - tcp: a:1\n  bad\n", []string{"4 "}, "YAML"},
		{"tabs.yaml", "mode: cluster\nnodes:\n\t- tcp: a:1\n", []string{"3 "}, "YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.name, []byte(tt.text))
			if err == nil {
				t.Fatalf("no error; got %+v", f)
			}
			var got []string
			var first *FieldError
			for _, e := range unjoin(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error %v is not a *FieldError", e)
				}
				if first == nil {
					first = fe
				}
				got = append(got, strings.TrimSpace(itoa(fe.Line)+" "+fe.Field))
				if !strings.HasPrefix(fe.Error(), tt.name+":"+itoa(fe.Line)+": ") {
					t.Errorf("message %q does not start with file:line", fe.Error())
				}
			}
			want := make([]string, len(tt.want))
			for i, w := range tt.want {
				want[i] = strings.TrimSpace(w)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors at %q, want %q\n%v", got, want, err)
			}
			if !strings.Contains(first.Msg, tt.msg) {
				t.Errorf("first error %q does not contain %q", first.Error(), tt.msg)
			}
			t.Log(err)
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := Parse("qgate.json", []byte("{}")); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("json: %v", err)
	}
	if _, err := Parse("qgate.toml", []byte("mode = \"ha\"")); err == nil || !strings.Contains(err.Error(), "TOML is not supported") {
		t.Errorf("toml: %v", err)
	}
	if _, err := Parse("empty.yaml", nil); err == nil || !strings.Contains(err.Error(), "mode: missing") {
		t.Errorf("empty file: %v", err)
	}
}

func TestPoolConfig(t *testing.T) {
	f, err := Parse("c.yaml", []byte("mode: cluster\nnodes: [{name: a, tcp: a:1}, {tcp: b:1}]\ncheck: {fall: 3}\nfailback_hold: 2s\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Groups) != 2 || cfg.Groups[0].Nodes[0] != (nsq.NodeConfig{Name: "a", TCPAddr: "a:1", HTTPAddr: "a:2"}) ||
		cfg.Groups[1].Nodes[0].Name != "b:1" {
		t.Errorf("groups %+v", cfg.Groups)
	}
	if cfg.Check.Fall != 3 || cfg.FailbackHold != 2*time.Second {
		t.Errorf("cfg %+v", cfg)
	}
}
