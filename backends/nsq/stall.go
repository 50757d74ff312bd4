package nsq

import (
	"errors"
	"sync"
	"time"
)

// Stalls of the gateway itself. When qgate's own process gets no CPU for a
// while (a starved host, a long GC pause), every attempt that was waiting
// times out at once, on every node: that says nothing about the nodes, and
// counting it as their data-path failures would eject a healthy node and,
// with the ejection cap taken, keep a failing one in. The pool notices its
// own stalls as lateness of a short ticker, and a timed-out attempt during
// which the process stalled for half its budget or more is not counted
// against its node (it is still retried elsewhere).
const (
	// stallTick is the period of the stall ticker.
	stallTick = 20 * time.Millisecond
	// stallMin is the least lateness recorded as a stall.
	stallMin = 20 * time.Millisecond
	// stallsKept is how many recent stalls are remembered.
	stallsKept = 32
)

// stall is one late tick: the process did not run from end-lag to end.
type stall struct {
	end time.Time
	lag time.Duration
}

// stalls remembers the pool's recent stalls. Safe for concurrent use.
type stalls struct {
	mu   sync.Mutex
	ring [stallsKept]stall
	next int
}

func (s *stalls) add(st stall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring[s.next] = st
	s.next = (s.next + 1) % stallsKept
}

// longestSince returns the longest stall that ended after t.
func (s *stalls) longestSince(t time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var longest time.Duration
	for _, st := range s.ring {
		if st.end.After(t) {
			longest = max(longest, st.lag)
		}
	}
	return longest
}

// watchStalls runs the stall ticker until the pool closes.
func (p *Pool) watchStalls() {
	defer p.wg.Done()
	t := time.NewTicker(stallTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			now := time.Now()
			if lag := now.Sub(last) - stallTick; lag >= stallMin {
				p.stalls.add(stall{end: now, lag: lag})
			}
			last = now
		}
	}
}

// attemptTimeoutError is errAttemptTimeout with the attempt's start and
// budget, so that a stall of the gateway during it can be told apart.
type attemptTimeoutError struct {
	begin  time.Time
	budget time.Duration
}

func (e *attemptTimeoutError) Error() string { return errAttemptTimeout.Error() }

func (e *attemptTimeoutError) Is(target error) bool { return target == errAttemptTimeout }

// stalledDuring reports whether err is an attempt timeout during which the
// gateway itself stalled for half the attempt's budget or more.
func (p *Pool) stalledDuring(err error) (time.Duration, bool) {
	var te *attemptTimeoutError
	if !errors.As(err, &te) {
		return 0, false
	}
	lag := p.stalls.longestSince(te.begin)
	return lag, lag >= te.budget/2
}
