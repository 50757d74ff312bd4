package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/qgate/qgate/internal/nsqd"
)

const usage = `qgate chaos: fault injection against real nsqd processes, with a ledger.

Usage:
  qgate chaos [flags]

Each scenario starts nsqd processes and a qgate (the real pool, service and
server), runs publishers at a fixed rate with unique message ids and
subscribers that ack, injects faults (SIGKILL, SIGTERM, SIGSTOP of nodes,
restarts, qgate stops), heals, drains until nothing new arrives, and checks
what was acknowledged against what was delivered:

  lost        acked, never delivered        (a broken at-least-once promise)
  unexpected  delivered, never sent         (always a bug)
  duplicated  delivered and acked twice+    (allowed, counted)
  recovered   send outcome unknown (deadline, broken connection), delivered

It also reports send errors and their window, send latency p50/p99, time to
detect a fault and to recover (from AdminService.WatchNodes), and scenario
figures, and the machine's load average. Every scenario also promises
acked ≥ 1 and delivered ≥ 1 (nothing holds vacuously) and that the ledger
balances (acked messages delivered = acked − lost). One table per
scenario; the exit status is 1 when a promise is broken, a run fails or a
scenario is skipped (it could not check its promise), 0 otherwise.

Scenarios:
%s
Flags:
`

// Main runs `qgate chaos` with args (without the command name) and returns
// the exit status. It builds or finds an nsqd binary, runs the chosen
// scenarios one after another (they are CPU sensitive) and prints one table
// each to stdout. A process started with the gateway-child environment
// variable runs a qgate for the harness instead (see WIRING.md).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if js := os.Getenv(childEnv); js != "" {
		return runChild(js, stdout, stderr)
	}
	fs := flag.NewFlagSet("qgate chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		names    = fs.String("scenario", "all", "comma-separated scenario `names` (S1,S1-durable,S2,...) or all")
		long     = fs.Bool("long", false, "run the long forms (faults last 20-30 s, S4 cycles 15 times, S17's nemesis 5 min)")
		replicas = fs.Int("replicas", 0, "replicas per send, overriding each scenario's own (0 = the scenario's)")
		rate     = fs.Int("rate", 0, "messages per second over all publishers (0 = the scenario's: 200, and 400 in the long forms of S13-S17)")
		seed     = fs.Int64("seed", 0, "seed of the random scenarios (S17); 0 = from the clock (the seed is printed with the report)")
		nsqdBin  = fs.String("nsqd", "", "nsqd `path` (default: nsqd on PATH, else built with go build github.com/nsqio/nsq/apps/nsqd)")
		runs     = fs.Int("runs", 1, "run each scenario this many times")
		verbose  = fs.Bool("v", false, "log the pool's and server's warnings and nsqd's output to stderr")
		list     = fs.Bool("list", false, "list the scenarios with their promises and exit")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage, scenarioList())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "qgate chaos: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *list {
		fmt.Fprintf(stdout, "%-13s every scenario\n", "*")
		for _, p := range baseline {
			fmt.Fprintf(stdout, "%13s   promise: %s %s (%s)\n", "", p.Metric, p.bound(), p.Why)
		}
		for _, s := range Scenarios() {
			fmt.Fprintf(stdout, "%-13s %s\n", s.Name, s.Title)
			for _, p := range s.Promises {
				fmt.Fprintf(stdout, "%13s   promise: %s %s (%s)\n", "", p.Metric, p.bound(), p.Why)
			}
		}
		return 0
	}
	var chosen []Scenario
	if *names == "all" {
		chosen = Scenarios()
	} else {
		for _, n := range strings.Split(*names, ",") {
			sc, ok := Lookup(strings.TrimSpace(n))
			if !ok {
				fmt.Fprintf(stderr, "qgate chaos: unknown scenario %q (see --list)\n", n)
				return 2
			}
			chosen = append(chosen, sc)
		}
	}
	bin, err := findNSQD(ctx, *nsqdBin)
	if err != nil {
		fmt.Fprintf(stderr, "qgate chaos: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "qgate chaos: %v\n", err)
		return 1
	}
	p := Params{NSQD: bin, Long: *long, Replicas: *replicas, Rate: *rate, Seed: *seed,
		ChildCommand: []string{self, "chaos"}}
	if *verbose {
		p.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		p.NodeOutput = stderr
	}
	status := 0
	for _, sc := range chosen {
		for range max(*runs, 1) {
			r := Run(ctx, sc, p)
			r.Print(stdout)
			if !r.OK() {
				status = 1
			}
			if ctx.Err() != nil {
				return 1
			}
		}
	}
	return status
}

func scenarioList() string {
	var b strings.Builder
	for _, s := range Scenarios() {
		fmt.Fprintf(&b, "  %-13s %s\n", s.Name, s.Title)
	}
	return b.String()
}

// findNSQD returns the nsqd binary to run.
func findNSQD(ctx context.Context, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p, err := exec.LookPath("nsqd"); err == nil {
		return p, nil
	}
	return nsqd.BuildBinary(ctx)
}
