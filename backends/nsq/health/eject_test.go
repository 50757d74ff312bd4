package health

import (
	"testing"
	"time"
)

func TestEjector(t *testing.T) {
	cfg := EjectConfig{Consecutive: 3, BaseEjection: 10 * time.Second, MaxEjection: 25 * time.Second, Decay: time.Minute}
	e := Ejector{Config: cfg}
	t0 := time.Unix(1000, 0)
	if e.Failure(t0) || e.Failure(t0) {
		t.Fatal("ejection called for before Consecutive failures")
	}
	e.Success()
	if e.Failure(t0) || e.Failure(t0) || !e.Failure(t0) {
		t.Fatal("3 consecutive failures after a success did not call for an ejection")
	}
	steps := []struct {
		at   time.Duration // since t0, of the ejection
		want time.Duration // its length
	}{
		{0, 10 * time.Second},
		{11 * time.Second, 20 * time.Second}, // re-ejected right after re-admission
		{32 * time.Second, 25 * time.Second}, // capped
		{58 * time.Second, 25 * time.Second}, // count 4, still capped
		// Clean from 83s: two decays (2m) take the count from 4 to 2.
		{83*time.Second + 2*time.Minute + time.Second, 25 * time.Second},
	}
	for i, s := range steps {
		now := t0.Add(s.at)
		if i > 0 && !e.Probation(now) {
			t.Errorf("step %d: not on probation at %v", i, s.at)
		}
		if got := e.Eject(now).Sub(now); got != s.want {
			t.Errorf("step %d: ejection of %v, want %v (count %d)", i, got, s.want, e.Count(now))
		}
		if !e.Ejected(now.Add(s.want-time.Millisecond)) || e.Ejected(now.Add(s.want)) {
			t.Errorf("step %d: ejected state wrong around the end", i)
		}
		if e.Failure(now) {
			t.Errorf("step %d: a failure while ejected called for an ejection", i)
		}
	}
	// After the last ejection (count 3) and 3 clean minutes: count 0, not
	// on probation, Consecutive failures needed again.
	later := t0.Add(83*time.Second + 2*time.Minute + time.Second + 25*time.Second + 3*time.Minute)
	if e.Count(later) != 0 || e.Probation(later) {
		t.Errorf("count %d, probation %v after 3 clean minutes; want 0, false", e.Count(later), e.Probation(later))
	}
	if e.Failure(later) {
		t.Error("one failure after the count decayed called for an ejection")
	}
}

func TestEjectConfig(t *testing.T) {
	c := EjectConfig{}.WithDefaults()
	for _, tc := range []struct{ pct, nodes, want int }{
		{50, 1, 1}, {50, 2, 1}, {50, 3, 1}, {50, 4, 2}, {10, 3, 1}, {100, 3, 3},
	} {
		c.MaxEjectionPercent = tc.pct
		if got := c.MaxEjected(tc.nodes); got != tc.want {
			t.Errorf("%d%% of %d nodes: %d, want %d", tc.pct, tc.nodes, got, tc.want)
		}
	}
	for _, bad := range []EjectConfig{
		{Consecutive: -1}, {BaseEjection: -time.Second}, {BaseEjection: time.Minute, MaxEjection: time.Second},
		{MaxEjectionPercent: 101}, {Decay: -1},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v: valid, want an error", bad)
		}
	}
}
