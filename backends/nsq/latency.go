package nsq

import (
	"slices"
	"sync"
	"time"
)

// Adaptive attempt timeout (Config.AttemptTimeout, AttemptTimeoutMin).
const (
	// attemptP99Multiple: an attempt times out after this many times the
	// p99 of the node's recent answer times (within bounds). Ten keeps a
	// node that is merely slower than usual (a GC pause, an fsync) well
	// clear of it, and a node that stopped answering costs little.
	attemptP99Multiple = 10
	// latencySamples is how many recent answer times a node keeps.
	latencySamples = 256
	// latencyMinSamples: below this many answers the fixed maximum applies.
	latencyMinSamples = 32
	// latencyRecompute: the p99 is recomputed every this many samples.
	latencyRecompute = 32
)

// latencyWindow keeps the recent answer times of one node's sends and
// their p99. Safe for concurrent use; add is cheap (the sort runs once
// every latencyRecompute samples, on latencySamples values).
type latencyWindow struct {
	mu      sync.Mutex
	samples [latencySamples]time.Duration
	n       int // samples recorded, up to latencySamples
	next    int // ring position of the next sample
	since   int // samples since the last recompute
	p99     time.Duration
	scratch []time.Duration
}

// add records one answer time.
func (l *latencyWindow) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples[l.next] = d
	l.next = (l.next + 1) % latencySamples
	l.n = min(l.n+1, latencySamples)
	l.since++
	if l.n >= latencyMinSamples && (l.p99 == 0 || l.since >= latencyRecompute) {
		l.since = 0
		l.scratch = append(l.scratch[:0], l.samples[:l.n]...)
		slices.Sort(l.scratch)
		l.p99 = l.scratch[(len(l.scratch)*99)/100]
	}
}

// timeout returns attemptP99Multiple×p99 within [lo, hi]; hi while too few
// answers are known.
func (l *latencyWindow) timeout(lo, hi time.Duration) time.Duration {
	l.mu.Lock()
	p99 := l.p99
	l.mu.Unlock()
	if p99 == 0 {
		return hi
	}
	return min(max(attemptP99Multiple*p99, lo), hi)
}
