package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

const usage = `Usage: qgate bench [flags]

Measures what the qgate hop costs: every workload runs against the same
nsqd nodes twice per round, interleaved A/B/A/B,
  A = direct go-nsq (Producer/Consumer straight to the nodes),
  B = the same traffic through qgate's gRPC API,
and reports per side msgs/s, p50/p99 request latency and CPU seconds per
million messages, and the B/A throughput ratio (median, min, max over
rounds) against the goals of issue 5.

By default it starts everything in this process: nsqd nodes (--nodes) and
a qgate on a free loopback port; CPU time is then that of the whole process
(load generator, qgate and nodes) for both sides, so B-A is qgate's cost.
With --nsqd it uses running nodes (count their CPU with --cpu-pids); with
--addr (and --nsqd) a running qgate that uses those nodes, whose CPU and RSS
are counted with --qgate-pid.

Workloads (--workloads, comma-separated, in this order by default), B vs A:
  send1-c1   unary Send of 1 message, 1 caller
             vs Publish, 1 goroutine
  send1-c64  unary Send of 1 message, 64 callers on one connection
             vs Publish, 64 goroutines sharing one producer per node
  send100    unary Send of 100 messages, 1 caller
             vs MultiPublish of 100, 1 goroutine
  stream100  SendStream, 100 messages a request, 8 requests outstanding
             vs MultiPublishAsync of 100, 8 outstanding
  stream1    SendStream, 1 message a request, 100 requests outstanding
             vs PublishAsync, 100 outstanding
  sub100     Subscribe draining a backlog (--backlog), max in flight 100
             vs Consumer draining a backlog, max in flight 100
  sub1000    the same at max in flight 1000
  lib-get-c64  client library: Publish(...).Get() of 1 message, 64 goroutines
             vs Publish, 64 goroutines sharing one producer per node
  lib-get-c1   the same from 1 goroutine (vs Publish, 1 goroutine)
  lib-async  client library: 1 goroutine publishing without waiting, results
             collected later, 100 outstanding vs PublishAsync, 100 outstanding
  lib-sub1000  client library: Receive draining a backlog, max outstanding
             1000, handler acking at once vs Consumer, max in flight 1000
  memory     qgate's RSS under --mem-rate msg/s with two stalled subscribers
             (one never acks, one never reads); goal: max RSS <= 100 MiB

Send workloads write to normal topics, so beyond nsqd's memory queue
(10000 messages) nsqd writes them to disk, as it would for an application;
--ephemeral uses ephemeral topics instead (nsqd drops the overflow): nsqd's
memory-only best case, where the hop's cost weighs most. Drains use normal
topics with the channel created before the backlog is written.

Progress goes to stderr, the report to stdout (a table, or JSON with --json).
Exit status: 0 when every side of every workload ran without errors, 1 on
errors, 2 on bad flags. Missed goals do not change the exit status.

Flags:
`

// Main runs `qgate bench` with args (without the program and subcommand
// names), writing the report to stdout and progress and errors to stderr.
// It returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("qgate bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var cfg Config
	var workloadList, nsqdList string
	var asJSON, verbose bool
	fs.StringVar(&workloadList, "workloads", strings.Join(WorkloadNames(), ","), "workloads to run, comma-separated")
	fs.DurationVar(&cfg.Duration, "duration", DefaultDuration, "measured time per side and round of a send workload")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "unmeasured warm-up before each measured duration (default duration/10, at most 500ms)")
	fs.IntVar(&cfg.Rounds, "rounds", DefaultRounds, "A/B rounds per workload")
	fs.IntVar(&cfg.Size, "size", DefaultSize, "message body size in bytes")
	fs.IntVar(&cfg.Backlog, "backlog", DefaultBacklog, "messages a drain workload prepares and reads per side and round")
	fs.IntVar(&cfg.Nodes, "nodes", 1, "in-process nsqd nodes to start (without --nsqd)")
	fs.StringVar(&nsqdList, "nsqd", "", "running nsqd nodes, comma-separated `tcp[/http]` addresses (http defaults to the tcp port + 1)")
	fs.StringVar(&cfg.Addr, "addr", "", "gRPC `address` of a running qgate to measure (needs --nsqd: its nodes)")
	fs.IntVar(&cfg.QgatePID, "qgate-pid", 0, "with --addr: `pid` of that qgate, for its CPU time and RSS")
	fs.Func("cpu-pids", "more `pids` (comma-separated, e.g. the --nsqd processes) whose CPU time is counted for both sides", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || pid <= 0 {
				return fmt.Errorf("bad pid %q", f)
			}
			cfg.CPUPIDs = append(cfg.CPUPIDs, pid)
		}
		return nil
	})
	fs.BoolVar(&cfg.Ephemeral, "ephemeral", false, "send workloads write to ephemeral topics (no disk) instead of normal ones")
	fs.DurationVar(&cfg.MemDuration, "mem-duration", DefaultMemDuration, "how long the memory workload runs")
	fs.IntVar(&cfg.MemRate, "mem-rate", DefaultMemRate, "the memory workload's send rate, msgs/s")
	fs.IntVar(&cfg.MemInFlight, "mem-in-flight", DefaultMemInFlight, "the memory workload's stalled subscribers' max in flight")
	fs.IntVar(&cfg.SubBatch, "sub-batch", 0, "qgate's drain subscriptions take up to `n` deliveries per response (open.max_batch); 0: the max in flight, 1: one per response")
	fs.DurationVar(&cfg.TTL, "ttl", 0, "qgate's side sends every message with this ttl (the cost of expiry); 0: none")
	fs.BoolVar(&cfg.ClientIDs, "client-ids", false, "qgate's side gives every message a unique client-chosen id (the cost of idempotent sends)")
	fs.StringVar(&cfg.Filter, "filter", "", "qgate's drain subscriptions open with this CEL filter, which should accept every message (the cost of filters), e.g. '!has(attributes.skip)'")
	fs.StringVar(&cfg.CPUProfileDir, "cpuprofile", "", "write CPU profiles of round 1 of each side to `dir`/<workload>-<A|B>.pprof")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&verbose, "v", false, "log qgate's and the nodes' warnings to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "qgate bench: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	for _, w := range strings.Split(workloadList, ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.Workloads = append(cfg.Workloads, w)
		}
	}
	if nsqdList != "" {
		nodes, err := parseNodes(nsqdList)
		if err != nil {
			fmt.Fprintf(stderr, "qgate bench: %v\n", err)
			return 2
		}
		cfg.NSQD = nodes
	}
	if verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if err := cfg.withDefaults().validate(); err != nil {
		fmt.Fprintf(stderr, "qgate bench: %v\n", err)
		return 2
	}
	rep, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "qgate bench: %v\n", err)
		return 1
	}
	rep.Command = strings.TrimSpace("qgate bench " + strings.Join(args, " "))
	if asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "qgate bench: %v\n", err)
		return 1
	}
	if rep.failed() {
		return 1
	}
	return 0
}

// failed tells whether any side of any workload, or the memory mode,
// reported an error.
func (r *Report) failed() bool {
	for _, w := range r.Workloads {
		for _, rr := range w.Rounds {
			if rr.A.Errors > 0 || rr.B.Errors > 0 || rr.A.Error != "" || rr.B.Error != "" {
				return true
			}
		}
	}
	return r.Memory != nil && r.Memory.Error != ""
}
