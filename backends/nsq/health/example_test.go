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
// the monitor's own goroutine; failed publishes eject the node (the data
// path's signal), for longer with each ejection.
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

	_ = m.Probe(ctx)                        // Unknown -> Up or Down at once
	fmt.Println(m.State())                  // the first state, before any callback
	m.Start(ctx)                            // checks every Interval ± Jitter
	if m.DataFailure() && m.DataFailure() { // Consecutive (2) failed publishes
		m.Eject(errors.New("publish: connection reset")) // Down for BaseEjection, whatever the checks say
	}
	fmt.Println(m.Snapshot().State, m.Snapshot().Reason)
}
