package bench

import (
	"math"
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
