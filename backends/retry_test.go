package backends_test

import (
	"testing"
	"time"

	"github.com/qgate/qgate/backends"
)

func TestRetryPolicyBackoff(t *testing.T) {
	p := backends.RetryPolicy{Min: time.Second, Max: 10 * time.Second}
	tests := []struct {
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{1, 0.5, time.Second},
		{2, 0.5, 2 * time.Second},
		{3, 0.5, 4 * time.Second},
		{4, 0.5, 8 * time.Second},
		{5, 0.5, 10 * time.Second}, // 16 s capped
		{60, 0.5, 10 * time.Second},
		{0, 0.5, time.Second}, // no attempt known: the minimum
		{3, 0, 3200 * time.Millisecond},
		{3, 0.75, 4400 * time.Millisecond},
		{1, 0, time.Second},         // 0.8 s, kept at Min
		{5, 0.75, 10 * time.Second}, // 11 s, kept at Max
		{4, 0.75, 8800 * time.Millisecond},
	}
	for _, tc := range tests {
		got := p.Backoff(tc.attempt, tc.jitter)
		if d := got - tc.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("Backoff(%d, %v) = %v, want %v", tc.attempt, tc.jitter, got, tc.want)
		}
	}
}
