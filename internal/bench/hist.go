package bench

import (
	"math/bits"
	"time"
)

// histogram is a log-bucketed latency histogram in the manner of HDR
// histograms: values below subBuckets nanoseconds are exact, larger ones
// fall in one of subBuckets buckets per power of two, so a quantile is off
// by at most 1/subBuckets (about 3%). Recording is a few instructions and
// never allocates. A histogram is not safe for concurrent use: each worker
// records into its own and the results are merged.
type histogram struct {
	counts [64 * subBuckets]uint64
	total  uint64
}

// subBucketBits sets the precision: 2^5 = 32 buckets per power of two.
const (
	subBucketBits = 5
	subBuckets    = 1 << subBucketBits
)

// bucketOf returns the bucket of v nanoseconds.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - subBucketBits - 1 // v>>shift is in [32, 64)
	return (shift+1)*subBuckets + int(uint64(v)>>shift) - subBuckets
}

// bucketValue returns the middle of bucket i, in nanoseconds.
func bucketValue(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	shift := i/subBuckets - 1
	m := int64(i%subBuckets + subBuckets)
	return m<<shift + (int64(1)<<shift)/2
}

// record adds one value.
func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.total++
}

// merge adds o's values to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
}

// quantile returns the value at q in [0,1]; 0 when h is empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(bucketValue(i))
		}
	}
	return time.Duration(bucketValue(len(h.counts) - 1))
}
