package health

import (
	"testing"

	"github.com/qgate/qgate/backends"
)

func TestMachine(t *testing.T) {
	const (
		U = backends.NodeUnknown
		P = backends.NodeUp
		D = backends.NodeDown
	)
	// steps: 'p' pass, 'f' fail, 'e' eject; want: state after each step.
	tests := []struct {
		name       string
		fall, rise int
		steps      string
		want       []backends.NodeState
	}{
		{"first pass sets up", 2, 2, "p", []backends.NodeState{P}},
		{"first fail sets down", 3, 3, "f", []backends.NodeState{D}},
		{"up falls after fall fails", 2, 2, "pff", []backends.NodeState{P, P, D}},
		{"a pass resets the fall count", 2, 2, "pfpfp", []backends.NodeState{P, P, P, P, P}},
		{"down rises after rise passes", 2, 3, "fppp", []backends.NodeState{D, D, D, P}},
		{"a fail resets the rise count", 2, 2, "fpfpp", []backends.NodeState{D, D, D, D, P}},
		{"fall 1 rise 1", 1, 1, "pfpf", []backends.NodeState{P, D, P, D}},
		{"zero thresholds count as 1", 0, 0, "pfp", []backends.NodeState{P, D, P}},
		{"eject takes up down at once", 3, 2, "pe", []backends.NodeState{P, D}},
		{"eject from unknown", 2, 2, "e", []backends.NodeState{D}},
		{"eject then rise passes", 2, 2, "pepp", []backends.NodeState{P, D, D, P}},
		{"eject resets the rise count", 2, 2, "fpepp", []backends.NodeState{D, D, D, D, P}},
		{"down stays down on fails", 2, 2, "ffff", []backends.NodeState{D, D, D, D}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Machine{Fall: tt.fall, Rise: tt.rise}
			if m.State() != U {
				t.Fatalf("initial state %v, want unknown", m.State())
			}
			for i, step := range tt.steps {
				prev := m.State()
				var old, now backends.NodeState
				switch step {
				case 'p':
					old, now = m.Observe(true)
				case 'f':
					old, now = m.Observe(false)
				case 'e':
					old, now = m.Eject()
				}
				if old != prev || now != m.State() {
					t.Fatalf("step %d: returned (%v, %v), machine went %v -> %v", i, old, now, prev, m.State())
				}
				if now != tt.want[i] {
					t.Errorf("step %d (%c of %q): state %v, want %v", i, step, tt.steps, now, tt.want[i])
				}
				passes, fails := m.Counts()
				if passes != 0 && fails != 0 {
					t.Errorf("step %d: counts (%d, %d): both non-zero", i, passes, fails)
				}
			}
		})
	}
}

func TestConfig(t *testing.T) {
	d := Config{}.WithDefaults()
	want := Config{Interval: DefaultInterval, Timeout: DefaultTimeout, Jitter: DefaultJitter, Fall: DefaultFall, Rise: DefaultRise}
	if d != want {
		t.Errorf("defaults %+v, want %+v", d, want)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	if err := (Config{Jitter: -1}).Validate(); err != nil {
		t.Errorf("negative jitter (none): %v", err)
	}
	bad := []Config{
		{Interval: -1},
		{Timeout: -1},
		{Jitter: 1.5},
		{Fall: -1},
		{Rise: -2},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
