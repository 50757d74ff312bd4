package nsq

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
	"github.com/qgate/qgate/internal/nsqd/nsqdtest"
)

// Micro benchmarks of the send path: go test -run XXX -bench . -benchmem ./backends/nsq

// benchPool is a Pool of up nodes laid out as groups (sizes per group),
// without I/O: for routing only.
func benchPool(sizes ...int) *Pool {
	p := &Pool{cfg: Config{FailbackHold: time.Second}}
	long := time.Now().Add(-time.Hour)
	for gi, size := range sizes {
		g := &group{name: fmt.Sprint("g", gi)}
		for i := range size {
			g.members = append(g.members, &node{group: g, priority: i, health: backends.NodeUp, upSince: long})
		}
		p.groups = append(p.groups, g)
	}
	return p
}

// BenchmarkPick is the routing decision of one Send attempt.
func BenchmarkPick(b *testing.B) {
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"cluster3", []int{1, 1, 1}},
		{"failover3", []int{3}},
		{"ha2x2", []int{2, 2}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := benchPool(tc.sizes...)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if n, _ := p.pick(i, nil, nil); n == nil {
					b.Fatal("no node")
				}
			}
		})
	}
}

// BenchmarkEncode is Send's envelope loop for 1 and 100 messages of 100
// bytes with one attribute.
func BenchmarkEncode(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			msgs := benchMsgs(n)
			b.ReportAllocs()
			for b.Loop() {
				encode(msgs, 1, 0, false, time.Time{})
			}
		})
	}
}

func benchMsgs(n int) []*backends.Message {
	msgs := make([]*backends.Message, n)
	for i := range msgs {
		msgs[i] = &backends.Message{ID: fmt.Sprintf("0195f0c4a3b27c1e%04d", i), Body: make([]byte, 100),
			Attributes: map[string]string{"k": "v"}, PublishTime: time.Now()}
	}
	return msgs
}

// benchSend runs Send of one 100-byte message b.N times over one
// in-process node, from one goroutine or 64 (coalesced), and reports
// msgs/s and messages per nsqd command (PUB or MPUB).
func benchSend(b *testing.B, parallel bool) {
	nodes := nsqdtest.StartNodes(b, 1)
	p := newPool(b, ModeCluster, localNodes(nodes), func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	n := p.nodes["n0"]
	msgs := benchMsgs(1)
	send := func() {
		if err := p.Send(context.Background(), "bench#ephemeral", msgs, backends.SendOptions{}); err != nil {
			b.Error(err)
		}
	}
	send()
	cmds := n.mpubs.Load()
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(32) // 64 goroutines on 2 CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send()
			}
		})
	} else {
		for range b.N {
			send()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(n.mpubs.Load()-cmds), "msgs/cmd")
}

func BenchmarkSend(b *testing.B)         { benchSend(b, false) }
func BenchmarkSendParallel(b *testing.B) { benchSend(b, true) }
