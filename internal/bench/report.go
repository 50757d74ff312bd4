package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the result of a run. It marshals to the --json output.
type Report struct {
	// Date is when the run started (UTC).
	Date time.Time `json:"date"`
	// Command is the command line, when run through Main.
	Command  string   `json:"command,omitempty"`
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	// CPUScope says whose CPU time the cpu_s_per_million figures count.
	CPUScope  string           `json:"cpu_scope"`
	Workloads []WorkloadResult `json:"workloads"`
	// Memory is the memory mode's result, if it ran.
	Memory *MemoryResult `json:"memory,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model,omitempty"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	Go       string `json:"go"`
}

// Settings are the effective settings of the run.
type Settings struct {
	Duration string     `json:"duration"`
	Warmup   string     `json:"warmup"`
	Rounds   int        `json:"rounds"`
	Size     int        `json:"size"`
	Backlog  int        `json:"backlog"`
	Nodes    []NodeAddr `json:"nodes"`
	// InProcessNodes is true when the nodes run inside the bench process.
	InProcessNodes bool `json:"in_process_nodes"`
	// Qgate is "in-process" or the address of the qgate measured.
	Qgate string `json:"qgate"`
	// Ephemeral is Config.Ephemeral: send workloads wrote to ephemeral
	// topics.
	Ephemeral bool `json:"ephemeral"`
}

// WorkloadResult is one workload's rounds and their summary.
type WorkloadResult struct {
	Name    string        `json:"name"`
	Direct  string        `json:"direct"`
	Gateway string        `json:"gateway"`
	Rounds  []RoundResult `json:"rounds"`
	// CleanRounds counts the rounds in which neither side had an error;
	// the summary fields below are computed from those only.
	CleanRounds int `json:"clean_rounds"`
	// A and B are the medians over the clean rounds of each figure.
	A SideSummary `json:"a"`
	B SideSummary `json:"b"`
	// Ratio is B/A of msgs/s over the rounds.
	Ratio Spread `json:"ratio"`
	// AddedP50us is B's p50 minus A's p50 over the rounds, in µs; zero
	// for workloads without latency.
	AddedP50us Spread `json:"added_p50_us"`
	// Goal is issue 5's target for this workload, if any.
	Goal *GoalResult `json:"goal,omitempty"`
}

// RoundResult is one A/B round.
type RoundResult struct {
	Round int        `json:"round"`
	A     SideResult `json:"a"`
	B     SideResult `json:"b"`
	Ratio float64    `json:"ratio"`
}

// SideResult is what one side measured in one round.
type SideResult struct {
	Msgs       int64   `json:"msgs"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// P50us and P99us are request latencies (a whole batch for batched
	// workloads) in µs; 0 for drains.
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
	// CPUSecPerMillion is CPU seconds (see Report.CPUScope) per million
	// messages.
	CPUSecPerMillion float64 `json:"cpu_s_per_million"`
	Errors           int64   `json:"errors,omitempty"`
	Error            string  `json:"error,omitempty"`
}

// SideSummary holds the medians over rounds of one side.
type SideSummary struct {
	MsgsPerSec       float64 `json:"msgs_per_sec"`
	P50us            float64 `json:"p50_us"`
	P99us            float64 `json:"p99_us"`
	CPUSecPerMillion float64 `json:"cpu_s_per_million"`
}

// Spread is the median, min and max of a figure over rounds.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// GoalResult is a goal and whether the median met it.
type GoalResult struct {
	Goal  string  `json:"goal"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

// sideResult turns a sample into a SideResult.
func sideResult(s sample) SideResult {
	r := SideResult{Msgs: s.msgs, Seconds: s.wall.Seconds(), Errors: s.errs}
	if s.wall > 0 {
		r.MsgsPerSec = float64(s.msgs) / s.wall.Seconds()
	}
	if s.hist != nil {
		r.P50us = micros(s.hist.quantile(0.50))
		r.P99us = micros(s.hist.quantile(0.99))
	}
	if s.msgs > 0 {
		r.CPUSecPerMillion = s.cpu.Seconds() / float64(s.msgs) * 1e6
	}
	if s.err != nil {
		r.Error = s.err.Error()
	}
	return r
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// clean tells whether neither side of r had an error.
func (r RoundResult) clean() bool {
	return r.A.Errors == 0 && r.A.Error == "" && r.B.Errors == 0 && r.B.Error == ""
}

// summarize fills the summary fields of wr from its clean rounds: a round
// in which a side failed measures the failure, not the hop.
func (wr *WorkloadResult) summarize(g goal) {
	var rounds []RoundResult
	for _, r := range wr.Rounds {
		if r.clean() {
			rounds = append(rounds, r)
		}
	}
	wr.CleanRounds = len(rounds)
	pick := func(f func(RoundResult) float64) Spread {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		return spread(v)
	}
	wr.A = SideSummary{
		MsgsPerSec:       pick(func(r RoundResult) float64 { return r.A.MsgsPerSec }).Median,
		P50us:            pick(func(r RoundResult) float64 { return r.A.P50us }).Median,
		P99us:            pick(func(r RoundResult) float64 { return r.A.P99us }).Median,
		CPUSecPerMillion: pick(func(r RoundResult) float64 { return r.A.CPUSecPerMillion }).Median,
	}
	wr.B = SideSummary{
		MsgsPerSec:       pick(func(r RoundResult) float64 { return r.B.MsgsPerSec }).Median,
		P50us:            pick(func(r RoundResult) float64 { return r.B.P50us }).Median,
		P99us:            pick(func(r RoundResult) float64 { return r.B.P99us }).Median,
		CPUSecPerMillion: pick(func(r RoundResult) float64 { return r.B.CPUSecPerMillion }).Median,
	}
	wr.Ratio = pick(func(r RoundResult) float64 { return r.Ratio })
	if wr.A.P50us > 0 {
		wr.AddedP50us = pick(func(r RoundResult) float64 { return r.B.P50us - r.A.P50us })
	}
	switch {
	case g.minRatio > 0:
		wr.Goal = &GoalResult{Goal: g.text(), Value: wr.Ratio.Median, Met: wr.Ratio.Median >= g.minRatio}
	case g.maxAdded > 0:
		v := wr.AddedP50us.Median
		wr.Goal = &GoalResult{Goal: g.text(), Value: v, Met: wr.A.P50us > 0 && v <= micros(g.maxAdded)}
	}
	if wr.Goal != nil && len(rounds) == 0 {
		wr.Goal.Met = false
	}
}

// spread returns the median, min and max of v; the median of an even
// count is the mean of the middle two.
func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// ratio returns b/a, or 0 when a is 0.
func ratio(b, a float64) float64 {
	if a == 0 {
		return 0
	}
	return b / a
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as a table for people.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "qgate bench %s: %d CPUs (%s), %s/%s, %s\n", r.Date.Format(time.RFC3339),
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.OS, r.Machine.Arch, r.Machine.Go)
	if r.Command != "" {
		fmt.Fprintf(&b, "command: %s\n", r.Command)
	}
	s := r.Settings
	fmt.Fprintf(&b, "%d rounds of %s (+%s warm-up) per side, %d-byte messages, backlog %d, %d node(s)",
		s.Rounds, s.Duration, s.Warmup, s.Size, s.Backlog, len(s.Nodes))
	if s.InProcessNodes {
		b.WriteString(" in-process")
	}
	if s.Ephemeral {
		b.WriteString(", send workloads on ephemeral topics")
	}
	fmt.Fprintf(&b, ", qgate %s\nA = direct go-nsq, B = through qgate; figures are medians over rounds; ratio is B/A msgs/s median [min, max]\ncpu: %s\n\n", s.Qgate, r.CPUScope)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tside\tmsgs/s\tp50\tp99\tcpu s/M msgs\tB/A\tgoal\t")
	for _, wr := range r.Workloads {
		fmt.Fprintf(tw, "%s\tA\t%s\t%s\t%s\t%.2f\t\t\t\n", wr.Name, rate(wr.A.MsgsPerSec),
			lat(wr.A.P50us), lat(wr.A.P99us), wr.A.CPUSecPerMillion)
		fmt.Fprintf(tw, "\tB\t%s\t%s\t%s\t%.2f\t%.2f [%.2f, %.2f]\t%s\t\n", rate(wr.B.MsgsPerSec),
			lat(wr.B.P50us), lat(wr.B.P99us), wr.B.CPUSecPerMillion,
			wr.Ratio.Median, wr.Ratio.Min, wr.Ratio.Max, goalCell(wr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, wr := range r.Workloads {
		for _, rr := range wr.Rounds {
			for _, sr := range []struct {
				side string
				r    SideResult
			}{{"A", rr.A}, {"B", rr.B}} {
				if sr.r.Errors > 0 || sr.r.Error != "" {
					fmt.Fprintf(&b, "%s round %d %s: %d errors, first: %s\n", wr.Name, rr.Round, sr.side, sr.r.Errors, sr.r.Error)
				}
			}
		}
	}
	b.WriteString("\n")
	for _, wr := range r.Workloads {
		fmt.Fprintf(&b, "%-10s A: %s\n%-10s B: %s\n", wr.Name, wr.Direct, "", wr.Gateway)
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(&b, "\nmemory: %s\n", m.Setup)
		fmt.Fprintf(&b, "  sent %d msgs in %.1fs (%s msg/s, target %d); RSS start %.1f MiB, max %.1f MiB, end %.1f MiB (%s)",
			m.Sent, m.Seconds, rate(m.MsgsPerSec), m.TargetRate, m.StartRSSMiB, m.MaxRSSMiB, m.EndRSSMiB, m.Scope)
		if m.MaxHeapMiB > 0 {
			fmt.Fprintf(&b, "; Go heap max %.1f MiB", m.MaxHeapMiB)
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "  the subscriber that never acks got %d deliveries (max in flight %d)\n", m.Delivered, m.MaxInFlight)
		fmt.Fprintf(&b, "  goal: max RSS <= %d MiB: %s\n", memGoalMiB, metText(m.Met))
		if m.Error != "" {
			fmt.Fprintf(&b, "  error: %s\n", m.Error)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func goalCell(wr WorkloadResult) string {
	var note string
	if wr.CleanRounds < len(wr.Rounds) {
		note = fmt.Sprintf(" (%d of %d rounds without errors)", wr.CleanRounds, len(wr.Rounds))
	}
	g := wr.Goal
	switch {
	case g == nil:
		return "-" + note
	case strings.HasPrefix(g.Goal, "added"):
		return fmt.Sprintf("%s: %.0fµs %s%s", g.Goal, g.Value, metText(g.Met), note)
	}
	return fmt.Sprintf("%s: %s%s", g.Goal, metText(g.Met), note)
}

func metText(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// rate formats msgs/s compactly.
func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// lat formats µs, or "-" when not measured.
func lat(us float64) string {
	switch {
	case us <= 0 || math.IsNaN(us):
		return "-"
	case us >= 10000:
		return fmt.Sprintf("%.1fms", us/1000)
	}
	return fmt.Sprintf("%.0fµs", us)
}
