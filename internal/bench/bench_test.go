package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

// -bench.args runs the whole `qgate bench` through Main in TestBenchReport,
// e.g. go test ./internal/bench -run TestBenchReport -v -timeout 30m
// -bench.args='--rounds 3 --duration 3s'.
var benchArgs = flag.String("bench.args", "", "run TestBenchReport with these qgate bench flags")

// TestBenchReport runs qgate bench for real when -bench.args is given.
func TestBenchReport(t *testing.T) {
	if *benchArgs == "" {
		t.Skip("set -bench.args to run the full benchmark")
	}
	args := strings.Fields(*benchArgs)
	var out bytes.Buffer
	code := Main(context.Background(), args, &out, os.Stderr)
	t.Logf("\n%s", out.String())
	if code != 0 {
		t.Errorf("exit status %d", code)
	}
}

// drainTimed is how many messages a drain of TestRunTiny's backlog of 2000
// times, worked out by hand from the rule runDrain documents: the clock
// runs from the first message to the last but a tail of two max-in-flight
// windows, at most a tenth of the backlog, and counts those after the
// first. sub100: tail min(200, 2×100) = 200; sub1000 and lib-sub1000:
// min(200, 2×1000) = 200; so 2000 − 200 − 1 each.
var drainTimed = map[string]int64{"sub100": 1799, "sub1000": 1799, "lib-sub1000": 1799}

// TestRunTiny runs every workload for one short round against real
// in-process nsqd and an in-process qgate and checks the report.
func TestRunTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Config{
		// Long enough that a request completes inside the interval on a
		// loaded 2-core machine under -race (the windowed workloads keep
		// 100 requests outstanding).
		Duration:    500 * time.Millisecond,
		Warmup:      100 * time.Millisecond,
		Rounds:      1,
		Backlog:     2000,
		MemDuration: 500 * time.Millisecond,
		MemRate:     4000,
		MemInFlight: 50,
	}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", progress.String())
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())

	if got, want := len(rep.Workloads), len(workloads); got != want {
		t.Fatalf("got %d workloads, want %d", got, want)
	}
	for _, wr := range rep.Workloads {
		w := workloadByName(wr.Name)
		if len(wr.Rounds) != 1 {
			t.Errorf("%s: got %d rounds, want 1", wr.Name, len(wr.Rounds))
			continue
		}
		for _, s := range []struct {
			name string
			r    SideResult
		}{{"A", wr.Rounds[0].A}, {"B", wr.Rounds[0].B}} {
			r := s.r
			if r.Errors != 0 || r.Error != "" {
				t.Errorf("%s %s: %d errors: %s", wr.Name, s.name, r.Errors, r.Error)
			}
			if r.Msgs <= 0 || r.MsgsPerSec <= 0 || r.Seconds <= 0 || r.CPUSecPerMillion <= 0 {
				t.Errorf("%s %s: want positive msgs, rate, seconds and cpu: %+v", wr.Name, s.name, r)
			}
			if w.kind == drain {
				if want, ok := drainTimed[wr.Name]; !ok {
					t.Errorf("%s: drain workload without an expected count in drainTimed", wr.Name)
				} else if r.Msgs != want {
					t.Errorf("%s %s: timed %d messages, want %d", wr.Name, s.name, r.Msgs, want)
				}
			} else if r.P50us <= 0 || r.P99us < r.P50us {
				t.Errorf("%s %s: want 0 < p50 <= p99: %+v", wr.Name, s.name, r)
			}
		}
		if wr.Ratio.Median <= 0 || wr.Ratio.Min > wr.Ratio.Median || wr.Ratio.Max < wr.Ratio.Median {
			t.Errorf("%s: bad ratio spread %+v", wr.Name, wr.Ratio)
		}
		if (w.goal != goal{}) && wr.Goal == nil {
			t.Errorf("%s: goal missing", wr.Name)
		}
	}
	m := rep.Memory
	if m == nil {
		t.Fatal("no memory result")
	}
	if m.Error != "" || m.Sent <= 0 || m.MaxRSSMiB <= 0 || m.Samples == 0 || m.MaxRSSMiB < m.StartRSSMiB {
		t.Errorf("memory: bad result %+v", m)
	}
	// 2000 messages sent: the subscriber that never acks gets at most its
	// max in flight (Run also fails the mode when it gets more).
	if m.Delivered < 1 || m.Delivered > 50 {
		t.Errorf("memory: %d deliveries to a subscriber that never acks, want 1 to its max in flight, 50", m.Delivered)
	}

	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not read back: %v", err)
	}
	if len(back.Workloads) != len(rep.Workloads) || back.Memory == nil {
		t.Errorf("JSON lost data")
	}
}

// TestRunAgainstAddr runs the bench against a qgate and nodes given by
// address (--addr, --nsqd, --qgate-pid), as against a running `qgate serve`.
func TestRunAgainstAddr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	target, err := startEnv(ctx, Config{}.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	defer target.close()
	rep, err := Run(ctx, Config{
		Workloads: []string{"send1-c64", "sub100", MemoryWorkload},
		// Long enough that a loaded machine gets sends through: at 200 ms a
		// run at load ~30 measured no message at all (send1-c64).
		Duration:    time.Second,
		Rounds:      1,
		Backlog:     1000,
		Addr:        target.addr,
		NSQD:        target.nodes,
		QgatePID:    os.Getpid(), // the target runs in this process
		MemDuration: 300 * time.Millisecond,
		MemRate:     2000,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Settings.Qgate != target.addr || rep.Settings.InProcessNodes {
		t.Errorf("settings: qgate %q, in-process nodes %v; want %q, false", rep.Settings.Qgate, rep.Settings.InProcessNodes, target.addr)
	}
	if !strings.Contains(rep.CPUScope, "qgate pid") {
		t.Errorf("cpu scope %q does not name the qgate pid", rep.CPUScope)
	}
	for _, wr := range rep.Workloads {
		for _, r := range []SideResult{wr.Rounds[0].A, wr.Rounds[0].B} {
			if r.Error != "" || r.MsgsPerSec <= 0 {
				t.Errorf("%s: %+v", wr.Name, r)
			}
		}
	}
	if m := rep.Memory; m == nil || m.Error != "" || m.MaxRSSMiB <= 0 || !strings.HasPrefix(m.Scope, "qgate pid") {
		t.Errorf("memory: %+v", m)
	}
	// Every topic the run made is deleted again.
	for _, n := range target.local {
		for _, topic := range n.NSQD().GetStats("", "", false).Topics {
			if strings.HasPrefix(topic.TopicName, "qb-") {
				t.Errorf("%s: topic %s left behind", n.Name, topic.TopicName)
			}
		}
	}
}
