package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func timeDuration(v int64) time.Duration { return time.Duration(v) }

// TestHistogramBuckets checks that every value lands in a bucket whose
// middle is within the promised precision, and that buckets are ordered.
func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 31, 32, 33, 63, 64, 65, 100, 1000, 12345, 1 << 20, 1<<40 + 12345, math.MaxInt64} {
		i := bucketOf(v)
		if i < prev {
			t.Errorf("bucketOf(%d) = %d, below bucketOf of a smaller value (%d)", v, i, prev)
		}
		prev = i
		mid := bucketValue(i)
		if err := math.Abs(float64(mid)-float64(v)) / math.Max(float64(v), 1); err > 1.0/subBuckets {
			t.Errorf("value %d: bucket %d middle %d, relative error %.3f > %.3f", v, i, mid, err, 1.0/subBuckets)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	if got := h.quantile(0.5); got != 0 {
		t.Errorf("empty: got %v, want 0", got)
	}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := math.Abs(float64(got-c.want)) / float64(c.want); d > 1.0/subBuckets {
			t.Errorf("q%.2f: got %v, want %v ± %.1f%%", c.q, got, c.want, 100.0/subBuckets)
		}
	}
	var o histogram
	o.record(time.Second)
	h.merge(&o)
	if h.total != 1001 || h.quantile(1) < 900*time.Millisecond {
		t.Errorf("merge: total %d, max %v", h.total, h.quantile(1))
	}
}

func TestSpread(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{2}, Spread{2, 2, 2}},
		{[]float64{3, 1, 2}, Spread{2, 1, 3}},
		{[]float64{4, 1, 2, 3}, Spread{2.5, 1, 4}},
	} {
		if got := spread(c.in); got != c.want {
			t.Errorf("spread(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestParseNodes(t *testing.T) {
	got, err := parseNodes("127.0.0.1:4150, 10.0.0.1:5000/10.0.0.1:6000")
	if err != nil {
		t.Fatal(err)
	}
	want := []NodeAddr{{"127.0.0.1:4150", "127.0.0.1:4151"}, {"10.0.0.1:5000", "10.0.0.1:6000"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseNodes("nope"); err == nil {
		t.Error("want an error for an address without a port")
	}
}

// TestSummarizeSkipsFailedRounds: a round in which a side failed does not
// enter the medians, and the goal cell says so.
func TestSummarizeSkipsFailedRounds(t *testing.T) {
	side := func(rate float64) SideResult { return SideResult{MsgsPerSec: rate, P50us: 10} }
	wr := WorkloadResult{Rounds: []RoundResult{
		{Round: 1, A: side(100), B: side(50), Ratio: 0.5},
		{Round: 2, A: side(100), B: SideResult{Errors: 3, Error: "boom"}, Ratio: 0},
		{Round: 3, A: side(100), B: side(70), Ratio: 0.7},
	}}
	wr.summarize(goal{minRatio: 0.8})
	if wr.CleanRounds != 2 || wr.Ratio != (Spread{0.6, 0.5, 0.7}) || wr.B.MsgsPerSec != 60 {
		t.Errorf("got clean %d, ratio %+v, B %v; want 2, {0.6 0.5 0.7}, 60", wr.CleanRounds, wr.Ratio, wr.B.MsgsPerSec)
	}
	if cell := goalCell(wr); !strings.Contains(cell, "2 of 3 rounds") {
		t.Errorf("goal cell %q does not say that a round failed", cell)
	}
	wr.Rounds = wr.Rounds[1:2]
	wr.summarize(goal{minRatio: 0.8})
	if wr.Goal == nil || wr.Goal.Met {
		t.Errorf("no clean round: goal %+v, want not met", wr.Goal)
	}
}
