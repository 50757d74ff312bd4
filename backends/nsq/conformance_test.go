package nsq

import (
	"log/slog"
	"testing"

	gonsq "github.com/nsqio/go-nsq"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/backends/backendtest"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// harness runs the conformance suite against a pool of three in-process
// nsqd nodes in cluster mode.
type harness struct {
	pool  *Pool
	nodes []NodeConfig
}

func (h *harness) Backend() backends.Backend { return h.pool }

func (h *harness) Features() backendtest.Features {
	return backendtest.Features{RawMessages: true, Delay: true, DeadLetter: true}
}

// RawPublish writes body with a plain go-nsq producer to the first node.
func (h *harness) RawPublish(t testing.TB, topic string, body []byte) {
	t.Helper()
	p, err := gonsq.NewProducer(h.nodes[0].TCPAddr, gonsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	p.SetLoggerLevel(gonsq.LogLevelError)
	if err := p.Publish(topic, body); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	backendtest.RunConformanceTests(t, func(t *testing.T) backendtest.Harness {
		nodes := localNodes(nsqdtest.StartNodes(t, 3))
		p := newPool(t, ModeCluster, nodes, func(c *Config) {
			c.Check.Interval = 0 // defaults: the suite is about delivery, not health
			c.Check.Timeout = 0
			c.Check.Jitter = 0
			c.Logger = nsqdtest.Logger(t, slog.LevelWarn)
		})
		return &harness{pool: p, nodes: nodes}
	})
}
