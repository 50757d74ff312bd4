package bench

import (
	"context"
	"testing"
	"time"
)

// End-to-end micro benchmarks over a real in-process nsqd and an
// in-process qgate, for `go test -bench . -benchmem ./internal/bench`.
// Each Direct benchmark is the go-nsq baseline of the one above it; their
// ns/op differ by what the qgate hop costs per request. allocs/op and
// cpu-µs/msg count the whole process (client, qgate and nsqd); on a shared
// machine cpu-µs/msg is the steadier figure.
// They publish to ephemeral topics (nsqd keeps no disk queue for them), so
// nsqd's disk writes do not hide the hop's cost.

func benchEnv(b *testing.B) (*env, []byte) {
	b.Helper()
	cfg := Config{}.withDefaults()
	e, err := startEnv(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)
	return e, make([]byte, cfg.Size)
}

// benchSide runs w's sender of sd b.N times from parallel goroutines
// (GOMAXPROCS*parallelism of them), or from one when parallelism is 0.
func benchSide(b *testing.B, sd func(*env, []byte) side, w *workload, parallelism int) {
	e, body := benchEnv(b)
	s := sd(e, body)
	topic := e.topic(w, s.name(), 0, false)
	b.Cleanup(func() { e.deleteTopic(context.Background(), topic) })
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuNow()
	if parallelism == 0 {
		send := s.sender(topic, w, 0)
		for b.Loop() {
			if err := send(ctx); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			send := s.sender(topic, w, 0)
			for pb.Next() {
				if err := send(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N*w.batch)/b.Elapsed().Seconds(), "msgs/s")
	cpuReport(b, c0, b.N*w.batch)
}

func directSide(e *env, body []byte) side  { return &direct{e: e, body: body} }
func gatewaySide(e *env, body []byte) side { return &gateway{e: e, body: body} }

// BenchmarkSendUnary is a unary Send of one message through qgate.
func BenchmarkSendUnary(b *testing.B) {
	benchSide(b, gatewaySide, workloadByName("send1-c1"), 0)
}

// BenchmarkDirectPublish is go-nsq's synchronous Publish of one message.
func BenchmarkDirectPublish(b *testing.B) {
	benchSide(b, directSide, workloadByName("send1-c1"), 0)
}

// BenchmarkSendUnaryParallel is unary Sends of one message from 32
// goroutines per CPU over one connection.
func BenchmarkSendUnaryParallel(b *testing.B) {
	benchSide(b, gatewaySide, workloadByName("send1-c64"), 32)
}

// BenchmarkDirectPublishParallel is Publish from 32 goroutines per CPU
// sharing one producer.
func BenchmarkDirectPublishParallel(b *testing.B) {
	benchSide(b, directSide, workloadByName("send1-c64"), 32)
}

// BenchmarkSendBatch100 is a unary Send of 100 messages through qgate.
func BenchmarkSendBatch100(b *testing.B) {
	benchSide(b, gatewaySide, workloadByName("send100"), 0)
}

// BenchmarkDirectMultiPublish100 is go-nsq's MultiPublish of 100 messages.
func BenchmarkDirectMultiPublish100(b *testing.B) {
	benchSide(b, directSide, workloadByName("send100"), 0)
}

// BenchmarkHistogramRecord is the cost of recording one latency.
func BenchmarkHistogramRecord(b *testing.B) {
	var h histogram
	b.ReportAllocs()
	var v int64 = 12345
	for b.Loop() {
		h.record(timeDuration(v))
		v = v*31 + 7&0xffffff
	}
}

// cpuNow is this process's CPU time so far.
func cpuNow() time.Duration {
	d, _ := (cpuMeter{}).read()
	return d
}

// cpuReport reports the process's CPU time since c0 per message: unlike
// ns/op it does not move with the load of other processes on the machine.
func cpuReport(b *testing.B, c0 time.Duration, msgs int) {
	b.ReportMetric(float64(cpuNow()-c0)/float64(time.Microsecond)/float64(msgs), "cpu-µs/msg")
}
