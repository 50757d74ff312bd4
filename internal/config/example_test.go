package config_test

import (
	"fmt"

	"github.com/qgate/qgate/internal/config"
)

func ExampleParse() {
	f, err := config.Parse("qgate.yaml", []byte(`
mode: failover
nodes:
  - {name: primary, tcp: 10.0.0.1:4150}
  - {name: backup, tcp: 10.0.0.2:4150}
failback_hold: 10s
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := f.PoolConfig()
	for _, g := range cfg.Groups {
		for i, n := range g.Nodes {
			fmt.Println(g.Name, i, n.Name, n.TCPAddr, n.HTTPAddr)
		}
	}
	fmt.Println("failback hold:", cfg.FailbackHold)
	// Output:
	// failover 0 primary 10.0.0.1:4150 10.0.0.1:4151
	// failover 1 backup 10.0.0.2:4150 10.0.0.2:4151
	// failback hold: 10s
}

func ExampleParse_errors() {
	_, err := config.Parse("qgate.yaml", []byte(`mode: ha
groups:
  - name: east
    members:
      - {tcp: 10.0.1.1:4150}
      - {tcp: 10.0.1.2}
check:
  interval: 1 second
  fal: 3
`))
	fmt.Println(err)
	// Output:
	// qgate.yaml:6: groups[0].members[1].tcp: missing port in address: "10.0.1.2"
	// qgate.yaml:8: check.interval: invalid duration "1 second" (want e.g. "500ms", "2s", "1m")
	// qgate.yaml:9: check.fal: unknown field (known: interval, timeout, jitter, fall, rise)
}
