package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Run runs the workloads of cfg and returns the report. It writes a
// progress line for every side of every round to progress (nil: none).
// A workload whose sides fail is reported with its errors; Run fails only
// when the setup fails or ctx ends.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.CPUProfileDir != "" {
		if err := os.MkdirAll(cfg.CPUProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: cpu profile dir: %w", err)
		}
	}
	e, err := startEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	rep := e.newReport()
	pr := newProgress(progress)
	defer pr.finish()
	body := make([]byte, cfg.Size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	sides := []side{&direct{e: e, body: body}, &gateway{e: e, body: body}}
	lib := newLibrary(e, body)
	libSides := []side{sides[0], lib}
	steps := 0
	for _, name := range cfg.Workloads {
		if name != MemoryWorkload {
			steps += 2 * cfg.Rounds
		} else {
			steps++
		}
	}
	step := 0
	for _, name := range cfg.Workloads {
		if name == MemoryWorkload {
			step++
			pr.show(fmt.Sprintf("[%d/%d] memory: %v at %d msg/s with stalled subscribers", step, steps, cfg.MemDuration, cfg.MemRate))
			m, err := e.runMemory(ctx, body)
			if err != nil {
				return nil, err
			}
			rep.Memory = m
			pr.done(fmt.Sprintf("max RSS %.1f MiB", m.MaxRSSMiB))
			continue
		}
		w := workloadByName(name)
		wr := WorkloadResult{Name: w.name, Direct: w.direct, Gateway: w.gateway}
		for round := 1; round <= cfg.Rounds; round++ {
			rr := RoundResult{Round: round}
			pair := sides
			if w.lib {
				pair = libSides
			}
			for _, sd := range pair {
				step++
				pr.show(fmt.Sprintf("[%d/%d] %s round %d/%d %s", step, steps, w.name, round, cfg.Rounds, sd.name()))
				res, err := e.runSide(ctx, w, sd, round)
				lib.stop()
				if err != nil {
					return nil, err
				}
				if sd.name() == "A" {
					rr.A = res
				} else {
					rr.B = res
				}
				pr.done(fmt.Sprintf("%s msg/s", rate(res.MsgsPerSec)))
			}
			rr.Ratio = ratio(rr.B.MsgsPerSec, rr.A.MsgsPerSec)
			wr.Rounds = append(wr.Rounds, rr)
		}
		wr.summarize(w.goal)
		rep.Workloads = append(rep.Workloads, wr)
	}
	return rep, nil
}

// runSide runs one side of one round of w on a fresh topic, deleted after.
func (e *env) runSide(ctx context.Context, w *workload, sd side, round int) (SideResult, error) {
	durable := !e.cfg.Ephemeral || w.kind == drain
	topic := e.topic(w, strings.ToLower(sd.name()), round, durable)
	defer e.deleteTopic(context.WithoutCancel(ctx), topic)
	var s sample
	var err error
	switch w.kind {
	case closedLoop:
		s, err = e.runClosedLoop(ctx, w, sd, topic, round)
	case windowed:
		s, err = e.runWindowed(ctx, w, sd, topic, round)
	case drain:
		s, err = e.runDrain(ctx, w, sd, topic, round)
	}
	if err != nil && ctx.Err() != nil {
		return SideResult{}, ctx.Err()
	}
	if err != nil && s.err == nil {
		s.err, s.errs = err, s.errs+1
	}
	if s.msgs == 0 && s.err == nil {
		s.err = errNoMessages
	}
	return sideResult(s), nil
}

func (e *env) newReport() *Report {
	r := &Report{
		Date: time.Now().UTC().Truncate(time.Second),
		Machine: Machine{
			CPUs: runtime.NumCPU(), CPUModel: cpuModel(),
			OS: runtime.GOOS, Arch: runtime.GOARCH, Go: runtime.Version(),
		},
		Settings: Settings{
			Duration:       e.cfg.Duration.String(),
			Warmup:         e.cfg.Warmup.String(),
			Rounds:         e.cfg.Rounds,
			Size:           e.cfg.Size,
			Backlog:        e.cfg.Backlog,
			Nodes:          e.nodes,
			InProcessNodes: len(e.local) > 0,
			Qgate:          "in-process",
			Ephemeral:      e.cfg.Ephemeral,
		},
	}
	if !e.inProcess() {
		r.Settings.Qgate = e.addr
	}
	var parts []string
	parts = append(parts, "this process (the load generator")
	if e.inProcess() {
		parts = append(parts, "the in-process qgate")
	}
	if len(e.local) > 0 {
		parts = append(parts, "the in-process nsqd nodes")
	}
	r.CPUScope = strings.Join(parts, ", ") + ")"
	if e.cfg.QgatePID != 0 {
		r.CPUScope += fmt.Sprintf(" plus qgate pid %d", e.cfg.QgatePID)
	}
	if len(e.cfg.CPUPIDs) > 0 {
		r.CPUScope += fmt.Sprintf(" plus pids %v", e.cfg.CPUPIDs)
	}
	r.CPUScope += "; both sides measured the same way, so B-A is qgate's cost"
	return r
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// progress writes one line per step: on a terminal the line is rewritten
// in place, elsewhere each finished step gets its own line.
type progress struct {
	w    io.Writer
	tty  bool
	line string
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// show starts a step.
func (p *progress) show(line string) {
	p.line = line
	if p.w != nil && p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s ...", line)
	}
}

// done ends the current step with its result.
func (p *progress) done(result string) {
	if p.w == nil {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s: %s", p.line, result)
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", p.line, result)
}

func (p *progress) finish() {
	if p.w != nil && p.tty {
		fmt.Fprintln(p.w)
	}
}
