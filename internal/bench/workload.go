package bench

import (
	"fmt"
	"time"
)

// kind is how a workload drives its side.
type kind int

const (
	// closedLoop: conc workers, each sending one batch and waiting for it.
	closedLoop kind = iota
	// windowed: one sender keeping window requests outstanding.
	windowed
	// drain: a prepared backlog read by one subscriber.
	drain
)

// workload is one line of the comparison: the same traffic sent directly
// with go-nsq (side A) and through qgate (side B).
type workload struct {
	name    string
	gateway string // side B, in words
	direct  string // side A, in words
	kind    kind
	conc    int // closedLoop: workers
	batch   int // messages per request
	window  int // windowed: requests outstanding
	inFly   int // drain: max in flight
	// lib: side B is package client (Publisher, Subscriber) instead of
	// the raw gRPC calls.
	lib  bool
	goal goal
}

// goal is a target of issue 5 for a workload.
type goal struct {
	minRatio float64       // B/A msgs/s median must be >= this; 0: none
	maxAdded time.Duration // B p50 - A p50 median must be <= this; 0: none
}

// text states the goal; "" when there is none.
func (g goal) text() string {
	switch {
	case g.minRatio > 0:
		return fmt.Sprintf("B/A >= %.1f", g.minRatio)
	case g.maxAdded > 0:
		return fmt.Sprintf("added p50 <= %v", g.maxAdded)
	}
	return ""
}

// workloads is every comparison, in the order they run by default.
var workloads = []*workload{
	{
		name: "send1-c1", kind: closedLoop, conc: 1, batch: 1,
		gateway: "unary Send of 1 message, 1 caller",
		direct:  "Publish, 1 goroutine",
		goal:    goal{maxAdded: 150 * time.Microsecond},
	},
	{
		name: "send1-c64", kind: closedLoop, conc: 64, batch: 1,
		gateway: "unary Send of 1 message, 64 callers on one connection",
		direct:  "Publish, 64 goroutines sharing one producer per node",
		goal:    goal{minRatio: 1.0},
	},
	{
		name: "send100", kind: closedLoop, conc: 1, batch: 100,
		gateway: "unary Send of 100 messages, 1 caller",
		direct:  "MultiPublish of 100, 1 goroutine",
		goal:    goal{minRatio: 0.8},
	},
	{
		name: "stream100", kind: windowed, window: 8, batch: 100,
		gateway: "SendStream, 100 messages a request, 8 requests outstanding",
		direct:  "MultiPublishAsync of 100, 8 outstanding",
		goal:    goal{minRatio: 0.8},
	},
	{
		name: "stream1", kind: windowed, window: 100, batch: 1,
		gateway: "SendStream, 1 message a request, 100 requests outstanding",
		direct:  "PublishAsync, 100 outstanding",
	},
	{
		name: "sub100", kind: drain, inFly: 100,
		gateway: "Subscribe draining a backlog, max in flight 100, batched acks, several deliveries per response (--sub-batch)",
		direct:  "Consumer draining a backlog, max in flight 100",
		goal:    goal{minRatio: 0.8},
	},
	{
		name: "sub1000", kind: drain, inFly: 1000,
		gateway: "Subscribe draining a backlog, max in flight 1000, batched acks, several deliveries per response (--sub-batch)",
		direct:  "Consumer draining a backlog, max in flight 1000",
		goal:    goal{minRatio: 0.8},
	},
	{
		name: "lib-get-c64", kind: closedLoop, conc: 64, batch: 1, lib: true,
		gateway: "client library: Publish(...).Get() of 1 message, 64 goroutines sharing one Publisher",
		direct:  "Publish, 64 goroutines sharing one producer per node",
		goal:    goal{minRatio: 1.0},
	},
	{
		name: "lib-get-c1", kind: closedLoop, conc: 1, batch: 1, lib: true,
		gateway: "client library: Publish(...).Get() of 1 message, 1 goroutine",
		direct:  "Publish, 1 goroutine",
	},
	{
		name: "lib-async", kind: windowed, window: 100, batch: 1, lib: true,
		gateway: "client library: 1 goroutine publishing without waiting, results collected later, 100 outstanding",
		direct:  "PublishAsync, 100 outstanding",
		goal:    goal{minRatio: 1.0},
	},
	{
		name: "lib-sub1000", kind: drain, inFly: 1000, lib: true,
		gateway: "client library: Receive draining a backlog, max outstanding 1000, handler acks at once",
		direct:  "Consumer draining a backlog, max in flight 1000",
		goal:    goal{minRatio: 0.9},
	},
}

// MemoryWorkload names the bounded-memory mode in Config.Workloads.
const MemoryWorkload = "memory"

// WorkloadNames returns the names of every workload, the comparisons in
// their default order and then the memory mode.
func WorkloadNames() []string {
	names := make([]string, 0, len(workloads)+1)
	for _, w := range workloads {
		names = append(names, w.name)
	}
	return append(names, MemoryWorkload)
}

func workloadByName(name string) *workload {
	for _, w := range workloads {
		if w.name == name {
			return w
		}
	}
	return nil
}
