package nsq

import (
	"sync"
	"testing"

	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// TestCloseWhileDiscoveryRemovesNode: Close and nsqlookupd discovery's
// removeNode can both stop one node (Close lists the pool's nodes, then
// discovery takes one out and stops it, then Close stops it too). Stopping
// a node twice used to close its stop channel twice: a panic on shutdown.
func TestCloseWhileDiscoveryRemovesNode(t *testing.T) {
	nodes := nsqdtest.StartNodes(t, 2)

	t.Run("interleaved", func(t *testing.T) {
		// The losing interleaving, step by step: discovery removes and
		// stops n after Close listed it; Close then stops n as well.
		p := newPool(t, ModeCluster, localNodes(nodes), nil)
		n := p.nodes["n0"]
		p.removeNode(n)
		p.stopNode(n)
		p.Close()
	})

	t.Run("concurrent", func(t *testing.T) {
		for range 5 {
			p := newPool(t, ModeCluster, localNodes(nodes), nil)
			n := p.nodes["n1"]
			start := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); <-start; p.removeNode(n) }()
			go func() { defer wg.Done(); <-start; p.Close() }()
			close(start)
			wg.Wait()
			select {
			case <-n.done:
			default:
				t.Fatal("node n1's sender still runs after Close and removeNode")
			}
		}
	})
}
