package nsq

import (
	"strings"
	"testing"
)

func TestGroupsForMode(t *testing.T) {
	nodes := []NodeConfig{{TCPAddr: "a:1", HTTPAddr: "a:2"}, {Name: "b", TCPAddr: "b:1", HTTPAddr: "b:2"}}
	g, err := GroupsForMode(ModeCluster, nodes)
	if err != nil || len(g) != 2 || g[0].Name != "a:1" || g[1].Name != "b" || len(g[1].Nodes) != 1 {
		t.Errorf("cluster: %+v, %v", g, err)
	}
	g, err = GroupsForMode(ModeFailover, nodes)
	if err != nil || len(g) != 1 || len(g[0].Nodes) != 2 || g[0].Nodes[1].Name != "b" {
		t.Errorf("failover: %+v, %v", g, err)
	}
	for _, mode := range []Mode{ModeHA, "bogus"} {
		if _, err := GroupsForMode(mode, nodes); err == nil {
			t.Errorf("%s: no error", mode)
		}
	}
	if _, err := GroupsForMode(ModeCluster, nil); err == nil {
		t.Error("no nodes: no error")
	}
}

func TestConfigValidate(t *testing.T) {
	n := func(name, tcp, http string) NodeConfig { return NodeConfig{Name: name, TCPAddr: tcp, HTTPAddr: http} }
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"valid", Config{Groups: []GroupConfig{{Nodes: []NodeConfig{n("", "h:1", "h:2")}}}}, ""},
		{"lookupd only", Config{LookupdHTTPAddrs: []string{"h:4161"}}, ""},
		{"no nodes", Config{}, "at least one node"},
		{"empty group", Config{Groups: []GroupConfig{{Name: "g"}}}, "groups[0] (g): no nodes"},
		{"bad tcp", Config{Groups: []GroupConfig{{Nodes: []NodeConfig{n("x", "nope", "h:2")}}}}, "groups[0].nodes[0]: tcp address"},
		{"bad http", Config{Groups: []GroupConfig{{Nodes: []NodeConfig{n("x", "h:1", "")}}}}, "http address"},
		{"duplicate node", Config{Groups: []GroupConfig{{Nodes: []NodeConfig{n("x", "h:1", "h:2"), n("x", "i:1", "i:2")}}}}, "duplicate node name"},
		{"duplicate group", Config{Groups: []GroupConfig{{Name: "g", Nodes: []NodeConfig{n("", "h:1", "h:2")}}, {Name: "g", Nodes: []NodeConfig{n("", "i:1", "i:2")}}}}, "duplicate group name"},
		{"negative hold", Config{Groups: []GroupConfig{{Nodes: []NodeConfig{n("", "h:1", "h:2")}}}, FailbackHold: -1}, "failback hold"},
		{"tiny write timeout", Config{Groups: []GroupConfig{{Nodes: []NodeConfig{n("", "h:1", "h:2")}}}, WriteTimeout: 1}, "write timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.withDefaults().validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
