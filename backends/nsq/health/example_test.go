package health_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/nsq/health"
)

// A pool's use of a Monitor: one synchronous round of checks at start, then
// the monitor's own goroutine; a failed publish ejects the node at once.
func ExampleMonitor() {
	ctx := context.Background()
	m, err := health.New("127.0.0.1:4151", health.Config{Interval: time.Second},
		func(old, now backends.NodeState, snap health.Snapshot) {
			// Called from the monitor's goroutine; must not block for long.
			fmt.Println("node", old, "->", now, snap.LastError)
		})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Stop()

	_ = m.Probe(ctx)                                 // Unknown -> Up or Down at once
	fmt.Println(m.State())                           // the first state, before any callback
	m.Start(ctx)                                     // checks every Interval ± Jitter
	m.Eject(errors.New("publish: connection reset")) // Down now; back after Rise checks
	fmt.Println(m.Snapshot().State)
}
