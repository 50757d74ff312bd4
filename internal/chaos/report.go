package chaos

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Metric is one measured figure of a scenario run. Value is NaN when the
// figure does not apply or was not measured; Text, if set, is printed
// instead of the value.
type Metric struct {
	Name  string
	Value float64
	Unit  string // "", "ms", "s"
	Text  string
}

// Promise is what a scenario guarantees: Metric stays at or below Max and
// at or above Min (metrics are never negative, so the zero Min bounds
// nothing). A missing or NaN metric breaks the promise (nothing measured
// proves nothing).
type Promise struct {
	Metric string
	Max    float64
	// Min > 0 makes a floor: "acked ≥ 1" stops a run that sent nothing
	// from keeping every other promise vacuously. Use Max = +Inf for a
	// floor alone.
	Min float64
	// Why names the guarantee, for the table.
	Why string
}

// broken reports whether v breaks p.
func (p Promise) broken(v float64) bool { return math.IsNaN(v) || v > p.Max || v < p.Min }

// bound prints the promised range: "≤ 0", "≥ 1" or "1 … 5".
func (p Promise) bound() string {
	switch {
	case p.Min > 0 && math.IsInf(p.Max, 1):
		return "≥ " + fmtNum(p.Min)
	case p.Min > 0:
		return fmtNum(p.Min) + " … " + fmtNum(p.Max)
	}
	return "≤ " + fmtNum(p.Max)
}

// Baseline promises hold in every scenario: a run that acknowledged or
// delivered nothing proves nothing, and the two sides of the ledger must
// agree (every acked message is either delivered or lost).
var baseline = []Promise{
	{Metric: "acked", Min: 1, Max: math.Inf(1), Why: "the run acknowledged sends (no promise holds vacuously)"},
	{Metric: "delivered", Min: 1, Max: math.Inf(1), Why: "the run delivered messages (no promise holds vacuously)"},
	{Metric: "ledger imbalance", Max: never, Why: "acked messages delivered = acked − lost, counted from each side of the ledger"},
}

// Report is the outcome of one scenario run.
type Report struct {
	Scenario string // "S1"
	Title    string
	Setup    string // mode, replicas, nsqd settings, rates
	Metrics  []Metric
	Promises []Promise
	// Notes are printed under the table (what the numbers mean, caveats).
	Notes []string
	// Broken lists the promises the run broke (set by Evaluate).
	Broken []string
	// Err is a harness failure: the run could not be carried out.
	Err error
	// Skipped says why the scenario could not prove its promise (a
	// feature it needs is missing); the figures are then partial.
	Skipped string
}

// Metric returns the named metric's value (NaN if absent).
func (r *Report) Metric(name string) float64 {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value
		}
	}
	return math.NaN()
}

// Add appends a metric.
func (r *Report) Add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit})
}

// AddText appends a metric with a printed form.
func (r *Report) AddText(name string, v float64, unit, text string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit, Text: text})
}

// AddDuration appends a duration metric in milliseconds; ok false records
// it as not measured.
func (r *Report) AddDuration(name string, d time.Duration, ok bool) {
	v := math.NaN()
	if ok {
		v = float64(d) / float64(time.Millisecond)
	}
	r.Add(name, v, "ms")
}

// Evaluate checks every promise and sets Broken.
func (r *Report) Evaluate() {
	r.Broken = nil
	for _, p := range r.Promises {
		v := r.Metric(p.Metric)
		if p.broken(v) {
			r.Broken = append(r.Broken, fmt.Sprintf("%s = %s, promised %s (%s)", p.Metric, fmtNum(v), p.bound(), p.Why))
		}
	}
}

// OK reports whether the run completed and kept every promise.
func (r *Report) OK() bool { return r.Err == nil && r.Skipped == "" && len(r.Broken) == 0 }

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== %s: %s\n", r.Scenario, r.Title)
	if r.Setup != "" {
		fmt.Fprintf(w, "   %s\n", r.Setup)
	}
	promised := make(map[string]Promise)
	for _, p := range r.Promises {
		promised[p.Metric] = p
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   metric\tvalue\tpromise\t")
	for _, m := range r.Metrics {
		val := m.Text
		if val == "" {
			val = fmtNum(m.Value)
			if m.Unit != "" && !math.IsNaN(m.Value) {
				val += " " + m.Unit
			}
		}
		prom := ""
		if p, ok := promised[m.Name]; ok {
			verdict := "ok"
			if p.broken(m.Value) {
				verdict = "BROKEN"
			}
			prom = fmt.Sprintf("%s  %s", p.bound(), verdict)
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t\n", m.Name, val, prom)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(w, "   note: %s\n", n)
	}
	switch {
	case r.Skipped != "":
		fmt.Fprintf(w, "   RESULT: SKIPPED: %s\n", r.Skipped)
	case r.Err != nil:
		fmt.Fprintf(w, "   RESULT: ERROR: %v\n", r.Err)
	case len(r.Broken) > 0:
		fmt.Fprintf(w, "   RESULT: BROKEN: %s\n", strings.Join(r.Broken, "; "))
	default:
		fmt.Fprintf(w, "   RESULT: ok\n")
	}
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%d", int64(v))
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

// addResult appends the ledger's figures to r; faultAt (if not zero) is
// the time the error window is measured from.
func (r *Report) addResult(res Result, faultAt time.Time) {
	r.Add("sent", float64(res.Attempted), "")
	r.Add("acked", float64(res.Acked), "")
	r.Add("failed", float64(res.Failed), "")
	r.Add("unknown", float64(res.Unknown), "")
	r.Add("delivered", float64(res.Delivered), "")
	r.Add("ledger imbalance", float64(res.Imbalance()), "")
	lost := Metric{Name: "lost", Value: float64(res.LostCount())}
	if res.LostCount() > 0 {
		lost.Text = fmt.Sprintf("%d %s", res.LostCount(), listed(res.Lost))
	}
	r.Metrics = append(r.Metrics, lost)
	unexp := Metric{Name: "unexpected", Value: float64(res.UnexpectedCount())}
	if res.UnexpectedCount() > 0 {
		unexp.Text = fmt.Sprintf("%d %s", res.UnexpectedCount(), listed(res.Unexpected))
	}
	r.Metrics = append(r.Metrics, unexp)
	r.Add("id mismatches", float64(res.Mismatched), "")
	r.Add("duplicated", float64(res.Duplicated), "")
	r.Add("duplicate deliveries", float64(res.DuplicateDeliveries), "")
	dupPct := math.NaN()
	if res.AckedDeliveries > 0 {
		dupPct = 100 * float64(res.DuplicateDeliveries) / float64(res.AckedDeliveries)
	}
	r.AddText("duplicates %", dupPct, "%", fmt.Sprintf("%.3f%% (%d of %d acked deliveries)", dupPct, res.DuplicateDeliveries, res.AckedDeliveries))
	r.Add("redeliveries", float64(res.Redeliveries), "")
	r.Add("recovered", float64(res.Recovered), "")
	r.Add("failed but delivered", float64(res.FailedDelivered), "")
	var codes []string
	for c, n := range res.SendErrors {
		codes = append(codes, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(codes)
	errText := "0"
	if res.ErrorAttempts > 0 {
		errText = fmt.Sprintf("%d (%s)", res.ErrorAttempts, strings.Join(codes, ", "))
	}
	r.AddText("send errors", float64(res.ErrorAttempts), "", errText)
	if res.ErrorAttempts > 0 {
		w := res.LastError.Sub(res.FirstError)
		text := fmt.Sprintf("%v", w.Round(time.Millisecond))
		if !faultAt.IsZero() {
			text += fmt.Sprintf(" (fault%+.2fs … fault%+.2fs)", res.FirstError.Sub(faultAt).Seconds(), res.LastError.Sub(faultAt).Seconds())
		}
		r.AddText("error window", float64(w)/float64(time.Millisecond), "ms", text)
	} else {
		r.AddText("error window", 0, "ms", "none")
	}
	r.AddDuration("send p50", res.P50, res.Acked > 0)
	r.AddDuration("send p99", res.P99, res.Acked > 0)
}
